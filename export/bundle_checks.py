"""The checks an assembled bundle passes before it is renamed into place: parity of every
variant against PyTorch (a failure writes nothing), then the open-set calibration of its
`unknown` threshold on the run's held-out clips."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from stpr.runtime.atomic import atomic_write_json
from stpr.runtime.contract import HEAD_SUBSPACE_FILE, OPENSET_FILE
from stpr.runtime.model.openset import head_subspace
from stpr.train.errors import StprError
from stpr.train.restore import Restored

from . import parity
from .calibrate import unknown_section
from .openset import head_openset_report, openset_report
from .result import ExportResult, timed_step
from .text_export import text_parity, text_problems

log = logging.getLogger(__name__)


def run_parity(r: Restored, tmp: Path, manifest: dict[str, Any], count: int, res: ExportResult) -> dict[str, Any]:
    """PyTorch against every variant in the bundle (fp32, fp16, int8; per expert and fused)."""
    with timed_step(res, "parity"):
        clips, source = parity.parity_clips(r, count)
        ref = parity.torch_outputs(r, clips)
        report: dict[str, Any] = {"clips": int(clips.shape[0]), "source": source,
                                  "thresholds": {"fp32_min_top1_agreement": parity.FP32_MIN_AGREEMENT,
                                                 "fp32_max_feature_abs_diff": parity.FP32_MAX_FEATURE_DIFF,
                                                 "fp16_min_top1_agreement": parity.FP16_MIN_AGREEMENT,
                                                 "int8_min_top1_agreement": parity.INT8_MIN_AGREEMENT}}
        for name, got in parity.onnx_outputs(tmp, manifest, clips.numpy()).items():
            report[name] = parity.compare(ref, got)
        if "head" in manifest:
            report.update(parity.head_parity(r, tmp, manifest, clips))
        problems = parity.check(report)
        if "text" in manifest:
            report["text_tower"] = text_parity(r, tmp, manifest["text"])
            problems += text_problems(report["text_tower"])
        report["passed"] = not problems
    gated = {k: v for k, v in report.items() if isinstance(v, dict) and "top1_agreement" in v}
    log.debug("parity: %s", json.dumps(gated))  # the command prints each variant's line
    if problems:
        raise StprError("export failed its parity check: " + "; ".join(problems) +
                        " (see the numbers above; nothing was written)")
    return report


def write_openset(r: Restored, tmp: Path, manifest: dict[str, Any], res: ExportResult) -> dict[str, Any]:
    """`openset.json` and the manifest's `unknown` field (score, calibrated threshold);
    nothing when the run's held-out clips cannot be read here."""
    extra: dict[str, Any] = {}
    with timed_step(res, "openset"):
        if "head" in manifest:  # the head's own scores (runtime/model/openset.py), from G's subspace
            subspace, tail_inverse = head_subspace(r.learner.head.gram.numpy(), float(r.learner.head.lam))
            report = head_openset_report(r, tmp, manifest, subspace, tail_inverse)
            if report is not None:
                np.save(tmp / HEAD_SUBSPACE_FILE, subspace, allow_pickle=False)
                extra = {"subspace": HEAD_SUBSPACE_FILE, "tail_inverse": tail_inverse}
        else:
            report = openset_report(r, tmp, manifest)
    if report is None:
        return {}
    res.openset = report
    atomic_write_json(tmp / OPENSET_FILE, report)
    return {"unknown": unknown_section(report, extra)}
