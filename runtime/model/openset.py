"""Open-set rejection: how well a clip fits the known classes, and the threshold below
which `stpr-run` reports it as `unknown`.

Every score here is "higher = more like a known class", computed from the arrays the
NumPy router already returns (`router.classify`), so the export's calibration and the
device read the very same numbers. The export compares the candidates on held-out
classes (`export.openset`); `UNKNOWN_SCORE` is the one the runtime uses.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

TARGET_TPR = 0.95  # the threshold keeps 95 % of held-out clips of known classes


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1)
    return m + np.log(np.exp(x - m[:, None]).sum(axis=-1))


def _top2(logits: np.ndarray) -> np.ndarray:
    return -np.sort(-logits, axis=-1)[:, :2]


def max_cosine(out: dict, logit_scale: float) -> np.ndarray:
    """Best cosine of v with a class text: logits are `logit_scale * cos`."""
    return out["logits"].astype(np.float64).max(axis=-1) / logit_scale


def margin(out: dict, logit_scale: float) -> np.ndarray:
    """Gap between the two best logits (one class -> no rival: the max logit itself)."""
    t = _top2(out["logits"].astype(np.float64))
    return t[:, 0] - t[:, 1] if t.shape[1] > 1 else t[:, 0]


def energy(out: dict, logit_scale: float) -> np.ndarray:
    """Negative free energy, `logsumexp(logits)` (Liu et al. 2020)."""
    return _logsumexp(out["logits"].astype(np.float64))


def max_softmax(out: dict, logit_scale: float) -> np.ndarray:
    """The top class probability (the usual baseline)."""
    x = out["logits"].astype(np.float64)
    return np.exp(x.max(axis=-1) - _logsumexp(x))


def route(out: dict, logit_scale: float) -> np.ndarray:
    """Best standardised routing score: how typical the best expert finds the clip's
    dynamics, in units of that expert's own-task spread (routing td; None otherwise)."""
    if out.get("route_scores") is None:
        raise ValueError("the route score needs a router that scores experts (td, td-raw, adapter), not avg")
    return out["route_scores"].astype(np.float64).max(axis=-1)


SCORES: dict[str, Callable[[dict, float], np.ndarray]] = {
    "max_cosine": max_cosine, "margin": margin, "energy": energy, "max_softmax": max_softmax, "route": route,
}
# The combination: each part standardised by its mean and spread on the calibration
# clips, then the smaller one. A clip is unknown when its class decision is ambiguous
# (margin) or no expert finds its dynamics typical (route): the two fail on different
# clips, so the minimum beats either alone (docs/results.md, "Open set").
COMBINED = "margin_route"
COMBINED_PARTS = ("margin", "route")
SCORE_NAMES = (*SCORES, COMBINED)
UNKNOWN_SCORE = COMBINED  # chosen by AUROC on held-out classes
FALLBACK_SCORE = "margin"  # a router that scores no expert (avg): the best single score without route


def standardisation(out: dict, logit_scale: float) -> dict[str, list[float]]:
    """Mean and spread of each part of the combination over calibration clips."""
    stats = {}
    for part in COMBINED_PARTS:
        s = SCORES[part](out, logit_scale)
        stats[part] = [float(s.mean()), float(max(s.std(), 1e-6))]  # a spread of 0 would divide by 0
    return stats


def unknown_score(name: str, out: dict, logit_scale: float,
                  standardise: dict[str, list[float]] | None = None) -> np.ndarray:
    """Score `name` of each clip `(B,)` from `router.classify`'s output; the combination
    needs the calibration's `standardise` (part -> [mean, spread])."""
    if name == COMBINED:
        if standardise is None:
            raise ValueError(f"the {COMBINED!r} score needs its calibration statistics")
        return np.min([(SCORES[p](out, logit_scale) - standardise[p][0]) / standardise[p][1]
                       for p in COMBINED_PARTS], axis=0)
    if name not in SCORES:
        raise ValueError(f"unknown-score {name!r} is not one this stpr computes ({', '.join(SCORE_NAMES)}); "
                         "re-export the bundle or update stpr")
    return SCORES[name](out, logit_scale)


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score of a known clip > score of an unknown clip), ties counted half
    (the Mann-Whitney form of the area under the ROC curve): 0.5 is chance."""
    k, u = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if k.size == 0 or u.size == 0:
        raise ValueError("AUROC needs at least one known and one unknown score")
    # all pairs at once: the report's few hundred clips a side make a small matrix
    diff = k[:, None] - u[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def threshold_at_tpr(known: np.ndarray, tpr: float = TARGET_TPR) -> float:
    """The highest threshold that keeps (score >= threshold) at least a fraction `tpr` of
    the known clips: the k-th lowest score, k = floor((1 - tpr) n)."""
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr {tpr} must be in (0, 1]")
    s = np.sort(np.asarray(known, np.float64))
    return float(s[int(np.floor((1.0 - tpr) * s.size + 1e-9))])


def fpr_at(unknown: np.ndarray, threshold: float) -> float:
    """Fraction of unknown clips accepted as known at `threshold`."""
    return float((np.asarray(unknown) >= threshold).mean())


# Where each bounded score lives: a threshold outside would reject every clip or none.
SCORE_RANGE: dict[str, tuple[float, float]] = {"max_cosine": (-1.0, 1.0), "max_softmax": (0.0, 1.0),
                                               "margin": (0.0, float("inf"))}


def check_threshold(value: float, source: str, score: str | None = None) -> float:
    """A usable threshold: a finite number (a NaN would silently accept or reject all),
    inside the range of `score` where it has one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{source} is {value!r}: must be a finite number")
    lo, hi = SCORE_RANGE.get(score or "", (-np.inf, np.inf))
    if not lo <= value <= hi:
        raise ValueError(f"{source} is {value!r}: the bundle's {score!r} score lies in [{lo}, {hi}], so it would "
                         "reject every clip or none")
    return float(value)


# ---------------------------------------------------------------- the analytic head's scores
# From the head's ridge scores `(B, C)` and its features `h (B, M)`. The leverage
# `h^T (G + lambda I)^-1 h` is a Mahalanobis distance under the second moment G that the
# head already keeps: large for a clip unlike every training clip. The bundle carries G's
# top-r eigenvectors and `1 / (eigenvalue + lambda)` (`head_subspace.npy`); the rest of the
# spectrum enters as one mean eigenvalue (`tail_inverse`), so no M x M matrix ships.
HEAD_COMBINED = "head_margin_mahalanobis"
HEAD_COMBINED_PARTS = ("head_margin", "head_mahalanobis")


def head_leverage(h: np.ndarray, subspace: np.ndarray, tail_inverse: float) -> np.ndarray:
    """`h^T (G + lambda I)^-1 h` from the top-r eigenvectors `subspace[:-1] (M, r)`, their
    `1 / (e + lambda)` in `subspace[-1]` and the rest of the spectrum's `tail_inverse`: `(B,)`."""
    h = h.astype(np.float64)
    proj = h @ subspace[:-1].astype(np.float64)  # (B, r)
    inside = (proj * proj * subspace[-1]).sum(-1)
    rest = np.maximum((h * h).sum(-1) - (proj * proj).sum(-1), 0.0)
    return inside + tail_inverse * rest


def _head_parts(scores: np.ndarray, h: np.ndarray, subspace: np.ndarray | None,
                tail_inverse: float | None) -> dict[str, np.ndarray]:
    s = np.asarray(scores, np.float64)
    top = -np.sort(-s, axis=-1)[:, :2]
    parts = {"head_max": top[:, 0], "head_margin": top[:, 0] - top[:, 1] if top.shape[1] > 1 else top[:, 0]}
    if subspace is not None:
        parts["head_mahalanobis"] = -head_leverage(h, subspace, float(tail_inverse))  # higher = more typical
    return parts


def head_standardisation(scores: np.ndarray, h: np.ndarray, subspace: np.ndarray,
                         tail_inverse: float) -> dict[str, list[float]]:
    """Mean and spread of each part of the head's combination over calibration clips."""
    parts = _head_parts(scores, h, subspace, tail_inverse)
    return {p: [float(parts[p].mean()), float(max(parts[p].std(), 1e-6))] for p in HEAD_COMBINED_PARTS}


def head_unknown_scores(scores: np.ndarray, h: np.ndarray, subspace: np.ndarray | None = None,
                        tail_inverse: float | None = None,
                        standardise: dict[str, list[float]] | None = None) -> dict[str, np.ndarray]:
    """Every head score computable from what is given: max, margin, and with the subspace the
    Mahalanobis score, and with `standardise` their combination (the smaller standardised part)."""
    parts = _head_parts(scores, h, subspace, tail_inverse)
    if standardise is not None and "head_mahalanobis" in parts:
        parts[HEAD_COMBINED] = np.min([(parts[p] - standardise[p][0]) / standardise[p][1]
                                       for p in HEAD_COMBINED_PARTS], axis=0)
    return parts


HEAD_SCORE_NAMES = ("head_max", "head_margin", "head_mahalanobis", HEAD_COMBINED)
HEAD_UNKNOWN_SCORE = HEAD_COMBINED  # chosen by AUROC on never-trained classes (docs/results.md, "Open set")
HEAD_SUBSPACE_RANK = 256  # eigenvectors of G kept for the Mahalanobis score


def head_subspace(gram: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """G's top-r eigenvectors with `1 / (e + lambda)` as a last row, and the rest of the
    spectrum's `1 / (mean e + lambda)`: what `head_leverage` needs, without G. The export
    calls it on the trained sums, `stpr-learn` on the sums after learning."""
    evals, evecs = np.linalg.eigh(np.asarray(gram, np.float64))  # ascending
    rank = min(HEAD_SUBSPACE_RANK, gram.shape[0])
    top_e, top_v = np.maximum(evals[-rank:], 0.0), evecs[:, -rank:]
    rest = np.maximum(evals[:-rank], 0.0)
    tail = float(rest.mean()) if len(rest) else 0.0
    sub = np.concatenate([top_v, (1.0 / (top_e + lam))[None, :]]).astype(np.float32)
    return sub, 1.0 / (tail + lam)
