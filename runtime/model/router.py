"""TD-MoE routing and the cosine classifier in NumPy (docs/method.md, "Classifier" and "Routing between experts").

The device-side twin of `stpr.train.model.router`: the same maths, no torch, the shared
functions in the same order with the same keyword-only signatures (`td_distance_scores`,
`expert_scores`, `routing_scores`, `routing_weights`, `weights_from_scores`, `combine`).
`tests/test_numpy_router.py` holds the two together to 1e-5, and the export's parity check
holds a bundle to PyTorch. Device only: `normalize` and `softmax` (torch's builtins) and
`classify`, which composes the rest with the cosine classifier.
"""
from __future__ import annotations

import numpy as np

from ..contract import BUNDLE_ROUTING_MODES


def _owned(class_to_expert: np.ndarray, num_experts: int) -> np.ndarray:
    """`(1, K, C)` mask: class c belongs to expert e (each expert scores only its own classes)."""
    return class_to_expert[None, None, :] == np.arange(num_experts)[None, :, None]


def td_distance_scores(d: np.ndarray, *, means: np.ndarray, class_to_expert: np.ndarray,
                       var: np.ndarray) -> np.ndarray:
    """`s_e = -min_{c in C_e} mean_j (d_ej - m_cj)^2 / var_ej`: centred residuals `d (B, K, D)`,
    class means `(C, D)`, per-expert channel spreads `var (K, D)` -> `(B, K)`."""
    K, D = var.shape
    inv = 1.0 / var
    quad = (d * d * inv).sum(-1, keepdims=True)  # (B, K, 1)
    cross = np.einsum("bkd,cd->bkc", d * inv, means)  # (B, K, C)
    msq = inv @ (means * means).T  # (K, C)
    dist = (quad - 2 * cross + msq) / D
    return -np.where(_owned(class_to_expert, K), dist, np.inf).min(axis=-1)


def expert_scores(query: np.ndarray, *, anchors: np.ndarray, class_to_expert: np.ndarray,
                  num_experts: int) -> np.ndarray:
    """`s_e = max_{c in C_e} cos(query_e, anchor_c)`: query `(B, K, D)` or `(B, D)` -> `(B, K)`."""
    if query.ndim == 2:
        query = np.broadcast_to(query[:, None, :], (query.shape[0], num_experts, query.shape[1]))
    sim = normalize(query) @ normalize(anchors).T  # (B, K, C)
    return np.where(_owned(class_to_expert, num_experts), sim, -np.inf).max(axis=-1)


def routing_scores(
    mode: str,
    *,
    fbar: np.ndarray,
    z: np.ndarray,
    class_to_expert: np.ndarray,
    anchors: np.ndarray | None = None,
    query: np.ndarray | None = None,
    calibration: dict[str, np.ndarray] | None = None,
) -> np.ndarray | None:
    """Per-expert routing scores `(B, K)` before the softmax (None for avg, which scores
    nothing); `anchors` are td anchors (td, td-raw) or adapted prototypes (adapter, whose
    `query` is fbar by default). td is calibrated: the residual is centred by each expert's
    `calibration["center"] (K, D)`, scored by `td_distance_scores` against the class means
    with the expert's channel spreads `var (K, D)`, and standardised by `score_mean (K,)` and
    `score_std (K,)`; td-raw is the paper's form (cosine, Eq. 11). Kept apart from the
    softmax because the open-set score (`runtime.openset`) reads how typical the best
    expert finds the clip."""
    K = z.shape[1]
    if mode == "avg":
        return None
    if mode not in BUNDLE_ROUTING_MODES:
        raise ValueError(f"routing {mode!r} cannot run from a bundle; valid: {', '.join(BUNDLE_ROUTING_MODES)}")
    if anchors is None:
        raise ValueError(f"routing {mode!r} needs anchors")
    if mode == "td":
        if calibration is None:
            raise ValueError("routing 'td' needs its per-expert calibration")
        d = z - fbar[:, None, :] - calibration["center"][None]  # (B, K, D) centred residual
        raw = td_distance_scores(d, means=anchors, class_to_expert=class_to_expert, var=calibration["var"])
        return (raw - calibration["score_mean"]) / calibration["score_std"]
    if mode == "td-raw":  # d_e = z_e - fbar (Eq. 10)
        return expert_scores(z - fbar[:, None, :], anchors=anchors, class_to_expert=class_to_expert, num_experts=K)
    return expert_scores(fbar if query is None else query, anchors=anchors, class_to_expert=class_to_expert,
                         num_experts=K)


def routing_weights(
    mode: str,
    *,
    fbar: np.ndarray,
    z: np.ndarray,
    class_to_expert: np.ndarray,
    tau: float,
    anchors: np.ndarray | None = None,
    query: np.ndarray | None = None,
    calibration: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Weights `(B, K)` over experts: `softmax(routing_scores / tau)`, equal for avg."""
    scores = routing_scores(mode, fbar=fbar, z=z, class_to_expert=class_to_expert, anchors=anchors, query=query,
                            calibration=calibration)
    return weights_from_scores(scores, z=z, tau=tau)


def weights_from_scores(scores: np.ndarray | None, *, z: np.ndarray, tau: float) -> np.ndarray:
    """`softmax(scores / tau)` in z's dtype; equal weights where nothing was scored (avg)."""
    if scores is None:
        B, K, _ = z.shape
        return np.full((B, K), 1.0 / K, dtype=z.dtype)
    return softmax(scores / tau).astype(z.dtype)


def combine(fbar: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`v = fbar + sum_e w_e z_e` (Eq. 12): `(B, D), (B, K, D), (B, K) -> (B, D)`."""
    return fbar + np.einsum("bk,bkd->bd", w, z)


# ---- device only ---------------------------------------------------------------------
def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit vectors along the last axis (torch's F.normalize: divide by max(norm, eps))."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def classify(
    frame_features: np.ndarray, expert_outputs: np.ndarray, text_embeddings: np.ndarray,
    class_to_expert: np.ndarray, anchors: np.ndarray, mode: str, tau: float, logit_scale: float,
    calibration: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Frame features `(B, T, D)` and expert outputs `(B, K, D)` -> logits `(B, C)`, weights
    `(B, K)`, `v (B, D)` and the routing scores `(B, K)` (None for avg)."""
    fbar = frame_features.mean(axis=1)  # (B, D) Eq. 8
    scores = routing_scores(mode, fbar=fbar, z=expert_outputs, class_to_expert=class_to_expert, anchors=anchors,
                            calibration=calibration)
    w = weights_from_scores(scores, z=expert_outputs, tau=tau)
    v = combine(fbar, expert_outputs, w)  # (B, D) Eq. 12
    logits = logit_scale * normalize(v) @ normalize(text_embeddings).T
    return {"logits": logits.astype(np.float32), "weights": w, "v": v, "route_scores": scores}
