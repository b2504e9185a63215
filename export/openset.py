"""The export's open-set report for PyTorch runs: StPR's scores, and the head's.

The clips and the calibration itself are torch-free (export/calibrate.py); here the
bundle's fp32 ONNX files and the runtime's NumPy router score them, so the device
computes the same scores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stpr.runtime.contract import TOWER_INPUT, TOWER_OUTPUT
from stpr.runtime.model.analytic import expand
from stpr.runtime.model.backends import OrtRunner
from stpr.runtime.model.experts import ExpertsRunner, expert_files
from stpr.runtime.model.openset import (
    COMBINED,
    FALLBACK_SCORE,
    SCORES,
    UNKNOWN_SCORE,
    standardisation,
    unknown_score,
)
from stpr.train.restore import Restored

from .calibrate import CalibrationClips, calibrate_and_measure, calibration_clips, head_report
from .parity import head_arrays, load_calibration, route_and_classify

_CHUNK = 32  # clips per onnxruntime call: bounds memory on large towers


def run_clips(r: Restored) -> CalibrationClips | None:
    """The run's calibration clips (None: its data cannot be read here)."""
    return calibration_clips(r.cfg.data, r.preprocess, r.cfg.seed, r.checkpoint["classes"])


def _chunks(clips: np.ndarray) -> list[np.ndarray]:
    return np.array_split(clips, max(1, -(-len(clips) // _CHUNK)))


def bundle_outputs(bundle: Path, manifest: dict[str, Any], clips: np.ndarray) -> dict[str, np.ndarray]:
    """The fp32 bundle's logits and route scores on `clips (B, T, 3, H, W)`, as stpr-run computes them."""
    files, fused = expert_files(manifest, "fp32", True)
    calibration = load_calibration(bundle, manifest)
    parts: list[dict[str, np.ndarray]] = []
    with OrtRunner(bundle / manifest["backbone"]) as backbone, \
            ExpertsRunner([OrtRunner(bundle / f) for f in files], fused) as experts:
        for chunk in _chunks(clips):
            B, T = chunk.shape[:2]
            flat = chunk.reshape(B * T, *chunk.shape[2:])
            feats = backbone.infer({TOWER_INPUT: flat})[TOWER_OUTPUT].reshape(B, T, -1)
            parts.append(route_and_classify(bundle, manifest, feats, experts.infer(feats), calibration))
    out = {"logits": np.concatenate([p["logits"] for p in parts])}
    out["route_scores"] = None if parts[0]["route_scores"] is None else np.concatenate(
        [p["route_scores"] for p in parts])
    return out


def _scores(out: dict[str, np.ndarray], logit_scale: float,
            standardise: dict[str, list[float]] | None) -> dict[str, np.ndarray]:
    """Every candidate score this bundle can compute (route and the combination need a
    router that scores experts)."""
    names = [n for n in SCORES if n != "route" or out["route_scores"] is not None]
    if standardise is not None:
        names.append(COMBINED)
    return {n: unknown_score(n, out, logit_scale, standardise) for n in names}


def openset_report(r: Restored, bundle: Path, manifest: dict[str, Any],
                   clips: CalibrationClips | None = None) -> dict[str, Any] | None:
    """Calibrate StPR's threshold and measure every candidate score; None when the run's
    data cannot be read here (the bundle then has no calibrated threshold). A bundle with
    the analytic head is scored by the head (`head_openset_report`)."""
    clips = clips or run_clips(r)
    if clips is None:
        return None
    scale = float(manifest["logit_scale"])
    return calibrate_and_measure(
        clips, lambda c: bundle_outputs(bundle, manifest, c),
        lambda out: None if out["route_scores"] is None else standardisation(out, scale),
        lambda out, stats: _scores(out, scale, stats),
        lambda stats: UNKNOWN_SCORE if stats is not None else FALLBACK_SCORE)


def head_bundle_outputs(bundle: Path, manifest: dict[str, Any], clips: np.ndarray) -> dict[str, np.ndarray]:
    """The fp32 bundle's head on `clips`: ridge scores `(B, C)` and features `h (B, M)`."""
    proj, weights = head_arrays(bundle, manifest)
    feats, scores = [], []
    with OrtRunner(bundle / manifest["head"]["tower_file"]) as tower:
        for chunk in _chunks(clips):
            B, T = chunk.shape[:2]
            window = tower.infer({TOWER_INPUT: chunk.reshape(B * T, *chunk.shape[2:])})[TOWER_OUTPUT].reshape(B, T, -1)
            feats.append(expand(window, proj))
            scores.append(feats[-1] @ weights)
    return {"h": np.concatenate(feats), "scores": np.concatenate(scores)}


def head_openset_report(r: Restored, bundle: Path, manifest: dict[str, Any],
                        subspace: np.ndarray, tail_inverse: float) -> dict[str, Any] | None:
    """As `openset_report`, with the head's scores; beside them, where StPR is trained too,
    StPR's own candidates on the same clips for comparison."""
    clips = run_clips(r)
    if clips is None:
        return None
    report = head_report(clips, lambda c: head_bundle_outputs(bundle, manifest, c), subspace, tail_inverse)
    if manifest["head"]["mode"] != "alone":
        report["stpr_candidates"] = openset_report(r, bundle, manifest, clips)["candidates"]
    return report
