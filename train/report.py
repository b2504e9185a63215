"""What stpr-train prints when a run ends: the accuracy matrix, Acc and BWF, the head's
modes and what the run ran on, as plain text (metrics.json holds the same figures)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def format_report(metrics: dict[str, Any], run_dir: Path) -> str:
    """The accuracy matrix, Acc and BWF as a plain-text table."""
    A = metrics["accuracy_matrix"]
    K = metrics["num_tasks"]
    head = "after task | " + " ".join(f"{f'T{j}':>6}" for j in range(K))
    lines = ["Accuracy matrix (%), rows: after training task i, columns: test videos of task j", head,
             "-" * len(head)]
    for i, row in enumerate(A):
        cells = " ".join(f"{'' if v is None else f'{v:.1f}':>6}" for v in row)
        lines.append(f"{i:>10} | {cells}")
    bwf = metrics["bwf"]
    sp = metrics.get("spatial_only")
    lines += [
        "",
        f"Acc (class-weighted): {metrics['acc']:.2f}   Acc (pooled): {metrics['acc_pooled']:.2f}   "
        f"BWF: {'n/a' if bwf is None else f'{bwf:.2f}'}",
    ]
    if sp is not None:  # the torch-free head computes no frame-mean classifier (it needs text)
        lines.append(f"Frame mean alone (no experts): Acc {sp['acc']:.2f}")
    head = metrics.get("head", "none")
    if head != "none":
        lines.insert(0, f"Classifier: analytic head, mode {head} (docs/method.md)")
        tid = metrics.get("head_task_id_accuracy")
        if tid is not None:
            lines.append(f"Head task identification: {tid:.1f} % of test videos")
        others = {n: s for n, s in metrics.get("modes", {}).items() if n != head}
        if others:  # every mode is scored from the same run: they differ only at test time
            lines.append("Other modes, same run: " + "   ".join(
                f"{n} Acc {s['acc']:.2f}" + ("" if s["bwf"] is None else f" BWF {s['bwf']:.2f}")
                for n, s in others.items()))
    if head == "alone":  # StPR took no gradient step: its experts and router say nothing
        lines.append("StPR: not trained (head alone)")
    elif "oracle" in metrics:
        drift = metrics.get("drift")
        lines += [
            f"Router task identification: {metrics['task_id_accuracy']:.1f} % of test videos   "
            f"Oracle routing (analysis only): Acc {metrics['oracle']['acc']:.2f}",
            f"Old-task feature drift: {'n/a' if drift is None else f'{drift:.1f} %'} "
            "(mean relative change of their test-frame features since the end of their task)",
        ]
    if "tower" in metrics:  # the torch-free head: what it ran on
        t = metrics["tower"]
        lines.append(f"Tower: {Path(t['file']).name} (ONNX, D = {t['dim']}, {t['size']} px) on onnxruntime, "
                     "without torch")
    else:
        lines.append(f"Routing: {metrics['routing']}   Distillation: {metrics['distill']}   Head: {head}")
    lines.append(f"Run directory: {run_dir}  (metrics.json, checkpoints/, plots/, train.log)")
    return "\n".join(lines)
