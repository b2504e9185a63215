"""The export's open-set report: calibrate the `unknown` threshold and measure it.

Held-out (test) clips of the known classes are split in two, alternately: one half
sets the threshold (the score that keeps `TARGET_TPR` of them), the other half is the
known side of the measurement. The unknown side is clips of classes the run never
trained; the synthetic generator renders them (new motion families of the known
shapes, and shapes no task used). Every number goes through the bundle's own fp32
ONNX files and the runtime's NumPy router: the device computes the same scores.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from stpr.runtime.analytic import expand
from stpr.runtime.backends import OrtRunner
from stpr.runtime.contract import TOWER_INPUT, TOWER_OUTPUT
from stpr.runtime.experts import ExpertsRunner, expert_files
from stpr.runtime.openset import (
    COMBINED,
    FALLBACK_SCORE,
    HEAD_COMBINED,
    HEAD_UNKNOWN_SCORE,
    SCORES,
    TARGET_TPR,
    UNKNOWN_SCORE,
    auroc,
    fpr_at,
    head_standardisation,
    head_unknown_scores,
    standardisation,
    threshold_at_tpr,
    unknown_score,
)
from stpr.train.data.registry import build_splits
from stpr.train.restore import Restored

from .parity import head_arrays, load_calibration, route_and_classify

log = logging.getLogger(__name__)

UNKNOWN_CLIPS_PER_CLASS = 4  # clips rendered per never-trained class
_CHUNK = 32  # clips per onnxruntime call: bounds memory on large towers


def known_clips(r: Restored) -> tuple[torch.Tensor, torch.Tensor]:
    """(calibration half, evaluation half) of the test clips of the classes the model knows."""
    test = build_splits(r.cfg.data, r.preprocess, r.cfg.seed).test
    seen = set(r.checkpoint["classes"])
    idx = [i for i, t in enumerate(test.targets) if test.classes[t] in seen]
    if len(idx) < 4:
        raise ValueError(f"only {len(idx)} held-out clips of the known classes: too few to calibrate")
    clips = [test[i][0] for i in idx]
    return torch.stack(clips[0::2]), torch.stack(clips[1::2])


def unknown_clips(r: Restored, per_class: int = UNKNOWN_CLIPS_PER_CLASS) -> dict[str, torch.Tensor] | None:
    """Clips of never-trained synthetic classes, grouped: `new_motion` (a known shape in a
    motion it was never trained in) and `new_shape` (a shape no known class has).
    None for other datasets: they hold no classes the run did not see."""
    if r.cfg.data.dataset != "synthetic":
        return None
    from stpr.train.data.synthetic import MOTIONS, SHAPES, SyntheticActions

    pp, seen = r.preprocess, set(r.checkpoint["classes"])
    every = SyntheticActions("test", num_frames=r.cfg.data.num_frames, image_size=pp.size,
                             clips_per_class=per_class, seed=r.cfg.seed, mean=pp.mean, std=pp.std,
                             shapes=SHAPES, motions=MOTIONS)
    known_shapes = {c.split("_", 1)[0] for c in seen}
    groups: dict[str, list[torch.Tensor]] = {"new_motion": [], "new_shape": []}
    for i, t in enumerate(every.targets):
        name = every.classes[t]
        if name not in seen:
            groups["new_motion" if name.split("_", 1)[0] in known_shapes else "new_shape"].append(every[i][0])
    return {g: torch.stack(c) for g, c in groups.items() if c}


def bundle_outputs(bundle: Path, manifest: dict[str, Any], clips: torch.Tensor) -> dict[str, np.ndarray]:
    """The fp32 bundle's logits and route scores on `clips (B, T, 3, H, W)`, as stpr-run computes them."""
    files, fused = expert_files(manifest, "fp32", True)
    calibration = load_calibration(bundle, manifest)
    parts: list[dict[str, np.ndarray]] = []
    with OrtRunner(bundle / manifest["backbone"]) as backbone, \
            ExpertsRunner([OrtRunner(bundle / f) for f in files], fused) as experts:
        for chunk in np.array_split(clips.numpy(), max(1, -(-len(clips) // _CHUNK))):
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


def openset_report(r: Restored, bundle: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Calibrate the threshold and measure every candidate score; None when the run's
    data cannot be read here (the bundle then has no calibrated threshold). A bundle with
    the analytic head is scored by the head (`head_openset_report`)."""
    scale = float(manifest["logit_scale"])

    def scores_of(out: dict[str, np.ndarray], stats: dict | None) -> dict[str, np.ndarray]:
        return _scores(out, scale, stats)

    def stats_of(out: dict[str, np.ndarray]) -> dict | None:
        return None if out["route_scores"] is None else standardisation(out, scale)

    return _calibrate_and_measure(r, lambda clips: bundle_outputs(bundle, manifest, clips), stats_of, scores_of,
                                  lambda stats: UNKNOWN_SCORE if stats is not None else FALLBACK_SCORE)


def _calibrate_and_measure(r: Restored, outputs: Callable[[torch.Tensor], dict], stats_of: Callable,
                           scores_of: Callable, choose: Callable) -> dict[str, Any] | None:
    """The threshold of the chosen score on the calibration half of the known classes' held-out
    clips, and every candidate's TPR on the other half, AUROC and FPR on never-trained classes."""
    try:
        calib, known = known_clips(r)
    except Exception as e:  # no data on this machine: the bundle is still valid, without `unknown`
        log.warning("no open-set calibration (the run's held-out clips could not be read: %s)", e)
        return None
    cal_out = outputs(calib)
    stats = stats_of(cal_out)
    chosen = choose(stats)
    cal_scores = scores_of(cal_out, stats)
    known_scores = scores_of(outputs(known), stats)
    thresholds = {n: threshold_at_tpr(s) for n, s in cal_scores.items()}
    report: dict[str, Any] = {
        "score": chosen, "target_tpr": TARGET_TPR, "threshold": thresholds[chosen],
        **({"standardise": stats} if stats is not None and chosen in (COMBINED, HEAD_COMBINED) else {}),
        "calibration_clips": int(len(calib)), "known_eval_clips": int(len(known)),
        "calibration": "alternate held-out (test) clips of the known classes; the others are the known side below",
        "candidates": {n: {"threshold": t, "known_tpr": float((known_scores[n] >= t).mean())}
                       for n, t in thresholds.items()},
    }
    groups = unknown_clips(r)
    if not groups:
        report["unknown_eval"] = "none: only the synthetic dataset renders classes the run never trained"
        return report
    all_unknown: dict[str, list[np.ndarray]] = {n: [] for n in cal_scores}
    for group, clips in groups.items():
        scores = scores_of(outputs(clips), stats)
        report.setdefault("unknown_clips", {})[group] = int(len(clips))
        for n, s in scores.items():
            all_unknown[n].append(s)
            report["candidates"][n][f"auroc_{group}"] = auroc(known_scores[n], s)
    for n, parts in all_unknown.items():
        u = np.concatenate(parts)
        report["candidates"][n]["auroc"] = auroc(known_scores[n], u)
        report["candidates"][n]["fpr_at_tpr"] = fpr_at(u, thresholds[n])
    best = report["candidates"][chosen]
    report.update({"auroc": best["auroc"], "fpr_at_tpr": best["fpr_at_tpr"], "known_tpr": best["known_tpr"]})
    return report




def head_bundle_outputs(bundle: Path, manifest: dict[str, Any], clips: torch.Tensor) -> dict[str, np.ndarray]:
    """The fp32 bundle's head on `clips`: ridge scores `(B, C)` and features `h (B, M)`."""
    proj, weights = head_arrays(bundle, manifest)
    feats, scores = [], []
    with OrtRunner(bundle / manifest["head"]["tower_file"]) as tower:
        for chunk in np.array_split(clips.numpy(), max(1, -(-len(clips) // _CHUNK))):
            B, T = chunk.shape[:2]
            window = tower.infer({TOWER_INPUT: chunk.reshape(B * T, *chunk.shape[2:])})[TOWER_OUTPUT].reshape(B, T, -1)
            feats.append(expand(window, proj))
            scores.append(feats[-1] @ weights)
    return {"h": np.concatenate(feats), "scores": np.concatenate(scores)}


def head_openset_report(r: Restored, bundle: Path, manifest: dict[str, Any],
                        subspace: np.ndarray, tail_inverse: float) -> dict[str, Any] | None:
    """As `openset_report`, with the head's scores (runtime/openset.py, the head's part); beside
    them, where StPR is trained too, StPR's own candidates on the same clips for comparison."""

    def scores_of(out: dict[str, np.ndarray], stats: dict | None) -> dict[str, np.ndarray]:
        return head_unknown_scores(out["scores"], out["h"], subspace, tail_inverse, stats)

    report = _calibrate_and_measure(
        r, lambda clips: head_bundle_outputs(bundle, manifest, clips),
        lambda out: head_standardisation(out["scores"], out["h"], subspace, tail_inverse), scores_of,
        lambda stats: HEAD_UNKNOWN_SCORE)
    if report is not None and manifest["head"]["mode"] != "alone":
        report["stpr_candidates"] = openset_report(r, bundle, manifest)["candidates"]
    return report
