"""The torch-free head bundle's open-set calibration: `unknown` as the PyTorch export sets it.

The head's score (runtime/model/openset.py) reads how far a clip's feature `h` lies from
the training rows in G's metric, together with the ridge scores. Its threshold is
calibrated here on the run's held-out clips through the bundle being written, loaded
as `stpr-run` loads it, so the device computes the very scores calibrated on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stpr.runtime.atomic import atomic_write_json
from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.contract import HEAD_SUBSPACE_FILE, OPENSET_FILE
from stpr.runtime.engine.recognizer import Recognizer
from stpr.runtime.model.analytic import expand
from stpr.runtime.model.openset import head_subspace
from stpr.runtime.model.tower import TowerSpec

from .calibrate import calibration_clips, head_report, unknown_section

_CHUNK = 32  # clips per tower call: bounds memory on large towers


def _outputs(rec: Recognizer, clips: np.ndarray) -> dict[str, np.ndarray]:
    """The bundle's head on `clips (B, T, 3, H, W)`: features `h (B, M)` and ridge scores `(B, C)`."""
    h = rec.bundle.head
    feats = []
    for chunk in np.array_split(clips, max(1, -(-len(clips) // _CHUNK))):
        B, T = chunk.shape[:2]
        window = rec.frame_features(chunk.reshape(B * T, *chunk.shape[2:])).reshape(B, T, -1)
        feats.append(expand(rec.window_block(window, "head"), h.projection))
    hs = np.concatenate(feats)
    return {"h": hs, "scores": (hs @ h.weights).astype(np.float32)}


def write_head_openset(bundle: Path, head: Any, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Write the head's subspace and `openset.json` into `bundle` (a sealed head-only bundle
    still in its temp folder); returns (the manifest's `unknown` field, the report), or None
    when the run's held-out clips cannot be read here (the bundle then never says unknown)."""
    from stpr.train.config import Config
    from stpr.train.config_load import apply_overrides, flatten_keys

    cfg = apply_overrides(Config(), flatten_keys(meta["config"]))
    pp = meta["preprocess"]
    spec = TowerSpec(file=Path(meta["tower"]["file"]), size=pp["size"], mean=tuple(pp["mean"]), std=tuple(pp["std"]))
    clips = calibration_clips(cfg.data, spec, cfg.seed, meta["classes"])
    if clips is None:
        return None
    subspace, tail_inverse = head_subspace(head.gram, float(head.lam))
    with Recognizer(load_bundle(bundle)) as rec:
        report = head_report(clips, lambda c: _outputs(rec, c), subspace, tail_inverse)
    np.save(bundle / HEAD_SUBSPACE_FILE, subspace, allow_pickle=False)
    atomic_write_json(bundle / OPENSET_FILE, report)
    return unknown_section(report, {"subspace": HEAD_SUBSPACE_FILE, "tail_inverse": tail_inverse}), report
