"""The StPR continual learner: Mammoth-style lifecycle hooks around the model.

`begin_task` adds the task's classes and expert and freezes a teacher copy of the
adapters; `observe` is one SGD step of `L_st + L_sp + lambda * L_fssd` (Eq. 16);
`end_task` builds the task's anchors and prototypes, folds its FSSD importance
into the distillation weight and its clips into the analytic head's sums
(`learner_head`); `evaluate` scores every seen task among all seen classes
(`learner_eval`); `state_dict` is what a checkpoint holds (`learner_state`).
Nothing of a task's data outlives its `end_task`.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as dist
from .analytic_fit import AnalyticHead
from .config import Config
from .fssd import ClassFrameStats, FSSDWeights, channel_importance, fssd_loss
from .learner_eval import EvalResult, evaluate
from .learner_head import HeadRows, head_window, make_head
from .learner_state import learner_state, load_learner_state
from .losses import contrastive_loss
from .model.router import td_class_means, td_distance_scores
from .model.stpr import StPRModel
from .model.text import encode_class_names

log = logging.getLogger(__name__)


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
        self.head: AnalyticHead | None = make_head(cfg, model.num_frames, model.dim)
        self.head_adapters: nn.ModuleList | None = None  # tower 'adapted': the adapters after the base task

    def trains_stpr(self, task: int) -> bool:
        """Whether task `task` takes gradient steps. The head alone needs none, except on the
        base task when its tower is the adapted one (the adapters are trained there, then kept)."""
        h = self.cfg.head
        return h.mode != "alone" or (h.tower == "adapted" and task == 0)

    def head_window(self, frames: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """The head's tower's frame features `(B, T, D)` (`learner_head.head_window`)."""
        return head_window(self, frames, feats)

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
        head_rows = HeadRows(self)  # this rank's h per clip (crops after their batch): dropped on return
        for frames, labels in batches:
            if self.head is not None:
                keys = HeadRows.clip_keys(frames)
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
                head_rows.add(frames, feats, labels, keys)
        if self.head is not None and head_views is not None:  # head.views: the head's rows are these
            for frames, labels, keys, own in head_views:
                head_rows.add_view(frames.to(self.device), labels, keys.to(torch.int64), own)
        for t in (stats.sum, stats.sumsq, stats.count, videos, *sums.values()):
            dist.all_reduce_sum(t)  # each rank saw a shard: sums make the whole task
        self.calibrate_router(sums["td"], videos, torch.cat(residuals), torch.cat(locals_))
        self.finish_task_statistics(stats, sums)
        if self.head is not None:
            head_rows.fold_into(self.head, m.num_classes)

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

    def evaluate(self, loaders: Sequence[Iterable[tuple[torch.Tensor, torch.Tensor]]],
                 reference_adapters: Sequence[nn.ModuleList] = ()) -> EvalResult:
        """Top-1 over every seen class for each seen task's test videos (`learner_eval.evaluate`)."""
        return evaluate(self, loaders, reference_adapters)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """What a checkpoint stores (`learner_state`)."""
        return learner_state(self)

    def load_state_dict(self, state: dict) -> None:
        """Rebuild the model as it stood after task `state['task']`."""
        load_learner_state(self, state)
