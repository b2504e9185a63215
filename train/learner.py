"""The StPR continual learner: Mammoth-style lifecycle hooks around the model.

`begin_task` adds the task's classes and expert and freezes a teacher copy of the
adapters; `observe` is one SGD step of `L_st + L_sp + lambda * L_fssd` (Eq. 16);
`end_task` builds the task's anchors and prototypes and folds its FSSD importance
into the distillation weight; `evaluate` scores every seen task among all seen
classes. Nothing of a task's data outlives its `end_task`.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stpr.runtime.sampling import CROPS, crop_view

from . import distributed as dist
from .analytic_fit import AnalyticHead
from .analytic_fit_numpy import clip_key
from .config import Config, routing_tau
from .fssd import ClassFrameStats, FSSDWeights, channel_importance, fssd_loss
from .losses import contrastive_loss
from .model.analytic import mode_probabilities, own_expert_logits
from .model.router import td_class_means, td_distance_scores
from .model.stpr import StPRModel
from .model.text import cosine_logits, encode_class_names
from .seed import HEAD_SEED_SALT, derive_seed

log = logging.getLogger(__name__)


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


def head_seed(cfg: Config) -> int:
    """The seed of the head's random projection: from the run's seed, like every random choice."""
    return derive_seed(cfg.seed, HEAD_SEED_SALT)


class _TrainStep(nn.Module):
    """The loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, learner: "StPRLearner") -> None:
        super().__init__()
        self.model = learner.model  # registers the trainable parameters
        self._learner = [learner]  # a list: not a submodule

    def forward(self, frames: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._learner[0].losses(frames, labels)


class StPRLearner:
    def __init__(self, model: StPRModel, clip_model: nn.Module, cfg: Config, device: torch.device) -> None:
        self.model = model.to(device)
        self.clip_model = clip_model.to(device)  # frozen; its text tower encodes class names
        self.cfg = cfg
        self.device = device
        self.fssd = FSSDWeights(model.dim)
        self.teacher: nn.ModuleList | None = None
        self.task = -1
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        h = cfg.head
        self.head: AnalyticHead | None = None
        if h.mode != "none":
            self.head = AnalyticHead(in_dim=model.num_frames * model.dim, dim=h.dim, seed=head_seed(cfg),
                                     balance=h.balance, ridge=h.ridge)
        self.head_adapters: nn.ModuleList | None = None  # tower 'adapted': the adapters after the base task

    def trains_stpr(self, task: int) -> bool:
        """Whether task `task` takes gradient steps. The head alone needs none, except on the
        base task when its tower is the adapted one (the adapters are trained there, then kept)."""
        h = self.cfg.head
        return h.mode != "alone" or (h.tower == "adapted" and task == 0)

    def head_modes(self) -> tuple[str, ...]:
        """What `evaluate` can score: StPR and every head mode, or the head alone when StPR is
        not trained."""
        if self.head is None:
            return ("stpr",)
        if self.cfg.head.mode == "alone":
            return ("alone",)
        return ("stpr", "alone", "route-hard", "route-soft", "fuse")

    def head_window(self, frames: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """The head's tower's frame features `(B, T, D)`: frozen CLIP, or the adapters as the
        base task left them (the current ones while they still are)."""
        if self.cfg.head.mode == "alone":
            # No gradient step after the base task (tower adapted) or at all (tower frozen: the
            # adapters keep their zero up projection, so the adapted tower is CLIP's, exactly):
            # the features already computed are the head's, no second tower pass.
            return feats.float()
        if self.cfg.head.tower == "frozen":
            return self.model.frame_features(frames, adapters=False).float()
        if self.head_adapters is None:
            return feats.float()  # the base task: its adapters are the ones the head keeps
        return self.model.frame_features(frames, adapters=self.head_adapters).float()

    # ------------------------------------------------------------------ lifecycle
    def begin_task(self, task: int, class_names: Sequence[str], steps: int) -> None:
        """Add task `task`'s classes and expert; set up the teacher and optimiser."""
        cfg, m = self.cfg, self.model
        text = encode_class_names(self.clip_model, cfg.model.name, class_names, cfg.model.templates)
        k = m.add_task(text, init_from_previous=cfg.model.expert_init == "previous")
        assert k == task, f"learner out of step: expert {k} for task {task}"
        self.task = task
        # Earlier experts are frozen; only the adapters and expert k learn.
        for i, expert in enumerate(m.experts):
            expert.requires_grad_(i == task)
        if task > 0 and cfg.method.distill != "none":
            self.teacher = copy.deepcopy(m.backbone.adapters).eval().requires_grad_(False)
        else:
            self.teacher = None
        params = list(m.backbone.adapters.parameters()) + list(m.experts[task].parameters())
        o = cfg.optim
        if o.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(o.momentum, 0.999), weight_decay=o.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        total = max(1, steps)
        if o.schedule == "cosine":
            lr_at = lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total))  # noqa: E731
        else:
            lr_at = lambda s: 1.0  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_at)
        self.step_module: nn.Module = _TrainStep(self)
        if dist.world_size() > 1:  # built per task: which parameters train changes
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.step_module, device_ids=ids)

    def autocast(self) -> "torch.autocast":
        """bf16 autocast for the frozen tower's matmuls on GPU (optim.amp); fp32 on CPU by default."""
        amp = self.cfg.optim.amp
        enabled = amp == "bf16" or (amp == "auto" and self.device.type == "cuda")
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def distill_weight(self) -> torch.Tensor:
        if self.cfg.method.distill == "uniform":
            return torch.ones(self.model.dim, device=self.device)
        return self.fssd.weight.to(self.device, torch.float32)

    def losses(self, frames: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three terms of Eq. 16 on one batch of task `self.task`."""
        m, meth = self.model, self.cfg.method
        feats = m.frame_features(frames)  # (B, T, D)
        fbar = feats.mean(1)  # (B, D)
        v = fbar + m.experts[self.task](feats)  # training: task id known, v = fbar + z_k
        # The contrastive terms are batch-level (t2v ranks videos per text): under
        # torchrun they see the global batch, gathered with gradients.
        v_all, fbar_all = dist.gather_with_grad(v), dist.gather_with_grad(fbar)
        text, targets = self._text_candidates(dist.gather(labels))
        out = {
            "st": contrastive_loss(v_all, text, targets, m.logit_scale),
            "sp": contrastive_loss(fbar_all, text, targets, m.logit_scale),
        }
        if self.teacher is not None:
            with torch.no_grad():  # the teacher's features need no graph
                old = m.frame_features(frames, adapters=self.teacher)
            out["fssd"] = fssd_loss(feats, old, self.distill_weight())
        out["total"] = out["st"] + out["sp"] + meth.lambda_fssd * out.get("fssd", torch.zeros((), device=v.device))
        return out

    def _text_candidates(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.model.text_embeddings
        if self.cfg.method.text_candidates == "seen":
            return text, labels
        present, targets = torch.unique(labels, return_inverse=True)
        return text[present], targets

    def observe(self, frames: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One optimisation step; returns the loss terms as floats."""
        self.model.train()
        frames, labels = frames.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        with self.autocast():
            out = self.step_module(frames, labels)
        self.optimizer.zero_grad(set_to_none=True)
        out["total"].backward()
        self.optimizer.step()
        self.scheduler.step()
        return {k: float(v.detach()) for k, v in out.items()}

    @torch.no_grad()
    def end_task(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 head_views: Iterable[tuple[torch.Tensor, ...]] | None = None) -> None:
        """Anchors, prototypes and FSSD importance from task-k training videos (test sampling).
        `head_views` (`head.views`, `data.tasks.HeadViews`): the head's rows come from these
        temporal views of the same clips instead of from `batches`."""
        m, k = self.model, self.task
        m.eval()
        if self.head is not None and self.cfg.head.tower == "adapted" and k == 0:
            self.head_adapters = copy.deepcopy(m.backbone.adapters).eval().requires_grad_(False)
        cls = (m.class_to_expert == k).nonzero().flatten()  # global ids of task k
        first, n = int(cls[0]), len(cls)
        stats = ClassFrameStats(n, m.dim)
        sums = {name: torch.zeros(n, m.dim, dtype=torch.float64) for name in ("td", "clip", "adapter")}
        videos = torch.zeros(n, dtype=torch.float64)  # per class
        residuals, locals_ = [], []  # this rank's d_k per video and its class, for the spreads
        # this rank's h per clip (crops after their batch): dropped when end_task returns
        head_rows, head_labels, head_keys, head_primary = [], [], [], []
        for frames, labels in batches:
            if self.head is not None:  # the lambda rule's holdout is drawn by the frames' hash (clip_key)
                keys = torch.tensor([clip_key(f) for f in frames.cpu().numpy()], dtype=torch.int64)
            frames, local = frames.to(self.device), labels.to(self.device) - first
            with self.autocast():
                feats = m.frame_features(frames).float()  # (B, T, D)
                fbar = feats.mean(1)
                d = m.experts[k](feats).float() - fbar  # (B, D) temporal dynamics of expert k (Eq. 10)
                clip_mean = m.frame_features(frames, adapters=False).float().mean(1)
            for name, x in (("td", d), ("clip", clip_mean), ("adapter", fbar)):
                sums[name].index_add_(0, local.cpu(), x.double().cpu())
            stats.update(feats, local)
            videos.index_add_(0, local.cpu(), torch.ones(len(local), dtype=torch.float64))
            residuals.append(d.double().cpu())
            locals_.append(local.cpu())
            if self.head is not None and head_views is None:
                with self.autocast():  # the tower in bf16 on GPU; the projection stays float32
                    window = self.head_window(frames, feats)
                self._head_rows(frames, window, labels, keys, torch.ones(len(labels), dtype=torch.bool), head_rows,
                                head_labels, head_keys, head_primary)
        for frames, labels, keys, own in (head_views if self.head is not None and head_views is not None else ()):
            frames = frames.to(self.device)
            with self.autocast():
                window = self.head_window(frames, m.frame_features(frames).float())
            self._head_rows(frames, window, labels, keys.to(torch.int64), own, head_rows, head_labels, head_keys,
                            head_primary)
        for t in (stats.sum, stats.sumsq, stats.count, videos, *sums.values()):
            dist.all_reduce_sum(t)  # each rank saw a shard: sums make the whole task
        self.calibrate_router(sums["td"], videos, torch.cat(residuals), torch.cat(locals_))
        self.finish_task_statistics(stats, sums)
        if self.head is not None:
            self.head.add_task(torch.cat(head_rows), torch.cat(head_labels), m.num_classes, torch.cat(head_keys),
                               torch.cat(head_primary))

    def _head_rows(self, frames: torch.Tensor, window: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor,
                   own: torch.Tensor, rows: list[torch.Tensor], labels_out: list[torch.Tensor],
                   keys_out: list[torch.Tensor], primary: list[torch.Tensor]) -> None:
        """The head's rows of a batch: each clip's (or view's) own, then its crops' (`head.crops`)."""
        rows.append(self.head.features(window).cpu())
        labels_out.append(labels.cpu())
        keys_out.append(keys)
        primary.append(own.cpu().bool())
        self._crop_rows(frames, labels, keys, rows, labels_out, keys_out, primary)

    def _crop_rows(self, frames: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor, rows: list[torch.Tensor],
                   labels_out: list[torch.Tensor], keys_out: list[torch.Tensor], primary: list[torch.Tensor]) -> None:
        """`head.crops`: the head rows of each crop of the clips' frames, with the device's
        crop function (`runtime/sampling.py`), so `stpr-learn --crops` reads what training read.
        A crop row carries its clip's key and is not primary: the lambda rule leaves it out."""
        for box in CROPS[self.cfg.head.crops][1:]:
            x = frames.float().cpu().numpy()
            cropped = torch.from_numpy(np.stack([crop_view(clip, box) for clip in x])).to(frames.device)
            with self.autocast():
                window = self.head_window(cropped, self.model.frame_features(cropped).float())
            rows.append(self.head.features(window).cpu())
            labels_out.append(labels.cpu())
            keys_out.append(keys)
            primary.append(torch.zeros(len(labels), dtype=torch.bool))

    def calibrate_router(self, class_sums: torch.Tensor, videos: torch.Tensor, residuals: torch.Tensor,
                         labels: torch.Tensor) -> None:
        """Expert k's calibrated td statistics: centre, class means, within-class spread
        per channel, and the mean and spread of its own-task scores.

        Only these per-expert statistics are kept; `residuals` (this rank's own-task
        videos' d_k, with their task-local `labels`) are dropped when this returns.
        """
        m, k = self.model, self.task
        cls = (m.class_to_expert == k).nonzero().flatten()
        center, means = td_class_means(class_sums, videos)
        dc = residuals - center  # (N_rank, D)
        within = dist.all_reduce_sum(((dc - means[labels]) ** 2).sum(0))  # (D,)
        var = within / videos.sum().clamp_min(1)
        var = var + 1e-3 * var.mean() + 1e-12  # a channel that never varies must not dominate
        owner = torch.zeros(len(cls), dtype=torch.long)
        scores = td_distance_scores(dc.unsqueeze(1), means=means, class_to_expert=owner,
                                    var=var.unsqueeze(0))[:, 0]  # (N_rank,)
        acc = dist.all_reduce_sum(torch.stack([scores.sum(), (scores * scores).sum(),
                                               torch.tensor(float(len(scores)), dtype=torch.float64)]))
        mean = acc[0] / acc[2]
        std = (acc[1] / acc[2] - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
        dev = m.td_anchors.device
        m.td_anchors[cls] = means.float().to(dev)
        m.td_center[k] = center.float().to(dev)
        m.td_var[k] = var.float().to(dev)
        m.td_score_mean[k] = mean.float().to(dev)
        m.td_score_std[k] = std.float().to(dev)

    def finish_task_statistics(self, stats: ClassFrameStats, sums: dict[str, torch.Tensor]) -> None:
        """Turn the per-class sums into anchors/prototypes and FSSD weights.

        Separate from the pass over data so DDP can all-reduce the sums in between.
        """
        m, k = self.model, self.task
        cls = (m.class_to_expert == k).nonzero().flatten()
        mean, var = stats.mean_var()  # raises if a class had no frames
        dev = m.td_raw_anchors.device
        for name, buf in (("td", "td_raw_anchors"), ("clip", "proto_clip"), ("adapter", "proto_adapter")):
            # mu_c = normalize(mean_x d_k(x)): the mean's direction is all a cosine needs.
            getattr(m, buf)[cls] = F.normalize(sums[name], dim=-1).float().to(dev)
        omega = channel_importance(mean, var, m.text_embeddings[cls].double().cpu(), self.cfg.method.fssd_eps)
        self.fssd.add(omega)
        self.teacher = None

    @torch.no_grad()
    def evaluate(
        self, loaders: Sequence[Iterable[tuple[torch.Tensor, torch.Tensor]]],
        reference_adapters: Sequence[nn.ModuleList] = (),
    ) -> EvalResult:
        """Top-1 over every seen class, for the test videos of each seen task.

        Also counts the oracle (true task's expert), the router's task identification and,
        for task j < len(reference_adapters), the drift of its frame features from the
        adapters as they were at the end of task j.
        """
        m, meth = self.model, self.cfg.method
        m.eval()
        res = EvalResult()
        for j, loader in enumerate(loaders):
            n = dict.fromkeys(EVAL_COUNTERS, 0)  # this rank's counts, by EvalResult field
            wsum = torch.zeros(m.num_experts, dtype=torch.float64)
            drift = torch.zeros(2, dtype=torch.float64)  # sum of relative changes, frames
            modes = self.head_modes()
            mode_n = torch.zeros(len(modes) + 1, dtype=torch.float64)  # correct per mode, head task id
            ref = reference_adapters[j] if j < len(reference_adapters) else None
            for frames, labels in loader:
                frames, labels = frames.to(self.device), labels.to(self.device)
                task_ids = m.class_to_expert[labels]
                with self.autocast():
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
                mode_n += self._mode_counts(frames, feats, out, labels, task_ids, modes)
            dist.all_reduce_sum(mode_n)
            for name, c in zip(modes, mode_n.tolist()):
                res.modes.setdefault(name, []).append(int(c))
            if self.head is not None:
                res.head_task_id_correct.append(int(mode_n[-1]))
            summed = dist.all_reduce_sum(torch.tensor([n[k] for k in EVAL_COUNTERS], dtype=torch.float64))
            for key, count in zip(EVAL_COUNTERS, summed.tolist()):
                getattr(res, key).append(int(count))
            dist.all_reduce_sum(wsum)
            dist.all_reduce_sum(drift)
            res.routing.append((wsum / max(res.total[-1], 1)).tolist())
            res.drift.append(100.0 * float(drift[0] / drift[1]) if ref is not None and drift[1] > 0 else None)
        return res

    def _mode_counts(self, frames: torch.Tensor, feats: torch.Tensor, out: dict[str, torch.Tensor],
                     labels: torch.Tensor, task_ids: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
        """Correct top-1 per entry of `modes` on one batch, then the head's task identification."""
        m, h = self.model, self.cfg.head
        counts = []
        scores = None
        if self.head is not None:
            with self.autocast():
                window = self.head_window(frames, feats)
            scores = self.head.scores(window)  # (B, C)
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

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        m = self.model
        return {
            "adapters": m.backbone.adapters.state_dict(),
            "experts": [e.state_dict() for e in m.experts],
            "text_embeddings": m.text_embeddings.cpu(),
            "class_to_expert": m.class_to_expert.cpu(),
            "td_raw_anchors": m.td_raw_anchors.cpu(),
            "td_anchors": m.td_anchors.cpu(),
            "td_center": m.td_center.cpu(),
            "td_var": m.td_var.cpu(),
            "td_score_mean": m.td_score_mean.cpu(),
            "td_score_std": m.td_score_std.cpu(),
            "proto_clip": m.proto_clip.cpu(),
            "proto_adapter": m.proto_adapter.cpu(),
            "fssd": self.fssd.state_dict(),
            "task": self.task,
            "head": None if self.head is None else self.head.state_dict(),
            "head_adapters": None if self.head_adapters is None else self.head_adapters.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Rebuild the model as it stood after task `state['task']`."""
        m = self.model
        c2e = state["class_to_expert"]
        for k in range(len(state["experts"])):
            m.add_task(state["text_embeddings"][c2e == k], init_from_previous=False)
        m.backbone.adapters.load_state_dict(state["adapters"])
        for expert, sd in zip(m.experts, state["experts"]):
            expert.load_state_dict(sd)
        dev = m.text_embeddings.device
        if "anchors" in state:  # checkpoints before td_raw_anchors had its name
            state = {**state, "td_raw_anchors": state["anchors"]}
        for name in ("text_embeddings", "class_to_expert", "td_raw_anchors", "proto_clip", "proto_adapter",
                     "td_anchors", "td_center", "td_var", "td_score_mean", "td_score_std"):
            setattr(m, name, state[name].to(dev))
        self.fssd.load_state_dict(state["fssd"])
        self.task = int(state["task"])
        if state.get("head") is not None:
            self.head = AnalyticHead.from_state(state["head"])
        if state.get("head_adapters") is not None:
            self.head_adapters = copy.deepcopy(m.backbone.adapters).eval().requires_grad_(False)
            self.head_adapters.load_state_dict(state["head_adapters"])
