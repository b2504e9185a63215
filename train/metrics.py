"""Continual-learning metrics over an accuracy matrix (docs/method.md, "Training and evaluation").

Pure functions in the Mammoth style: they never mutate their input. Accuracies are
percentages (0-100). The matrix `A` has shape `(R, K)`: R tasks finished so far out
of K; `A[i, j]` is the top-1 accuracy on task j's test videos after training task i,
defined for j <= i and NaN above the diagonal.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def _check(A: np.ndarray) -> np.ndarray:
    """Validate an accuracy matrix and return it as a float array (never a mutated input)."""
    A = np.asarray(A, dtype=float)
    if A.ndim != 2:
        raise ValueError(f"accuracy matrix must be 2-D (tasks done x tasks), got shape {A.shape}")
    R, K = A.shape
    if R > K or R == 0:
        raise ValueError(f"accuracy matrix has {R} rows for {K} tasks; need 1 <= rows <= tasks")
    lower = np.tril(np.ones((R, K), dtype=bool))
    if np.isnan(A[lower]).any():
        i, j = np.argwhere(np.isnan(A) & lower)[0]
        raise ValueError(f"accuracy matrix has NaN at [{i}, {j}], on or below the diagonal")
    return A


def _row_index(R: int, row: int) -> int:
    # Python-style negative rows are handy (-1 = latest), but an out-of-range row must
    # not silently wrap around to some other task.
    if not -R <= row < R:
        raise ValueError(f"row {row} out of range for an accuracy matrix with {R} rows")
    return row % R


def _class_weights(classes_per_task: Sequence[int], n: int) -> np.ndarray:
    w = np.asarray(list(classes_per_task)[:n], dtype=float)
    if len(w) != n or (w <= 0).any():
        raise ValueError(
            f"classes_per_task {list(classes_per_task)} must give a positive count for tasks 0..{n - 1}")
    return w


def accuracy_matrix(correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Count matrices `(R, K)` -> percentages with NaN above the diagonal.

    Entries above the diagonal are ignored: a task not yet trained has no accuracy.
    """
    correct, total = np.asarray(correct, dtype=float), np.asarray(total, dtype=float)
    if correct.ndim != 2 or correct.shape != total.shape:
        raise ValueError(f"correct {correct.shape} and total {total.shape} must be the same 2-D shape")
    R, K = correct.shape
    if R > K or R == 0:
        raise ValueError(f"count matrices have {R} rows for {K} tasks; need 1 <= rows <= tasks")
    A = np.full((R, K), np.nan)
    for i in range(R):
        for j in range(i + 1):
            c, t = correct[i, j], total[i, j]
            if not t > 0:  # also catches NaN
                raise ValueError(f"task {j} has no test videos (total {t:g} after task {i})")
            if not 0 <= c <= t:
                raise ValueError(f"task {j} after task {i}: correct {c:g} not within 0..total {t:g}")
            A[i, j] = 100.0 * c / t
    return A


def class_weighted_accuracy(A: np.ndarray, classes_per_task: Sequence[int], row: int = -1) -> float:
    """vCLIMB's Acc after task `row`: mean of `A[row, j]` over seen tasks j <= row,
    weighted by each task's class count (so a 1-class task counts less than a 10-class one).
    """
    A = _check(A)
    i = _row_index(A.shape[0], row)
    w = _class_weights(classes_per_task, i + 1)
    return float((A[i, : i + 1] * w).sum() / w.sum())


def pooled_accuracy(correct_row: Sequence[int], total_row: Sequence[int]) -> float:
    """Accuracy over every test video of the seen tasks pooled together (weights by video count)."""
    c = np.asarray(list(correct_row), dtype=float)
    t = np.asarray(list(total_row), dtype=float)
    if c.shape != t.shape or c.ndim != 1:
        raise ValueError(f"correct_row ({c.size}) and total_row ({t.size}) must be 1-D of equal length")
    if (c < 0).any() or (c > t).any():
        raise ValueError("pooled accuracy needs 0 <= correct <= total for every task")
    if not t.sum() > 0:
        raise ValueError("pooled accuracy needs at least one test video")
    return float(100.0 * c.sum() / t.sum())


def backward_forgetting(A: np.ndarray) -> float | None:
    """BWF = 1/(R-1) * sum_{j<R-1} (A[j, j] - A[R-1, j]) on the last row given.

    Positive = forgetting. None with a single row: nothing can have been forgotten yet
    (written as JSON null).
    """
    A = _check(A)
    R = A.shape[0]
    if R == 1:
        return None
    j = np.arange(R - 1)
    return float(np.mean(A[j, j] - A[R - 1, j]))


def accuracy_curve(A: np.ndarray, classes_per_task: Sequence[int]) -> list[float]:
    """Class-weighted accuracy after each task (one value per row): the paper's Fig. 3 curve."""
    A = _check(A)
    return [class_weighted_accuracy(A, classes_per_task, row=i) for i in range(A.shape[0])]


def json_matrix(A: np.ndarray) -> list[list[float | None]]:
    # JSON has no NaN; undefined cells (above the diagonal) become null.
    return [[None if math.isnan(v) else float(v) for v in row] for row in A]


def pad_rows(rows: Sequence[Sequence[int]], num_tasks: int) -> np.ndarray:
    """Per finished task, counts for the tasks seen so far -> an `(R, K)` int matrix, 0 above the diagonal."""
    a = np.zeros((len(rows), num_tasks), dtype=np.int64)
    for i, row in enumerate(rows):
        a[i, : len(row)] = row
    return a


def protocol_fields(classes: Sequence[str], tasks: Sequence[Sequence[int]], correct: list[list[int]],
                    total: list[list[int]]) -> dict[str, Any]:
    """metrics.json's record of the protocol: class names (in learning order), tasks, raw counts."""
    return {"classes": [classes[c] for t in tasks for c in t], "tasks": [[classes[c] for c in t] for t in tasks],
            "classes_per_task": [len(t) for t in tasks], "correct": correct, "total": total,
            "finished_tasks": len(correct), "num_tasks": len(tasks)}


def summary(correct: np.ndarray, total: np.ndarray, classes_per_task: Sequence[int]) -> dict[str, Any]:
    """JSON-ready metrics from count matrices `(R, K)`: plain floats/lists, None for undefined."""
    A = accuracy_matrix(correct, total)
    last = A.shape[0] - 1
    c, t = np.asarray(correct), np.asarray(total)
    return {
        "accuracy_matrix": json_matrix(A),
        "acc": class_weighted_accuracy(A, classes_per_task),
        "acc_pooled": pooled_accuracy(c[last, : last + 1], t[last, : last + 1]),
        "bwf": backward_forgetting(A),
        "acc_curve": accuracy_curve(A, classes_per_task),
    }
