"""The analytic head in PyTorch: features, scores and modes (twin of `stpr.runtime.model.analytic`).

Same definition order and maths as the NumPy twin; the fitting itself (sums, lambda,
solve) lives in `train/analytic_fit.py`. See docs/method.md, "The analytic head".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stpr.runtime.contract import HEAD_MODES
from stpr.runtime.model.analytic import projection_matrix

__all__ = ["HEAD_MODES", "projection", "clip_vector", "expand", "head_scores", "own_expert_logits",
           "task_probabilities", "mode_probabilities"]


def projection(*, seed: int, in_dim: int, out_dim: int) -> torch.Tensor:
    """`P (in_dim, out_dim)` float32, drawn by NumPy so the device regenerates it exactly."""
    return torch.from_numpy(projection_matrix(seed, in_dim, out_dim))


def clip_vector(window: torch.Tensor) -> torch.Tensor:
    """`(B, T, D)` -> `(B, T * D)`: unit frames concatenated oldest first."""
    B, T, D = window.shape
    return F.normalize(window.float(), dim=-1).reshape(B, T * D)


def expand(window: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """`h = relu(x P)`: `(B, T, D)` -> `(B, M)` float32."""
    return torch.relu(clip_vector(window) @ proj.to(window.device))


def head_scores(window: torch.Tensor, proj: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Ridge scores `(B, C)` = `h W`."""
    return expand(window, proj) @ weights.to(window.device, torch.float32)


def own_expert_logits(*, fbar: torch.Tensor, z: torch.Tensor, text: torch.Tensor, class_to_expert: torch.Tensor,
                      logit_scale: float) -> torch.Tensor:
    """`logit_scale * cos(fbar + z_e(c), t_c)`: `(B, D)`, `(B, K, D)`, `(C, D)` -> `(B, C)`."""
    v = F.normalize(fbar.unsqueeze(1) + z[:, class_to_expert.to(z.device)], dim=-1)  # (B, C, D)
    return logit_scale * torch.einsum("bcd,cd->bc", v, F.normalize(text, dim=-1))


def task_probabilities(p_class: torch.Tensor, class_to_expert: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """`p(task e) = sum_{c in e} p(c)`: `(B, C)` -> `(B, K)`."""
    onehot = F.one_hot(class_to_expert.to(p_class.device), num_tasks).to(p_class.dtype)  # (C, K)
    return p_class @ onehot


def _within_task_softmax(logits: torch.Tensor, class_to_expert: torch.Tensor, num_tasks: int) -> torch.Tensor:
    out = torch.zeros_like(logits, dtype=torch.float64)
    c2e = class_to_expert.to(logits.device)
    for e in range(num_tasks):
        cols = c2e == e
        if cols.any():
            out[:, cols] = torch.softmax(logits[:, cols].double(), dim=-1)
    return out


def mode_probabilities(
    mode: str, *, scores: torch.Tensor, class_to_expert: torch.Tensor, num_tasks: int, tau: float,
    own_logits: torch.Tensor | None = None, stpr_logits: torch.Tensor | None = None, fuse_weight: float = 0.5,
) -> torch.Tensor:
    """Class probabilities `(B, C)` (float64) of head mode `mode`; the rules are the NumPy twin's."""
    p_head = torch.softmax(scores.double() / tau, dim=-1)
    c2e = class_to_expert.to(scores.device)
    if mode == "alone":
        return p_head
    if mode in ("route-hard", "route-soft"):
        if own_logits is None:
            raise ValueError(f"head mode {mode!r} needs each class's own-expert logits")
        within = _within_task_softmax(own_logits, c2e, num_tasks)
        if mode == "route-soft":
            return task_probabilities(p_head, c2e, num_tasks)[:, c2e] * within
        task = c2e[scores.argmax(dim=1)]  # (B,)
        return within * (c2e.unsqueeze(0) == task.unsqueeze(1))
    if mode == "fuse":
        if stpr_logits is None:
            raise ValueError("head mode 'fuse' needs StPR's logits")
        return fuse_weight * p_head + (1.0 - fuse_weight) * torch.softmax(stpr_logits.double(), dim=-1)
    raise ValueError(f"head mode {mode!r} is not valid; choose one of: {', '.join(HEAD_MODES)}")
