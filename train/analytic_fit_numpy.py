"""Fitting the analytic head in NumPy, streaming: the torch-free twin of `analytic_fit`.

The same sums, balance rule, lambda rule and solve as `train/analytic_fit.py`
(docs/method.md, "The analytic head"), held to it by `tests/test_head_without_torch.py`.
Rows arrive batch by batch and go straight into `G` and `C`, so memory stays flat in
the number of clips. The one exception is the base task when lambda is chosen: its
rows are needed twice (a holdout split by each clip's key), so they are spilled to
a file on disk (`spill`), never held in memory.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from stpr.runtime.model.analytic import expand, projection_matrix
from stpr.runtime.model.head_sums import ridge_solve

log = logging.getLogger(__name__)

LAMBDA_GRID = tuple(10.0 ** e for e in range(-6, 4))  # as analytic_fit.LAMBDA_GRID
HOLDOUT_EVERY = 4  # as analytic_fit.HOLDOUT_EVERY
CHUNK = 1024  # rows per step when the spilled base task is read back


class NumpyHead:
    """Ridge regression on `h = relu(x P)` from sums, task by task (see `analytic_fit.AnalyticHead`).

    A task is `begin_task(labels, num_classes)` (every label of the task, known from the
    dataset before any frame is read: the balance weights need the counts), `add_rows` per
    batch, then `end_task()`."""

    def __init__(self, *, in_dim: int, dim: int, seed: int, balance: str = "weight", ridge: float = 0.0) -> None:
        self.in_dim, self.dim, self.seed, self.balance = int(in_dim), int(dim), int(seed), balance
        self.projection = projection_matrix(self.seed, self.in_dim, self.dim)  # (in_dim, M) float32
        self.lam: float | None = float(ridge) if ridge > 0 else None
        self.lambda_report: dict[str, Any] = {"rule": "fixed"} if ridge > 0 else {}
        self.gram = np.zeros((self.dim, self.dim))  # G, float64
        self.cross = np.zeros((self.dim, 0))  # C
        self.counts = np.zeros(0)  # clips per class (unweighted)
        self.n_ref: float | None = None
        self.weights = np.zeros((self.dim, 0), np.float32)  # W (M, C)
        # the base task's rows memmap, labels, keys, primary flags, rows filled
        self._spill: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] | None = None

    @property
    def num_classes(self) -> int:
        return self.cross.shape[1]

    def features(self, window: np.ndarray) -> np.ndarray:
        """`(B, T, D)` frame features of the head's tower -> `h (B, M)` float32."""
        return expand(window, self.projection)

    def begin_task(self, labels: np.ndarray, num_classes: int, spill: Path | None = None) -> None:
        """The task's clip counts (and n_ref on the base task); `spill`: where the base task's
        rows go while lambda is still to be chosen."""
        labels = np.asarray(labels, np.int64)
        grow = num_classes - self.num_classes
        if grow < 0:
            raise ValueError(f"the head already holds {self.num_classes} classes, more than {num_classes}")
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        self.counts = np.concatenate([self.counts, np.zeros(grow)]) + counts
        if self.n_ref is None:
            present = counts[counts > 0]
            self.n_ref = float(present.mean()) if len(present) else 1.0
        self.cross = np.concatenate([self.cross, np.zeros((self.dim, grow))], axis=1)
        if self.lam is None:
            if spill is None:
                raise ValueError("choosing lambda needs a spill file for the base task's rows")
            rows = np.lib.format.open_memmap(spill, mode="w+", dtype=np.float32, shape=(len(labels), self.dim))
            n = len(labels)
            self._spill = (rows, np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool), 0)

    def clip_weights(self, labels: np.ndarray) -> np.ndarray:
        """Each clip's weight in the sums (see `analytic_fit.AnalyticHead`)."""
        if self.balance == "none":
            return np.ones(len(labels))
        return self.n_ref / np.maximum(self.counts[labels], 1)

    def add_rows(self, h: np.ndarray, labels: np.ndarray, keys: np.ndarray | None = None,
                 primary: np.ndarray | None = None) -> None:
        """Fold one batch of the task's rows `h (B, M)` (global class ids `labels`, each row's
        clip's `clip_key`; None: a hash of each row) into the sums. `primary` (bool, B; None:
        all) marks each clip's own row beside crop rows: lambda is chosen on those alone (see
        `analytic_fit.AnalyticHead.add_task`)."""
        labels = np.asarray(labels, np.int64)
        if self._spill is not None:
            rows, spilled, spilled_keys, spilled_primary, n = self._spill
            rows[n:n + len(h)] = h
            spilled[n:n + len(h)] = labels
            spilled_keys[n:n + len(h)] = row_keys(h) if keys is None else keys
            spilled_primary[n:n + len(h)] = True if primary is None else primary
            self._spill = (rows, spilled, spilled_keys, spilled_primary, n + len(h))
        h64 = h.astype(np.float64)
        hw = h64 * self.clip_weights(labels)[:, None]
        self.gram += hw.T @ h64
        np.add.at(self.cross.T, labels, hw)  # C[:, y] += w h, one-hot without the (B, C) matrix

    def end_task(self) -> None:
        """Choose lambda on the base task (from its spilled rows), then solve."""
        if self._spill is not None:
            rows, labels, keys, primary, n = self._spill
            self._spill = None
            self.lam, self.lambda_report = choose_lambda(rows[:n], labels[:n], self.clip_weights(labels[:n]),
                                                         keys[:n], dim=self.dim, primary=primary[:n])
            path = getattr(rows, "filename", None)
            del rows
            if path:
                Path(path).unlink(missing_ok=True)
            log.info("analytic head: lambda %.4g (g = %g, chosen on the base task)", self.lam,
                     self.lambda_report["g"])
        self.solve()

    def solve(self) -> None:
        """`W = (G + lambda I)^-1 C` in float64 (`runtime.head_sums.ridge_solve`, the device's solve)."""
        self.weights = ridge_solve(self.gram, self.cross, self.lam).astype(np.float32)

    def scores(self, window: np.ndarray) -> np.ndarray:
        """`(B, T, D)` -> ridge scores `(B, C)`."""
        return self.features(window) @ self.weights

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays (an `.npz` checkpoint, read with allow_pickle=False)."""
        return {"in_dim": np.int64(self.in_dim), "dim": np.int64(self.dim), "seed": np.int64(self.seed),
                "balance": np.str_(self.balance), "lam": np.float64(self.lam), "gram": self.gram,
                "cross": self.cross, "counts": self.counts, "n_ref": np.float64(self.n_ref), "weights": self.weights}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], lambda_report: dict[str, Any]) -> "NumpyHead":
        head = cls(in_dim=int(state["in_dim"]), dim=int(state["dim"]), seed=int(state["seed"]),
                   balance=str(state["balance"]), ridge=float(state["lam"]))
        head.lambda_report = lambda_report
        head.gram, head.cross = np.array(state["gram"]), np.array(state["cross"])
        head.counts, head.n_ref = np.array(state["counts"]), float(state["n_ref"])
        head.weights = np.array(state["weights"], np.float32)
        return head


def clip_key(frames: np.ndarray) -> int:
    """A clip's key for the lambda rule's holdout split: a hash of its preprocessed frames
    `(T, 3, S, S)` float32, which every path (PyTorch, torch-free, any rank) reads alike."""
    return zlib.crc32(np.ascontiguousarray(frames, dtype=np.float32).tobytes())


def row_keys(h: np.ndarray) -> list[int]:
    """Keys for rows without frames: a hash of each float32 row."""
    return [zlib.crc32(np.ascontiguousarray(r, dtype=np.float32).tobytes()) for r in h]


def holdout_mask(h: np.ndarray, labels: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
    """Stratified 75/25 by each clip's key (see `analytic_fit.holdout_mask`)."""
    keys = row_keys(h) if keys is None else [int(k) for k in keys]
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c).tolist()
        idx.sort(key=lambda i: (keys[i], i))
        mask[idx[HOLDOUT_EVERY - 1::HOLDOUT_EVERY]] = True
    return mask


def _chunks(n: int) -> list[slice]:
    return [slice(i, min(n, i + CHUNK)) for i in range(0, n, CHUNK)]


def choose_lambda(h: np.ndarray, labels: np.ndarray, w: np.ndarray, keys: np.ndarray | None = None, *,
                  dim: int, primary: np.ndarray | None = None) -> tuple[float, dict]:
    """The base task's ridge parameter by the rule of `analytic_fit.choose_lambda`, reading
    `h` (a memmap) in chunks: its sums on the 75 %, its errors on the 25 %. With `primary`,
    g is chosen on those rows (each clip's own) and tr(G) is that of every row."""
    trace = sum(float((h[s].astype(np.float64) ** 2 * w[s, None]).sum()) for s in _chunks(len(h)))
    own = np.arange(len(h)) if primary is None else np.flatnonzero(primary)  # the rows the rule sees
    if keys is None:
        keys = np.concatenate([np.asarray(row_keys(h[own[s]]), np.int64) for s in _chunks(len(own))] or
                              [np.zeros(0, np.int64)])
    else:
        keys = np.asarray(keys, np.int64)[own]
    labels = np.asarray(labels)[own]
    classes, local = np.unique(labels, return_inverse=True)
    hold = holdout_mask(h, labels, keys)  # h is not read: every row the rule sees has its key
    if hold.all() or not hold.any():  # too few clips to split: the grid's middle
        g = 1e-2
        return g * trace / dim, {"rule": "too few clips to split", "g": g}
    fit, ho = own[~hold], own[hold]  # rows of h
    local_fit, local_ho = local[~hold], local[hold]
    gram, cross = np.zeros((dim, dim)), np.zeros((dim, len(classes)))
    for s in _chunks(len(fit)):
        rows = h[fit[s]].astype(np.float64)
        hw = rows * w[fit[s], None]
        gram += hw.T @ rows
        np.add.at(cross.T, local_fit[s], hw)
    evals, evecs = np.linalg.eigh(gram)
    proj_c = evecs.T @ cross
    scale = float(np.trace(gram)) / dim
    Ws = [evecs @ (proj_c / (np.maximum(evals, 0) + g * scale)[:, None]) for g in LAMBDA_GRID]
    sq = np.zeros((len(LAMBDA_GRID), len(ho)))  # per g, each held-out clip's squared error
    for s in _chunks(len(ho)):
        rows, y = h[ho[s]].astype(np.float64), np.eye(len(classes))[local_ho[s]]
        for i, W in enumerate(Ws):
            sq[i, s] = ((rows @ W - y) ** 2).sum(1)
    mses = [float((err * w[ho]).sum() / w[ho].sum()) for err in sq]
    best = min(range(len(LAMBDA_GRID)), key=lambda i: (round(mses[i], 12), -i))
    g = LAMBDA_GRID[best]
    return g * trace / dim, {"rule": "holdout-mse", "g": g, "grid": list(LAMBDA_GRID), "mse": mses,
                             "fit_clips": len(fit), "holdout_clips": len(ho)}
