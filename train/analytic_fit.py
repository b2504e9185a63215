"""Fitting the analytic head: class-weighted sums, the ridge parameter, the solve.

Only sums are kept: `G = sum_i w_i h_i h_i^T` (M, M) and `C = sum_i w_i h_i y_i^T` (M, C),
float64, with a clip count per class. After every task `W = (G + lambda I)^-1 C`. On
a fixed feature map this is exactly joint ridge regression over every class seen so
far, whatever the class order (docs/method.md, "The analytic head"). Per-clip features
live only inside `add_task`.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from . import distributed as dist
from .analytic_fit_numpy import row_keys
from .model.analytic import expand, projection

log = logging.getLogger(__name__)

LAMBDA_GRID = tuple(10.0 ** e for e in range(-6, 4))  # g in lambda = g * tr(G) / M
HOLDOUT_EVERY = 4  # every 4th clip of a class (in a seeded, rank-independent order) is held out: 75/25


class AnalyticHead:
    """Ridge regression on `h = relu(x P)` from sums, updated task by task.

    balance: `weight` gives each clip the weight `n_ref / n_c` (n_c: its class's clip
    count, n_ref: the base task's mean clips per class), so every class carries the same
    total weight whatever its count and balanced data stays plain ridge; `none` weighs
    every clip 1. ridge: lambda, or 0 to choose it on the base task (`choose_lambda`).
    """

    def __init__(self, *, in_dim: int, dim: int, seed: int, balance: str = "weight", ridge: float = 0.0) -> None:
        self.in_dim, self.dim, self.seed, self.balance = int(in_dim), int(dim), int(seed), balance
        self.projection = projection(seed=self.seed, in_dim=self.in_dim, out_dim=self.dim)  # (in_dim, M)
        self.lam: float | None = float(ridge) if ridge > 0 else None
        self.lambda_report: dict[str, Any] = {"rule": "fixed"} if ridge > 0 else {}
        self.gram = torch.zeros(self.dim, self.dim, dtype=torch.float64)  # G
        self.cross = torch.zeros(self.dim, 0, dtype=torch.float64)  # C
        self.counts = torch.zeros(0, dtype=torch.float64)  # clips per class (unweighted)
        self.n_ref: float | None = None
        self.weights = torch.zeros(self.dim, 0)  # W (M, C) float32

    @property
    def num_classes(self) -> int:
        return self.cross.shape[1]

    def features(self, window: torch.Tensor) -> torch.Tensor:
        """`(B, T, D)` frame features of the head's tower -> `h (B, M)` float32."""
        return expand(window.float(), self.projection)

    def add_task(self, h: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 keys: torch.Tensor | None = None, primary: torch.Tensor | None = None) -> None:
        """Fold one task's clips (this rank's shard: `h (N, M)`, global class ids `labels`)
        into the sums and re-solve; `num_classes` is the count of classes seen so far.
        `keys`: each row's clip's `clip_key` (its frames' hash), what the lambda rule's holdout
        is drawn by; None: a hash of each row (for rows without frames). `primary` (bool, N)
        marks each clip's own row where the clips also give crop rows (`head.crops`, which
        carry their clip's key): lambda is chosen on those alone, so no clip's crops sit on
        both sides of the holdout."""
        h, labels = h.detach().cpu().double(), labels.detach().cpu().long()
        keys = torch.as_tensor(row_keys(h.float().numpy()) if keys is None else keys, dtype=torch.int64)
        grow = num_classes - self.num_classes
        if grow < 0:
            raise ValueError(f"the head already holds {self.num_classes} classes, more than {num_classes}")
        counts = dist.all_reduce_sum(torch.bincount(labels, minlength=num_classes).double())
        self.counts = torch.cat([self.counts, torch.zeros(grow, dtype=torch.float64)]) + counts
        if self.n_ref is None:
            present = counts[counts > 0]
            self.n_ref = float(present.mean()) if len(present) else 1.0
        w = self.clip_weights(labels)  # (N,)
        if self.lam is None:
            keep = torch.ones(len(h), dtype=torch.bool) if primary is None else primary.cpu().bool()
            hh, ll, ww, kk, pp = _gather_rows(h, labels, w, keys, keep)
            self.lam, self.lambda_report = choose_lambda(hh, ll, ww, kk, dim=self.dim, primary=pp)
            log.info("analytic head: lambda %.4g (g = %g, chosen on the base task)", self.lam,
                     self.lambda_report["g"])
        y = torch.nn.functional.one_hot(labels, num_classes).double()  # (N, C)
        hw = h * w.unsqueeze(1)
        self.gram += dist.all_reduce_sum(hw.T @ h)
        self.cross = torch.cat([self.cross, torch.zeros(self.dim, grow, dtype=torch.float64)], 1)
        self.cross += dist.all_reduce_sum(hw.T @ y)
        self.solve()

    def clip_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Each clip's weight in the sums (see the class docstring)."""
        if self.balance == "none":
            return torch.ones(len(labels), dtype=torch.float64)
        return self.n_ref / self.counts[labels].clamp_min(1)

    def solve(self) -> None:
        """`W = (G + lambda I)^-1 C` by Cholesky, in float64."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.gram + self.lam * eye)
        self.weights = torch.cholesky_solve(self.cross, chol).float()

    def scores(self, window: torch.Tensor) -> torch.Tensor:
        """`(B, T, D)` -> ridge scores `(B, C)`."""
        return self.features(window) @ self.weights.to(window.device)

    def state_dict(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "dim": self.dim, "seed": self.seed, "balance": self.balance,
                "lam": self.lam, "lambda_report": self.lambda_report, "gram": self.gram, "cross": self.cross,
                "counts": self.counts, "n_ref": self.n_ref, "weights": self.weights}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "AnalyticHead":
        head = cls(in_dim=state["in_dim"], dim=state["dim"], seed=state["seed"], balance=state["balance"],
                   ridge=float(state["lam"] or 0.0))
        for key in ("lambda_report", "gram", "cross", "counts", "n_ref", "weights"):
            setattr(head, key, state[key])
        return head


def _gather_rows(h: torch.Tensor, labels: torch.Tensor, w: torch.Tensor,
                 keys: torch.Tensor, primary: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's rows on every rank (shards may differ in length by one)."""
    if dist.world_size() == 1:
        return h, labels, w, keys, primary
    n = dist.gather(torch.tensor([len(h)]))
    pad = int(n.max()) - len(h)
    # keys are 32-bit: exact as float64
    rows = torch.cat([h, labels.double().unsqueeze(1), w.unsqueeze(1), keys.double().unsqueeze(1),
                      primary.double().unsqueeze(1)], 1)
    rows = torch.cat([rows, torch.zeros(pad, rows.shape[1], dtype=rows.dtype)])
    parts = dist.gather(rows).split(int(n.max()))
    rows = torch.cat([p[:k] for p, k in zip(parts, n.tolist())])
    return rows[:, :-4], rows[:, -4].long(), rows[:, -3], rows[:, -2].long(), rows[:, -1] > 0.5


def holdout_mask(h: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
    """Stratified 75/25: within each class, clips ordered by their keys (`clip_key`, a hash of
    their frames; without keys, of their rows) and every 4th held out. The order depends on
    the clips alone, not on which rank or batch saw them, so one process and N pick the same
    split, and so does the torch-free fit (its tower's rows differ from PyTorch's in the last
    bits, its frames do not)."""
    keys = row_keys(h.numpy()) if keys is None else keys.tolist()
    mask = torch.zeros(len(h), dtype=torch.bool)
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten().tolist()
        idx.sort(key=lambda i: (keys[i], i))
        mask[idx[HOLDOUT_EVERY - 1::HOLDOUT_EVERY]] = True
    return mask


def choose_lambda(h: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, keys: torch.Tensor | None = None, *,
                  dim: int, primary: torch.Tensor | None = None) -> tuple[float, dict]:
    """The base task's ridge parameter: `lambda = g * tr(G) / M`, with g from `LAMBDA_GRID`
    giving the lowest class-weighted mean squared error on a stratified 25 % holdout of
    the task's training clips, fitted on the other 75 % (ties: the larger g, the more
    stable solve). MSE, not accuracy: on a few classes accuracy ties over most of the
    grid and picks badly. With `primary`, g is chosen on those rows (each clip's own) and
    tr(G) is that of every row."""
    all_h, all_w = h.double(), w
    if primary is not None and not primary.all():
        h, labels, w = h[primary], labels[primary], w[primary]
        keys = None if keys is None else keys[primary]
    h = h.double()
    classes, local = labels.unique(return_inverse=True)
    y = torch.nn.functional.one_hot(local, len(classes)).double()
    hold = holdout_mask(h.float(), labels, keys)
    if hold.all() or not hold.any():  # too few clips to split: the grid's middle
        g = 1e-2
        trace = float((all_h * all_w.unsqueeze(1) * all_h).sum())  # tr(G): w h^2, as below and in the NumPy twin
        return g * trace / dim, {"rule": "too few clips to split", "g": g}
    fit, ho = ~hold, hold
    hw = h[fit] * w[fit].unsqueeze(1)
    gram, cross = hw.T @ h[fit], hw.T @ y[fit]
    evals, evecs = torch.linalg.eigh(gram)
    proj_c = evecs.T @ cross  # (M, C)
    scale = float(torch.trace(gram)) / dim
    mses = []
    for g in LAMBDA_GRID:
        W = evecs @ (proj_c / (evals.clamp_min(0) + g * scale).unsqueeze(1))
        err = ((h[ho] @ W - y[ho]) ** 2).sum(1)
        mses.append(float((err * w[ho]).sum() / w[ho].sum()))
    best = min(range(len(LAMBDA_GRID)), key=lambda i: (round(mses[i], 12), -i))
    g = LAMBDA_GRID[best]
    full = all_h * all_w.unsqueeze(1)
    lam = g * float((full * all_h).sum()) / dim  # tr(G) of the whole base task
    return lam, {"rule": "holdout-mse", "g": g, "grid": list(LAMBDA_GRID), "mse": mses,
                 "fit_clips": int(fit.sum()), "holdout_clips": int(ho.sum())}
