"""What a run reports after each task: the evaluation counts so far (`History`, kept in
every checkpoint), `metrics.json` made from them and the plots beside it. The run is scored
by its configured classifier (the head's mode when there is a head), StPR's own numbers
beside it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stpr.runtime.atomic import atomic_write_json

from . import metrics as M
from . import plots
from .config import Config
from .learner_eval import EvalResult

if TYPE_CHECKING:
    from .run import Setup


@dataclass
class History:
    """Evaluation counts, one row per finished task (what metrics.json is made from)."""

    correct: list[list[int]] = field(default_factory=list)
    spatial_correct: list[list[int]] = field(default_factory=list)
    total: list[list[int]] = field(default_factory=list)
    routing: list[list[list[float]]] = field(default_factory=list)
    oracle_correct: list[list[int]] = field(default_factory=list)
    task_id_correct: list[list[int]] = field(default_factory=list)
    drift: list[list[float | None]] = field(default_factory=list)
    modes: list[dict[str, list[int]]] = field(default_factory=list)  # per task: 'stpr' and head modes
    head_task_id_correct: list[list[int]] = field(default_factory=list)

    def add(self, r: EvalResult) -> None:
        self.correct.append(r.correct)
        self.spatial_correct.append(r.spatial_correct)
        self.total.append(r.total)
        self.routing.append(r.routing)
        self.oracle_correct.append(r.oracle_correct)
        self.task_id_correct.append(r.task_id_correct)
        self.drift.append(r.drift)
        self.modes.append(r.modes)
        self.head_task_id_correct.append(r.head_task_id_correct)


def classifier_name(cfg: Config) -> str:
    """The classifier a run is scored by, as train.log and the report name it."""
    return "StPR" if cfg.head.mode == "none" else f"analytic head, mode {cfg.head.mode}"


def scored_counts(cfg: Config, stpr_correct: list[int], modes: dict[str, list[int]]) -> list[int]:
    """Correct test clips per task of the classifier the run is scored by: the head's mode
    when there is a head (StPR's own counts, untrained under the head alone, say nothing then)."""
    return modes.get(cfg.head.mode, stpr_correct) if cfg.head.mode != "none" else stpr_correct


def metrics_from_history(s: Setup, h: History) -> dict[str, Any]:
    K = len(s.tasks)
    sizes = [len(t) for t in s.tasks]
    R = len(h.correct)

    def pad(rows: list[list[int]]) -> np.ndarray:
        return M.pad_rows(rows, K)

    total = pad(h.total)
    out = M.summary(pad(h.correct), total, sizes)
    out["spatial_only"] = M.summary(pad(h.spatial_correct), total, sizes)
    if len(h.oracle_correct) == R:  # runs from before these metrics existed lack them
        out["oracle"] = M.summary(pad(h.oracle_correct), total, sizes)
        tid = M.accuracy_matrix(pad(h.task_id_correct), total)
        out["task_id_matrix"] = M.json_matrix(tid)
        out["task_id_accuracy"] = M.pooled_accuracy(pad(h.task_id_correct)[-1, :R], total[-1, :R])
    if len(h.drift) == R:  # measured after the last task only (None before it)
        out["drift_per_task"] = h.drift[-1]
        old = [d for d in h.drift[-1][: R - 1] if d is not None]
        out["drift"] = float(np.mean(old)) if old else None  # mean over old tasks, end of run
    if h.modes and len(h.modes) == R and h.modes[-1]:
        out["modes"] = {name: M.summary(pad([row[name] for row in h.modes]), total, sizes)
                        for name in h.modes[-1]}
        if any(h.head_task_id_correct):
            out["head_task_id_accuracy"] = M.pooled_accuracy(pad(h.head_task_id_correct)[-1, :R], total[-1, :R])
    head_mode = s.cfg.head.mode
    out["correct"], out["total"] = h.correct, h.total
    if head_mode != "none" and "modes" in out:
        # The run's numbers are the configured classifier's; StPR's own stay beside them.
        out["stpr"] = {k: out[k] for k in ("accuracy_matrix", "acc", "acc_pooled", "bwf", "acc_curve", "correct")}
        out.update(out["modes"][head_mode])
        out["correct"] = [scored_counts(s.cfg, row, modes) for row, modes in zip(h.correct, h.modes)]
    out["head"] = head_mode
    out["routing_weights"] = h.routing[-1]
    out["routing_weights_per_task"] = h.routing
    out["routing"] = s.cfg.method.routing
    out["distill"] = s.cfg.method.distill
    fields = M.protocol_fields(s.splits.classes, s.tasks, h.correct, h.total)
    fields["correct"] = out["correct"]  # the scored classifier's counts (above), not StPR's own
    out.update(fields)
    return out


def write_outputs(run_dir: Path, s: Setup, h: History) -> dict[str, Any]:
    metrics = metrics_from_history(s, h)
    atomic_write_json(run_dir / "metrics.json", metrics)
    A = np.array([[np.nan if v is None else v for v in row] for row in metrics["accuracy_matrix"]], dtype=float)
    head = s.cfg.head.mode
    curves = {f"analytic head ({head})" if head != "none" else f"StPR (routing={s.cfg.method.routing})":
              metrics["acc_curve"]}
    if "stpr" in metrics and head != "alone":  # StPR trained beside the head: its own curve
        curves[f"StPR (routing={s.cfg.method.routing})"] = metrics["stpr"]["acc_curve"]
    curves["frame mean only"] = metrics["spatial_only"]["acc_curve"]
    if "oracle" in metrics and head != "alone":
        curves["oracle routing (analysis only)"] = metrics["oracle"]["acc_curve"]
    plots.plot_accuracy_curve(curves, run_dir / "plots" / "accuracy_over_tasks.png")
    plots.plot_task_accuracy(A, run_dir / "plots" / "task_accuracy_over_time.png")
    plots.plot_accuracy_matrix(A, run_dir / "plots" / "accuracy_matrix.png")
    plots.plot_routing_weights(np.array(metrics["routing_weights"]), run_dir / "plots" / "routing_weights.png")
    return metrics
