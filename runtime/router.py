"""TD-MoE routing and the cosine classifier in NumPy (METHOD.md sec. 3-4).

The device-side twin of `stpr.train.model.router`: same maths, no torch. Used by
`stpr-run` and by the export's parity check, which holds the two to 1e-5.
"""
from __future__ import annotations

import numpy as np

BUNDLE_ROUTING_MODES = ("td", "avg", "adapter")  # clip needs a second (plain CLIP) tower; oracle needs labels


def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Unit vectors along the last axis (torch's F.normalize: divide by max(norm, eps))."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def expert_scores(query: np.ndarray, anchors: np.ndarray, class_to_expert: np.ndarray, num_experts: int) -> np.ndarray:
    """`s_e = max_{c in C_e} cos(query_e, anchor_c)`: query `(B, K, D)` or `(B, D)` -> `(B, K)`."""
    if query.ndim == 2:
        query = np.broadcast_to(query[:, None, :], (query.shape[0], num_experts, query.shape[1]))
    sim = normalize(query) @ normalize(anchors).T  # (B, K, C)
    owner = class_to_expert[None, None, :] == np.arange(num_experts)[None, :, None]  # (1, K, C)
    return np.where(owner, sim, -np.inf).max(axis=-1)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def routing_weights(
    mode: str, fbar: np.ndarray, z: np.ndarray, class_to_expert: np.ndarray, tau: float,
    anchors: np.ndarray | None = None,
) -> np.ndarray:
    """Weights `(B, K)` over experts; `anchors` are td anchors (td) or adapted prototypes (adapter)."""
    B, K, _ = z.shape
    if mode == "avg":
        return np.full((B, K), 1.0 / K, dtype=z.dtype)
    if mode not in BUNDLE_ROUTING_MODES:
        raise ValueError(f"routing {mode!r} cannot run from a bundle; valid: {', '.join(BUNDLE_ROUTING_MODES)}")
    if anchors is None:
        raise ValueError(f"routing {mode!r} needs anchors")
    query = z - fbar[:, None, :] if mode == "td" else fbar  # td: temporal dynamics d_e = z_e - fbar
    return softmax(expert_scores(query, anchors, class_to_expert, K) / tau).astype(z.dtype)


def classify(
    frame_features: np.ndarray, expert_outputs: np.ndarray, text_embeddings: np.ndarray,
    class_to_expert: np.ndarray, anchors: np.ndarray, mode: str, tau: float, logit_scale: float,
) -> dict[str, np.ndarray]:
    """Frame features `(B, T, D)` and expert outputs `(B, K, D)` -> logits `(B, C)` and weights `(B, K)`."""
    fbar = frame_features.mean(axis=1)  # (B, D) Eq. 8
    w = routing_weights(mode, fbar, expert_outputs, class_to_expert, tau, anchors)
    v = fbar + np.einsum("bk,bkd->bd", w, expert_outputs)  # (B, D) Eq. 12
    logits = logit_scale * normalize(v) @ normalize(text_embeddings).T
    return {"logits": logits.astype(np.float32), "weights": w, "v": v}
