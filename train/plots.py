"""PNG plots of a run: accuracy over tasks (paper Fig. 3), the accuracy matrix, and
mean routing weights per task (Fig. 4 style). Uses matplotlib's object API with the
Agg canvas, so importing this never changes the global backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .atomic import atomic_path


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_accuracy_curve(curves: dict[str, Sequence[float]], path: str | Path) -> Path:
    """One line per named curve: class-weighted accuracy (%) after each task."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    n = 0
    for name, ys in curves.items():
        ax.plot(range(len(ys)), ys, marker="o", label=name)
        n = max(n, len(ys))
    ax.set_xticks(range(n))
    ax.set(xlabel="after task", ylabel="accuracy on seen classes (%)", ylim=(0, 100), title="Accuracy over tasks")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_accuracy_matrix(A: np.ndarray, path: str | Path, title: str = "Accuracy matrix") -> Path:
    """Heatmap of `A[i, j]` with each defined cell annotated; NaN cells stay blank."""
    A = np.asarray(A, dtype=float)
    R, K = A.shape
    fig = Figure(figsize=(1.0 + 0.7 * K, 0.8 + 0.6 * R))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(A), vmin=0, vmax=100, cmap="viridis")
    for i in range(R):
        for j in range(K):
            if not np.isnan(A[i, j]):
                ax.text(j, i, f"{A[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if A[i, j] < 60 else "black")
    ax.set_xticks(range(K))
    ax.set_yticks(range(R))
    ax.set(xlabel="test task j", ylabel="after task i", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="%")
    return _save(fig, path)


def plot_routing_weights(weights: np.ndarray, path: str | Path) -> Path:
    """Mean routing weight per expert (columns) for each test task's videos (rows).

    Grouped bars up to 8 experts, a heatmap beyond, where bars would be unreadable.
    """
    W = np.atleast_2d(np.asarray(weights, dtype=float))
    T, E = W.shape
    fig = Figure(figsize=(max(4.5, 0.6 * T * min(E, 8) * 0.5 + 2), 3.8))
    ax = fig.add_subplot()
    if E <= 8:
        width = 0.8 / E
        for e in range(E):
            ax.bar(np.arange(T) + (e - (E - 1) / 2) * width, W[:, e], width, label=f"expert {e}")
        ax.set_xticks(range(T))
        ax.set(xlabel="test videos of task", ylabel="mean routing weight", ylim=(0, 1))
        ax.legend(fontsize=7, ncol=min(E, 4))
    else:
        im = ax.imshow(W, vmin=0, vmax=1, aspect="auto", cmap="magma")
        ax.set(xlabel="expert", ylabel="test videos of task")
        fig.colorbar(im, ax=ax, label="mean weight")
    ax.set_title("Routing weights per task")
    return _save(fig, path)
