"""PNG plots of a run: accuracy over tasks (paper Fig. 3), the accuracy matrix, and
mean routing weights per task (Fig. 4 style).

Uses matplotlib's object API (`Figure` + the Agg canvas), never pyplot, so importing
or calling this never changes the global backend or leaks figures. Every file is
written through `atomic_path`, so a killed run never leaves a half-written PNG.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stpr.runtime.atomic import atomic_path

_DPI = 100
_MARKERS, _LINES = ("o", "s", "^", "D", "v"), ("-", "--", ":", "-.")
_MAX_BAR_EXPERTS = 8  # beyond this, grouped bars are unreadable: use a heatmap


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)  # attach an Agg canvas to this figure only
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)  # format given: tmp name has no .png suffix
    return path


def _size(base: float, per: float, n: int, cap: float) -> float:
    # Grow with the data but stay modest so plots are quick to render.
    return min(cap, base + per * n)


def plot_accuracy_curve(curves: dict[str, Sequence[float]], path: str | Path) -> Path:
    """One line per named curve: class-weighted accuracy (%) after each task (0-based)."""
    if not curves:
        raise ValueError("plot_accuracy_curve needs at least one named curve")
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    n = 0
    # Curves often coincide (StPR and the oracle's routing): each gets its own line style and
    # marker, and the first named (the method) is drawn on top, so none hides another.
    for i, (name, ys) in enumerate(curves.items()):
        y = np.array([np.nan if v is None else v for v in ys], dtype=float)  # None = undefined
        ax.plot(np.arange(len(y)), y, marker=_MARKERS[i % len(_MARKERS)], linestyle=_LINES[i % len(_LINES)],
                markerfacecolor="none" if i else None, ms=7 - i % 3, zorder=3 + len(curves) - i, label=name)
        n = max(n, len(y))
    ax.set_xticks(range(n))
    ax.set(xlabel="after task", ylabel="accuracy on seen classes (%)", ylim=(0, 100),
           title="Accuracy over tasks")
    ax.grid(alpha=0.3)
    # Below the axes, not on them: any corner of the plot can hold data points.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=min(len(curves), 3), fontsize=8,
              frameon=False)
    return _save(fig, path)


def plot_accuracy_matrix(A: np.ndarray, path: str | Path, title: str = "Accuracy matrix") -> Path:
    """Heatmap of `A[i, j]` (%) with each defined cell annotated; NaN cells stay blank."""
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or A.size == 0:
        raise ValueError(f"accuracy matrix must be a non-empty 2-D array, got shape {A.shape}")
    R, K = A.shape
    fig = Figure(figsize=(_size(1.5, 0.7, K, 14), _size(1.2, 0.6, R, 12)))
    ax = fig.add_subplot()
    # Masked cells are not drawn, so the white axes background shows through.
    im = ax.imshow(np.ma.masked_invalid(A), vmin=0, vmax=100, cmap="viridis")
    for i in range(R):
        for j in range(K):
            if not np.isnan(A[i, j]):
                # viridis is dark at the low end: white text there, black on the bright end.
                ax.text(j, i, f"{A[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if A[i, j] < 60 else "black")
    ax.set_xticks(range(K))
    ax.set_yticks(range(R))
    ax.set(xlabel="test task j", ylabel="after task i", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="accuracy (%)")
    return _save(fig, path)


def plot_routing_weights(weights: np.ndarray, path: str | Path) -> Path:
    """Mean routing weight per expert (columns) given by each test task's videos (rows).

    Grouped bars (one group per test task, one bar per expert) up to 8 experts, like
    the paper's Fig. 4; a heatmap beyond that, where bars would be unreadable.
    """
    W = np.atleast_2d(np.asarray(weights, dtype=float))
    if W.ndim != 2 or W.size == 0:
        raise ValueError(f"routing weights must be a non-empty (tasks, experts) array, got shape {W.shape}")
    T, E = W.shape
    if E <= _MAX_BAR_EXPERTS:
        fig = Figure(figsize=(_size(3.0, 0.25 * E, T, 12), 3.8))
        ax = fig.add_subplot()
        width = 0.8 / E
        for e in range(E):
            ax.bar(np.arange(T) + (e - (E - 1) / 2) * width, W[:, e], width, label=f"expert {e}")
        ax.set_xticks(range(T))
        ax.set(xlabel="test videos of task", ylabel="mean routing weight", ylim=(0, 1))
        # Below the axes: inside, it sat on the tallest bars.
        ax.legend(fontsize=7, ncol=min(E, 4), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    else:
        fig = Figure(figsize=(_size(2.5, 0.3, E, 12), _size(1.5, 0.35, T, 10)))
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(W), vmin=0, vmax=1, aspect="auto", cmap="magma")
        ax.set_xticks(range(E))
        ax.set_yticks(range(T))
        ax.set(xlabel="expert", ylabel="test videos of task")
        fig.colorbar(im, ax=ax, label="mean routing weight")
    # What a good router looks like, so the plot can be read without the paper.
    ideal = "bar of expert j tallest in group j" if E <= _MAX_BAR_EXPERTS else "a bright diagonal"
    ax.set_title(f"Routing weights per task\nideal: task j's videos go to expert j ({ideal})", fontsize=9)
    return _save(fig, path)


def plot_task_accuracy(A: np.ndarray, path: str | Path) -> Path:
    """One line per task: its accuracy (%) after each later task, from the task it was
    learned on. Forgetting shows as lines that fall; retention as lines that stay flat."""
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or A.size == 0:
        raise ValueError(f"accuracy matrix must be a non-empty 2-D array, got shape {A.shape}")
    R, K = A.shape
    fig = Figure(figsize=(_size(5.0, 0.15, K, 9.0), 3.8))
    ax = fig.add_subplot()
    for j in range(min(R, K)):
        ax.plot(np.arange(j, R), A[j:, j], marker="o", ms=3, label=f"task {j}")
    ax.set_xticks(range(R))
    ax.set(xlabel="after task", ylabel="accuracy on the task's test videos (%)", ylim=(-2, 102),
           xlim=(-0.3, max(R - 1, 1) + 0.3), title="Per-task accuracy over time (falling lines = forgetting)")
    ax.grid(alpha=0.3)
    if K <= 12:  # a legend of more entries hides the lines it labels
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return _save(fig, path)
