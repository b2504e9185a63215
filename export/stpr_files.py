"""StPR's own bundle files: the adapted backbone and one graph per expert (ONNX), the text
embeddings, the routing anchors and (routing td) the router's calibration arrays."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from stpr.runtime.contract import (
    ANCHORS_FILE,
    BACKBONE_FILE,
    TD_CALIBRATION_FILE,
    TEXT_EMBEDDINGS_FILE,
    expert_file,
    pack_td_calibration,
)
from stpr.train.restore import Restored

from .onnx_export import export_backbone, export_expert, finish_onnx
from .result import ExportResult, timed_step


def serves_stpr(r: Restored, stpr_files: bool) -> bool:
    """Whether the bundle ships StPR's adapted backbone and experts: every mode but the head
    alone runs them; for the head alone they are dead weight, shipped only on request."""
    return r.learner.head is None or r.cfg.head.mode != "alone" or stpr_files


def write_onnx(r: Restored, tmp: Path, meta: dict[str, Any], opset: int, res: ExportResult) -> dict[str, Any]:
    m = r.learner.model
    with timed_step(res, BACKBONE_FILE):
        finish_onnx(export_backbone(m.backbone, tmp / BACKBONE_FILE, r.preprocess.size, opset), meta)
    experts = []
    for k, expert in enumerate(m.experts):
        with timed_step(res, expert_file(k)):
            finish_onnx(export_expert(expert, tmp / expert_file(k), m.dim, opset), meta)
        experts.append(expert_file(k))
    return {"backbone": BACKBONE_FILE, "experts": experts}


def write_arrays(r: Restored, tmp: Path, res: ExportResult) -> dict[str, Any]:
    m, mode = r.learner.model, r.cfg.method.routing
    anchors = {"adapter": m.proto_adapter, "td": m.td_anchors}.get(mode, m.td_raw_anchors)
    out: dict[str, Any] = {"text_embeddings": TEXT_EMBEDDINGS_FILE, "anchors": ANCHORS_FILE}

    def save(name: str, a: np.ndarray) -> None:
        np.save(tmp / name, np.asarray(a, dtype=np.float32), allow_pickle=False)

    def numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().float().numpy()

    with timed_step(res, "arrays"):
        save(TEXT_EMBEDDINGS_FILE, numpy(m.text_embeddings))
        save(ANCHORS_FILE, numpy(anchors))
        if mode == "td":  # the calibrated router's per-expert statistics, unpacked by the runtime's contract
            save(TD_CALIBRATION_FILE, pack_td_calibration(numpy(m.td_center), numpy(m.td_var),
                                                          numpy(m.td_score_mean), numpy(m.td_score_std)))
            out["td_calibration"] = TD_CALIBRATION_FILE
    return out
