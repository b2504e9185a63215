"""The open-set calibration's torch-free core: which clips, and the threshold and report.

Held-out (test) clips of the known classes are split in two, alternately: one half
sets the threshold (the score that keeps `TARGET_TPR` of them), the other half is the
known side of the measurement. The unknown side is clips of classes the run never
trained; the synthetic generator renders them (new motion families of the known
shapes, and shapes no task used). Both exports use it: the PyTorch one (export/openset.py)
and the torch-free head's (export/head_only.py), so a bundle says `unknown` the same way
whichever trained it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from stpr.runtime.contract import OPENSET_FILE
from stpr.runtime.model.openset import (
    COMBINED,
    HEAD_COMBINED,
    HEAD_UNKNOWN_SCORE,
    TARGET_TPR,
    auroc,
    fpr_at,
    head_standardisation,
    head_unknown_scores,
    threshold_at_tpr,
)
from stpr.train.data.registry import build_splits

log = logging.getLogger(__name__)

UNKNOWN_CLIPS_PER_CLASS = 4  # clips rendered per never-trained class


@dataclass
class CalibrationClips:
    """Preprocessed clips `(B, T, 3, H, W)` float32: the two halves of the known classes'
    held-out clips, and never-trained classes by group (None: the data holds none)."""
    calib: np.ndarray
    known: np.ndarray
    unknown: dict[str, np.ndarray] | None


def known_clips(data_cfg: Any, preprocess: Any, seed: int, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(calibration half, evaluation half) of the test clips of `classes`."""
    test = build_splits(data_cfg, preprocess, seed).test
    seen = set(classes)
    idx = [i for i, t in enumerate(test.targets) if test.classes[t] in seen]
    if len(idx) < 4:
        raise ValueError(f"only {len(idx)} held-out clips of the known classes: too few to calibrate")
    clips = [test.clip(i) for i in idx]
    return np.stack(clips[0::2]), np.stack(clips[1::2])


def unknown_clips(data_cfg: Any, preprocess: Any, seed: int, classes: Sequence[str],
                  per_class: int = UNKNOWN_CLIPS_PER_CLASS) -> dict[str, np.ndarray] | None:
    """Clips of never-trained synthetic classes, grouped: `new_motion` (a known shape in a
    motion it was never trained in) and `new_shape` (a shape no known class has).
    None for other datasets: they hold no classes the run did not see."""
    if data_cfg.dataset != "synthetic":
        return None
    from stpr.train.data.synthetic import MOTIONS, SHAPES, SyntheticActions

    seen = set(classes)
    every = SyntheticActions("test", num_frames=data_cfg.num_frames, image_size=preprocess.size,
                             clips_per_class=per_class, seed=seed, mean=preprocess.mean, std=preprocess.std,
                             shapes=SHAPES, motions=MOTIONS)
    known_shapes = {c.split("_", 1)[0] for c in seen}
    groups: dict[str, list[np.ndarray]] = {"new_motion": [], "new_shape": []}
    for i, t in enumerate(every.targets):
        name = every.classes[t]
        if name not in seen:
            groups["new_motion" if name.split("_", 1)[0] in known_shapes else "new_shape"].append(every.clip(i))
    return {g: np.stack(c) for g, c in groups.items() if c}


def calibration_clips(data_cfg: Any, preprocess: Any, seed: int, classes: Sequence[str]) -> CalibrationClips | None:
    """The clips to calibrate on, or None (logged) when the run's data cannot be read here:
    the bundle is still valid, without `unknown`."""
    try:
        calib, known = known_clips(data_cfg, preprocess, seed, classes)
    except Exception as e:
        log.warning("no open-set calibration (the run's held-out clips could not be read: %s)", e)
        return None
    return CalibrationClips(calib, known, unknown_clips(data_cfg, preprocess, seed, classes))


def calibrate_and_measure(clips: CalibrationClips, outputs: Callable[[np.ndarray], dict], stats_of: Callable,
                          scores_of: Callable, choose: Callable) -> dict[str, Any]:
    """The threshold of the chosen score on the calibration half, and every candidate's TPR on
    the other half, AUROC and FPR on never-trained classes. `outputs(clips)` runs the bundle;
    `stats_of(out)` standardises the combined score; `scores_of(out, stats)` gives every
    candidate; `choose(stats)` names the one the bundle uses."""
    cal_out = outputs(clips.calib)
    stats = stats_of(cal_out)
    chosen = choose(stats)
    cal_scores = scores_of(cal_out, stats)
    known_scores = scores_of(outputs(clips.known), stats)
    thresholds = {n: threshold_at_tpr(s) for n, s in cal_scores.items()}
    report: dict[str, Any] = {
        "score": chosen, "target_tpr": TARGET_TPR, "threshold": thresholds[chosen],
        **({"standardise": stats} if stats is not None and chosen in (COMBINED, HEAD_COMBINED) else {}),
        "calibration_clips": int(len(clips.calib)), "known_eval_clips": int(len(clips.known)),
        "calibration": "alternate held-out (test) clips of the known classes; the others are the known side below",
        "candidates": {n: {"threshold": t, "known_tpr": float((known_scores[n] >= t).mean())}
                       for n, t in thresholds.items()},
    }
    if not clips.unknown:
        report["unknown_eval"] = "none: only the synthetic dataset renders classes the run never trained"
        return report
    all_unknown: dict[str, list[np.ndarray]] = {n: [] for n in cal_scores}
    for group, group_clips in clips.unknown.items():
        scores = scores_of(outputs(group_clips), stats)
        report.setdefault("unknown_clips", {})[group] = int(len(group_clips))
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


def head_report(clips: CalibrationClips, outputs: Callable[[np.ndarray], dict], subspace: np.ndarray,
                tail_inverse: float) -> dict[str, Any]:
    """The head's open-set report: its scores (runtime/model/openset.py, the head's part) on
    `outputs(clips) = {"scores": (B, C), "h": (B, M)}`, the bundle's own head."""

    def scores_of(out: dict[str, np.ndarray], stats: dict | None) -> dict[str, np.ndarray]:
        return head_unknown_scores(out["scores"], out["h"], subspace, tail_inverse, stats)

    return calibrate_and_measure(
        clips, outputs, lambda out: head_standardisation(out["scores"], out["h"], subspace, tail_inverse),
        scores_of, lambda stats: HEAD_UNKNOWN_SCORE)


def unknown_section(report: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `unknown` field from a report: the score, its calibrated threshold and
    what the runtime needs to compute it (`extra`: the head's subspace file and tail)."""
    keep = ("score", "threshold", "target_tpr", "standardise")
    return {**{k: report[k] for k in keep if k in report}, **extra, "report": OPENSET_FILE}
