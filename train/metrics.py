"""Continual-learning metrics over an accuracy matrix (METHOD.md sec. 8).

Pure functions: they never mutate their input. Accuracies are percentages. The
matrix `A` has shape `(R, K)`: R tasks finished so far out of K; `A[i, j]` is the
top-1 accuracy on task j's test videos after training task i, defined for j <= i
and NaN above the diagonal.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def _check(A: np.ndarray) -> np.ndarray:
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


def accuracy_matrix(correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Counts `(R, K)` -> percentages with NaN above the diagonal."""
    correct, total = np.asarray(correct, dtype=float), np.asarray(total, dtype=float)
    if correct.shape != total.shape or correct.ndim != 2:
        raise ValueError(f"correct {correct.shape} and total {total.shape} must be the same 2-D shape")
    R, K = correct.shape
    A = np.full((R, K), np.nan)
    for i in range(R):
        for j in range(i + 1):
            if total[i, j] <= 0:
                raise ValueError(f"task {j} has no test videos (total 0 after task {i})")
            A[i, j] = 100.0 * correct[i, j] / total[i, j]
    return _check(A)


def class_weighted_accuracy(A: np.ndarray, classes_per_task: Sequence[int], row: int = -1) -> float:
    """vCLIMB's Acc: mean of `A[row, j]` over seen tasks, weighted by their class counts."""
    A = _check(A)
    i = row % A.shape[0]
    w = np.asarray(classes_per_task[: i + 1], dtype=float)
    if len(w) != i + 1 or (w <= 0).any():
        raise ValueError(f"classes_per_task {list(classes_per_task)} must give a positive count for tasks 0..{i}")
    return float((A[i, : i + 1] * w).sum() / w.sum())


def pooled_accuracy(correct_row: Sequence[int], total_row: Sequence[int]) -> float:
    """Accuracy over every test video of the seen tasks pooled together."""
    total = float(sum(total_row))
    if total <= 0:
        raise ValueError("pooled accuracy needs at least one test video")
    return 100.0 * float(sum(correct_row)) / total


def backward_forgetting(A: np.ndarray) -> float | None:
    """BWF = mean over earlier tasks of (accuracy just after learning it - accuracy now).

    Uses the last row given; None with a single row (nothing to forget yet).
    """
    A = _check(A)
    R = A.shape[0]
    if R == 1:
        return None
    return float(np.mean([A[j, j] - A[R - 1, j] for j in range(R - 1)]))


def accuracy_curve(A: np.ndarray, classes_per_task: Sequence[int]) -> list[float]:
    """Class-weighted accuracy after each task: the paper's Fig. 3 curve."""
    A = _check(A)
    return [class_weighted_accuracy(A, classes_per_task, row=i) for i in range(A.shape[0])]


def _json_matrix(A: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in A]


def summary(correct: np.ndarray, total: np.ndarray, classes_per_task: Sequence[int]) -> dict[str, Any]:
    """JSON-ready metrics from count matrices `(R, K)` (no NaN: undefined -> None)."""
    A = accuracy_matrix(correct, total)
    last = A.shape[0] - 1
    return {
        "accuracy_matrix": _json_matrix(A),
        "acc": class_weighted_accuracy(A, classes_per_task),
        "acc_pooled": pooled_accuracy(np.asarray(correct)[last, : last + 1], np.asarray(total)[last, : last + 1]),
        "bwf": backward_forgetting(A),
        "acc_curve": accuracy_curve(A, classes_per_task),
    }
