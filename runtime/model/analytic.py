"""The analytic head in NumPy: the device-side twin of `stpr.train.model.analytic`.

A clip's T frame features, each scaled to unit length and concatenated in time order,
go through a fixed random projection and a ReLU, `h = relu(x P)`; a ridge-regression
matrix `W` maps `h` to one score per class (docs/method.md, "The analytic head"). The
head's modes combine those scores with StPR's: the head alone, the head as StPR's
router (hard or soft) or both fused. The export's parity check holds this file to the
PyTorch twin to 1e-5.
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..contract import HEAD_MODES
from .router import normalize, softmax

PROJECTION_GENERATOR = "numpy-pcg64-standard-normal-float32"  # what `projection_matrix` draws with


def projection_matrix(seed: int, in_dim: int, out_dim: int) -> np.ndarray:
    """`P (in_dim, out_dim)` float32: seeded standard normals / sqrt(in_dim).

    NumPy's PCG64 stream is the one generator both sides share, so a bundle carries the
    seed and the matrix's sha256 (`projection_sha256`), not 33 MB of numbers; a NumPy
    whose stream changed is caught by the hash, never served silently."""
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    p = rng.standard_normal((int(in_dim), int(out_dim)), dtype=np.float32)
    return p / np.float32(np.sqrt(in_dim))


def projection_sha256(p: np.ndarray) -> str:
    """The hash a bundle records for its regenerated projection (C-order float32 bytes)."""
    return hashlib.sha256(np.ascontiguousarray(p, dtype=np.float32).tobytes()).hexdigest()


def clip_vector(window: np.ndarray) -> np.ndarray:
    """`(B, T, D)` frame features -> `(B, T * D)`: each frame unit length (the tower's scale
    drops out, as in every cosine of the method), then concatenated oldest first. The
    order is the point: a frame mean cannot tell a motion from its time reverse."""
    B, T, D = window.shape
    return normalize(window.astype(np.float32)).reshape(B, T * D)


def expand(window: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """`h = relu(x P)`: `(B, T, D)` -> `(B, M)` float32."""
    return np.maximum(clip_vector(window) @ projection, 0.0)


def head_scores(window: np.ndarray, projection: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Ridge scores `(B, C)` = `h W`, with `W (M, C)`."""
    return (expand(window, projection) @ weights).astype(np.float32)


def own_expert_logits(*, fbar: np.ndarray, z: np.ndarray, text: np.ndarray, class_to_expert: np.ndarray,
                      logit_scale: float) -> np.ndarray:
    """Each class scored by its own task's expert: `logit_scale * cos(fbar + z_e(c), t_c)`,
    from `fbar (B, D)`, `z (B, K, D)`, text `(C, D)` -> `(B, C)`."""
    v = normalize(fbar[:, None, :] + z[:, class_to_expert, :])  # (B, C, D)
    return logit_scale * np.einsum("bcd,cd->bc", v, normalize(text))


def task_probabilities(p_class: np.ndarray, class_to_expert: np.ndarray, num_tasks: int) -> np.ndarray:
    """`p(task e) = sum_{c in e} p(c)`: `(B, C)` -> `(B, K)`."""
    onehot = (class_to_expert[:, None] == np.arange(num_tasks)[None, :]).astype(p_class.dtype)  # (C, K)
    return p_class @ onehot


def _within_task_softmax(logits: np.ndarray, class_to_expert: np.ndarray, num_tasks: int) -> np.ndarray:
    """Softmax of `(B, C)` logits over each task's own classes (each task sums to 1)."""
    out = np.zeros_like(logits, dtype=np.float64)
    for e in range(num_tasks):
        cols = class_to_expert == e
        if cols.any():
            out[:, cols] = softmax(logits[:, cols].astype(np.float64))
    return out


def mode_probabilities(
    mode: str, *, scores: np.ndarray, class_to_expert: np.ndarray, num_tasks: int, tau: float,
    own_logits: np.ndarray | None = None, stpr_logits: np.ndarray | None = None, fuse_weight: float = 0.5,
) -> np.ndarray:
    """Class probabilities `(B, C)` of head mode `mode` from the head's ridge `scores (B, C)`.

    - `alone`: `softmax(scores / tau)`.
    - `route-hard`: the head's top class names the task; that task's expert picks the class
      (a softmax of `own_logits` over the task's classes; every other class gets 0).
    - `route-soft`: `p(task e) * softmax_e(own_logits)`, with `p(task e)` the head's
      probability mass on e's classes.
    - `fuse`: `fuse_weight * head + (1 - fuse_weight) * softmax(stpr_logits)`.
    """
    p_head = softmax(scores.astype(np.float64) / tau)
    if mode == "alone":
        return p_head
    if mode in ("route-hard", "route-soft"):
        if own_logits is None:
            raise ValueError(f"head mode {mode!r} needs each class's own-expert logits")
        within = _within_task_softmax(own_logits, class_to_expert, num_tasks)  # (B, C)
        if mode == "route-soft":
            p_task = task_probabilities(p_head, class_to_expert, num_tasks)  # (B, K)
            return p_task[:, class_to_expert] * within
        task = class_to_expert[scores.argmax(axis=1)]  # (B,)
        return within * (class_to_expert[None, :] == task[:, None])
    if mode == "fuse":
        if stpr_logits is None:
            raise ValueError("head mode 'fuse' needs StPR's logits")
        return fuse_weight * p_head + (1.0 - fuse_weight) * softmax(stpr_logits.astype(np.float64))
    raise ValueError(f"head mode {mode!r} is not valid; choose one of: {', '.join(HEAD_MODES)}")
