"""Frame-Shared Semantics Distillation (docs/method.md, "Losses"; the paper's Eqs. 3-7).

After each task: per class, the per-channel mean and variance of frame features
over every frame of the task's training videos; importance
`Omega_cj = |m_cj * t_cj| / (v_cj + eps)` (semantic sensitivity x classification
contribution), normalised per class to mean 1, then averaged over every class seen
so far. While training the next task, feature drift of the shared adapters is
penalised channel by channel with that weight.
"""
from __future__ import annotations

import torch


class ClassFrameStats:
    """Running per-class sums over frames (float64), so the statistics of a whole task
    are exact however it is batched, and can be summed across DDP ranks."""

    def __init__(self, num_classes: int, dim: int) -> None:
        self.sum = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.sumsq = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.count = torch.zeros(num_classes, dtype=torch.float64)

    def update(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """feats `(B, T, D)` frame features; labels `(B,)` in `[0, num_classes)`."""
        B, T, D = feats.shape
        f = feats.detach().to("cpu", torch.float64)
        lab = labels.to("cpu")
        self.sum.index_add_(0, lab, f.sum(1))
        self.sumsq.index_add_(0, lab, (f * f).sum(1))
        self.count.index_add_(0, lab, torch.full((B,), float(T), dtype=torch.float64))

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class mean and (population) variance `(C, D)`; every class needs a frame."""
        empty = (self.count == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"no frames seen for class rows {empty}")
        n = self.count.unsqueeze(1)
        mean = self.sum / n
        var = (self.sumsq / n - mean * mean).clamp_min(0.0)
        return mean, var


def channel_importance(mean: torch.Tensor, var: torch.Tensor, text: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`Omega (C, D)`: `|m * t| / (v + eps)`, each row scaled to mean 1 over channels.

    A row that is all zero (no channel contributes) becomes uniform rather than NaN.
    """
    omega = (mean * text.to(mean.dtype)).abs() / (var + eps)  # (C, D)
    row_mean = omega.mean(dim=1, keepdim=True)
    uniform = torch.ones_like(omega)
    return torch.where(row_mean > 0, omega / row_mean.clamp_min(torch.finfo(omega.dtype).tiny), uniform)


class FSSDWeights:
    """The running mean of `Omega_c` over every class of the tasks seen so far."""

    def __init__(self, dim: int) -> None:
        self.weight = torch.ones(dim, dtype=torch.float64)
        self.num_classes = 0

    def add(self, omega: torch.Tensor) -> None:
        c = omega.shape[0]
        total = self.weight * self.num_classes + omega.to(torch.float64).sum(0)
        self.num_classes += c
        self.weight = total / self.num_classes

    def state_dict(self) -> dict:
        return {"weight": self.weight.clone(), "num_classes": self.num_classes}

    def load_state_dict(self, state: dict) -> None:
        self.weight = state["weight"].to(torch.float64)
        self.num_classes = int(state["num_classes"])


def fssd_loss(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`mean_{i,t} sum_j Omega_j (f_new - f_old)^2` over frame features `(..., D)` (Eq. 3).

    A sum over channels, as Eq. 3 writes it. An earlier version divided by D, which made
    the term ~40x smaller than the contrastive terms on the demo and FSSD a no-op at
    lambda = 1.
    """
    sq = (student - teacher.detach()) ** 2  # (..., D)
    return (sq * weight.to(sq)).sum(-1).mean()
