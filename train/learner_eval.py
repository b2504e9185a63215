"""Scoring the learner after a task: top-1 of every seen task's test clips among all seen
classes, for StPR and each head mode, with the analyses beside it (oracle routing, the
router's and the head's task identification, routing weights, feature drift)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import torch
from torch import nn

from . import distributed as dist
from .config import routing_tau
from .learner_head import head_modes, head_window
from .model.analytic import mode_probabilities, own_expert_logits
from .model.text import cosine_logits

if TYPE_CHECKING:
    from .learner import StPRLearner

EVAL_COUNTERS = ("correct", "spatial_correct", "total", "oracle_correct", "task_id_correct")  # summed over ranks


@dataclass
class EvalResult:
    """Counts after one task, for tasks 0..k (lists indexed by task)."""

    correct: list[int] = field(default_factory=list)
    spatial_correct: list[int] = field(default_factory=list)  # frame mean alone (fbar)
    total: list[int] = field(default_factory=list)
    routing: list[list[float]] = field(default_factory=list)  # mean weight per expert, per test task
    oracle_correct: list[int] = field(default_factory=list)  # routed to the true task's expert (analysis)
    task_id_correct: list[int] = field(default_factory=list)  # top-weighted expert == true task
    drift: list[float | None] = field(default_factory=list)  # relative change (%) of the task's test-frame
    # features since the end of its own task; None where no reference adapters were given
    modes: dict[str, list[int]] = field(default_factory=dict)  # correct per task for 'stpr' and each head mode
    head_task_id_correct: list[int] = field(default_factory=list)  # the head's top class is in the true task


@torch.no_grad()
def evaluate(
    learner: "StPRLearner", loaders: Sequence[Iterable[tuple[torch.Tensor, torch.Tensor]]],
    reference_adapters: Sequence[nn.ModuleList] = (),
) -> EvalResult:
    """Top-1 over every seen class, for the test videos of each seen task.

    Also counts the oracle (true task's expert), the router's task identification and,
    for task j < len(reference_adapters), the drift of its frame features from the
    adapters as they were at the end of task j.
    """
    m, meth = learner.model, learner.cfg.method
    m.eval()
    res = EvalResult()
    for j, loader in enumerate(loaders):
        n = dict.fromkeys(EVAL_COUNTERS, 0)  # this rank's counts, by EvalResult field
        wsum = torch.zeros(m.num_experts, dtype=torch.float64)
        drift = torch.zeros(2, dtype=torch.float64)  # sum of relative changes, frames
        modes = head_modes(learner.cfg, learner.head)
        mode_n = torch.zeros(len(modes) + 1, dtype=torch.float64)  # correct per mode, head task id
        ref = reference_adapters[j] if j < len(reference_adapters) else None
        for frames, labels in loader:
            frames, labels = frames.to(learner.device), labels.to(learner.device)
            task_ids = m.class_to_expert[labels]
            with learner.autocast():
                feats = m.frame_features(frames)  # (B, T, D)
                out = m.classify_features(feats, meth.routing, routing_tau(meth), task_ids, frames=frames)
                z_true = out["z"][torch.arange(len(labels), device=labels.device), task_ids]  # (B, D)
                oracle = cosine_logits(out["fbar"] + z_true, m.text_embeddings, m.logit_scale)
                if ref is not None:
                    old = m.frame_features(frames, adapters=ref).float()
                    rel = (feats.float() - old).norm(dim=-1) / old.norm(dim=-1).clamp_min(1e-12)
                    drift += torch.tensor([float(rel.sum()), rel.numel()], dtype=torch.float64)
            n["correct"] += int((out["logits"].argmax(1) == labels).sum())
            n["spatial_correct"] += int((out["spatial_logits"].argmax(1) == labels).sum())
            n["total"] += len(labels)
            n["oracle_correct"] += int((oracle.argmax(1) == labels).sum())
            n["task_id_correct"] += int((out["weights"].argmax(1) == task_ids).sum())
            wsum += out["weights"].double().sum(0).cpu()
            mode_n += _mode_counts(learner, frames, feats, out, labels, task_ids, modes)
        dist.all_reduce_sum(mode_n)
        for name, c in zip(modes, mode_n.tolist()):
            res.modes.setdefault(name, []).append(int(c))
        if learner.head is not None:
            res.head_task_id_correct.append(int(mode_n[-1]))
        summed = dist.all_reduce_sum(torch.tensor([n[k] for k in EVAL_COUNTERS], dtype=torch.float64))
        for key, count in zip(EVAL_COUNTERS, summed.tolist()):
            getattr(res, key).append(int(count))
        dist.all_reduce_sum(wsum)
        dist.all_reduce_sum(drift)
        res.routing.append((wsum / max(res.total[-1], 1)).tolist())
        res.drift.append(100.0 * float(drift[0] / drift[1]) if ref is not None and drift[1] > 0 else None)
    return res


def _mode_counts(learner: "StPRLearner", frames: torch.Tensor, feats: torch.Tensor, out: dict[str, torch.Tensor],
                 labels: torch.Tensor, task_ids: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """Correct top-1 per entry of `modes` on one batch, then the head's task identification."""
    m, h = learner.model, learner.cfg.head
    counts = []
    scores = None
    if learner.head is not None:
        with learner.autocast():
            window = head_window(learner, frames, feats)
        scores = learner.head.scores(window)  # (B, C)
    own = None
    if any(name.startswith("route") for name in modes):
        own = own_expert_logits(fbar=out["fbar"].float(), z=out["z"].float(), text=m.text_embeddings,
                                class_to_expert=m.class_to_expert, logit_scale=m.logit_scale)
    for name in modes:
        if name == "stpr":
            pred = out["logits"].argmax(1)
        else:
            pred = mode_probabilities(name, scores=scores, class_to_expert=m.class_to_expert,
                                      num_tasks=m.num_experts, tau=h.tau, own_logits=own,
                                      stpr_logits=out["logits"].float(), fuse_weight=h.fuse_weight).argmax(1)
        counts.append(int((pred == labels).sum()))
    tid = 0 if scores is None else int((m.class_to_expert[scores.argmax(1)] == task_ids).sum())
    return torch.tensor(counts + [tid], dtype=torch.float64)
