"""The analytic head's bundle files: its weights, the seed and hash of its projection, the
tower it reads (a file the bundle already holds where it can be) and its sums."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stpr.runtime.contract import CLIP_IMAGE_FILE, HEAD_TOWER_FILE, HEAD_WEIGHTS_FILE, fp16_twin
from stpr.runtime.model.analytic import PROJECTION_GENERATOR, projection_sha256
from stpr.runtime.model.head_sums import HeadSums, save_sums, sums_section
from stpr.train.restore import Restored

from .fp16 import PLAIN_TOWERS_FP16_KEEP_FP32, to_fp16
from .head_only import check_stored_sums
from .onnx_export import export_backbone, finish_onnx
from .result import ExportResult, timed_step


def write_head(r: Restored, tmp: Path, manifest: dict[str, Any], meta: dict[str, Any], opset: int, fp16: bool,
               res: ExportResult, sums: str | None = "float64") -> dict[str, Any]:
    """The analytic head: its weights, the seed and hash of its projection, its tower and
    (unless `sums` is None) its sums, which `stpr-learn` needs (docs/bundle.md, `head`). The
    tower is a file the bundle already holds where it can be: the frozen image tower
    (`clip_backbone.onnx`) or, for the head alone on the adapted tower, StPR's own backbone
    (the adapters stop changing after the base task)."""
    learner, cfg = r.learner, r.cfg.head
    head = learner.head
    with timed_step(res, "head"):
        np.save(tmp / HEAD_WEIGHTS_FILE, head.weights.numpy().astype(np.float32), allow_pickle=False)
        fp16_name = None
        if cfg.tower == "frozen":
            tower = CLIP_IMAGE_FILE
            if not (tmp / tower).exists():  # exported with --no-text
                finish_onnx(export_backbone(learner.model.backbone, tmp / tower, r.preprocess.size, opset,
                                            adapters=False), meta)
            if fp16:
                fp16_name = manifest.get("text", {}).get("image_tower_fp16") or to_fp16(
                    tmp / tower, tmp / fp16_twin(tower), keep_fp32=PLAIN_TOWERS_FP16_KEEP_FP32).name
        elif cfg.mode == "alone" and "backbone" in manifest:
            tower, fp16_name = manifest["backbone"], manifest.get("backbone_fp16")
        else:  # beside StPR, or alone in a bundle without StPR's backbone: a tower file of its own
            tower = HEAD_TOWER_FILE
            # the head alone reads the adapters as they are (they stop changing after the base task)
            adapters = True if cfg.mode == "alone" else learner.head_adapters
            finish_onnx(export_backbone(learner.model.backbone, tmp / tower, r.preprocess.size, opset,
                                        adapters=adapters), meta)
            if fp16:
                fp16_name = to_fp16(tmp / tower, tmp / fp16_twin(tower)).name
    proj = head.projection.numpy()
    section = {
        "mode": cfg.mode, "tower": cfg.tower, "tower_file": tower, "frame_order": "oldest-first", "frame_norm": "l2",
        "projection": {"generator": PROJECTION_GENERATOR, "seed": head.seed, "in_dim": head.in_dim,
                       "out_dim": head.dim, "sha256": projection_sha256(proj)},
        "weights": HEAD_WEIGHTS_FILE, "lambda": float(head.lam), "balance": head.balance, "crops": cfg.crops,
        "views": cfg.views,
        "tau": float(cfg.tau), "fuse_weight": float(cfg.fuse_weight),
    }
    if fp16_name:
        section["tower_fp16"] = fp16_name
    if sums is not None:
        with timed_step(res, "head sums"):
            held = HeadSums(gram=head.gram.numpy(), cross=head.cross.numpy(), counts=head.counts.numpy(),
                            n_ref=float(head.n_ref), lam=float(head.lam), balance=head.balance, dtype=sums)
            check_stored_sums(held)
            save_sums(tmp, held)
            section["sums"] = sums_section(held, manifest["classes"])[0]
    return {"head": section}
