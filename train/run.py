"""The incremental protocol end to end, writing the run directory.

    run_dir/
      config.yaml            resolved config (what --resume continues)
      checkpoints/task_NNN.pt one per finished task (atomic)
      metrics.json           after every task
      train.log              (written by the CLI's log handler)
      plots/*.png            accuracy over tasks, accuracy matrix, routing weights

What metrics.json and the plots hold is `run_metrics`; one task's training is
`train_task`, the learner's own steps are `learner`.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from stpr.runtime.atomic import atomic_write_text

from . import distributed as dist
from .checkpoint import check_same_model, checkpoint_path, finished_tasks, load_checkpoint, save_checkpoint
from .config import Config, dump_config
from .data.protocol import run_tasks
from .data.registry import Splits, build_splits, check_dataset
from .data.tasks import HeadViews, TaskSubset
from .errors import StprError
from .learner import StPRLearner
from .learner_eval import EvalResult
from .model.clip_tower import Preprocess, backbone_fingerprint, load_clip
from .model.stpr import StPRModel
from .model.text import TEXT_COLLISION_COS, encode_class_names, text_collisions
from .run_dir import drop_stale_temp_files, run_config
from .run_metrics import History, classifier_name, metrics_from_history, scored_counts, write_outputs
from .seed import derive_seed, resolve_device, seed_everything

log = logging.getLogger(__name__)

Progress = Callable[[Iterable, str, int], Iterable]


def _no_progress(it: Iterable, desc: str, total: int) -> Iterable:
    return it


@dataclass
class Setup:
    cfg: Config
    device: torch.device
    preprocess: Preprocess
    splits: Splits
    tasks: list[list[int]]  # dataset class ids per task
    learner: StPRLearner
    fingerprint: str
    task_end_adapters: list[nn.ModuleList] = field(default_factory=list)  # adapters after each task (drift)


def build_learner(cfg: Config) -> tuple[StPRLearner, Preprocess, str]:
    """Model and learner from a config, without data: (learner, preprocess, fingerprint)."""
    device = dist.init_from_env(resolve_device(cfg.device))
    clip_model, pp = load_clip(cfg.model.name, cfg.model.pretrained, seed=cfg.seed)
    mc = cfg.model
    seed_everything(derive_seed(cfg.seed, 0xADA))  # adapter init
    model = StPRModel(
        clip_model.visual, cfg.data.num_frames,
        adapter_bottleneck=mc.adapter_bottleneck, adapter_scale=mc.adapter_scale,
        adapter_dropout=mc.adapter_dropout, expert_layers=mc.expert_layers, expert_heads=mc.expert_heads,
        expert_mlp_ratio=mc.expert_mlp_ratio, logit_scale=mc.logit_scale,
    )
    if cfg.optim.compile:  # the tower is most of the step; compile only its forward
        model.backbone.forward = torch.compile(model.backbone.forward)
    return StPRLearner(model, clip_model, cfg, device), pp, backbone_fingerprint(clip_model)


def build(cfg: Config) -> Setup:
    """Model, data and protocol from a config (no training)."""
    if cfg.model.tower:  # an ONNX tower is read by the torch-free head only; never silently ignored here
        raise StprError(f"model.tower {cfg.model.tower!r} is an ONNX tower: the head alone trains on it without "
                        "torch (stpr-train --tower, or stpr.train.head_run.run)")
    check_dataset(cfg.data)
    learner, pp, fingerprint = build_learner(cfg)
    splits = build_splits(cfg.data, pp, cfg.seed)
    tasks = run_tasks(cfg.data, splits, cfg.seed)
    if dist.is_main():
        warn_text_collisions(cfg, learner, [splits.classes[c] for t in tasks for c in t])
    return Setup(cfg, learner.device, pp, splits, tasks, learner, fingerprint)


def warn_text_collisions(cfg: Config, learner: StPRLearner, names: list[str]) -> None:
    """Once per run: name the class texts the chosen tower cannot tell apart, and the head
    that needs no text."""
    text = encode_class_names(learner.clip_model, cfg.model.name, names, cfg.model.templates)
    pairs = text_collisions(names, text)
    if not pairs:
        return
    shown = "; ".join(f"{a!r} ~ {b!r} (cos {c:.3f})" for a, b, c in pairs[:5])
    more = f" and {len(pairs) - 5} more pairs" if len(pairs) > 5 else ""
    log.warning("%d pair(s) of class texts are near-identical under %s (cos >= %.2f): %s%s. A text classifier "
                "cannot separate them (StPR, and head modes route-*/fuse in part); --head alone needs no text.",
                len(pairs), cfg.model.name, TEXT_COLLISION_COS, shown, more)


def _global_ids(tasks: list[list[int]], k: int) -> list[int]:
    start = sum(len(t) for t in tasks[:k])
    return list(range(start, start + len(tasks[k])))


def _loader(s: Setup, dataset: Any, k: int, train: bool) -> DataLoader:
    """Training: a DistributedSampler permutation (also in one process, so N processes
    see the same global batches as one); evaluation: an exact shard per rank."""
    o, workers, world = s.cfg.optim, s.cfg.data.workers, dist.world_size()
    subset = TaskSubset(dataset, s.tasks[k], _global_ids(s.tasks, k))
    if train:
        if o.batch_size % world:
            raise StprError(f"batch size {o.batch_size} does not split over {world} processes; "
                            f"use a multiple of {world}")
        sampler = DistributedSampler(subset, num_replicas=world, rank=dist.rank(), shuffle=True,
                                     seed=derive_seed(s.cfg.seed, k, 0x5A))
        batch = o.batch_size // world
    else:
        sampler, batch = dist.ShardSampler(len(subset)), o.eval_batch_size
    return DataLoader(subset, batch_size=batch, sampler=sampler, num_workers=workers,
                      pin_memory=s.device.type == "cuda", persistent_workers=workers > 0)


def _views_loader(s: Setup, k: int) -> DataLoader | None:
    """`head.views`: every temporal view of task k's clips, an exact shard per rank (None: the centres)."""
    if s.cfg.head.mode == "none" or s.cfg.head.views == 1:
        return None
    views = HeadViews(TaskSubset(s.splits.train_eval, s.tasks[k], _global_ids(s.tasks, k)), s.cfg.head.views)
    return DataLoader(views, batch_size=s.cfg.optim.eval_batch_size, sampler=dist.ShardSampler(len(views)),
                      num_workers=s.cfg.data.workers)


def train_task(s: Setup, k: int, progress: Progress = _no_progress) -> EvalResult:
    """begin_task -> epochs of observe -> end_task -> evaluate on tasks 0..k."""
    cfg, learner = s.cfg, s.learner
    seed_everything(derive_seed(cfg.seed, k))  # a resumed run replays task k exactly
    loader = _loader(s, s.splits.train, k, train=True)
    epochs = cfg.optim.epochs_base if k == 0 else cfg.optim.epochs_incremental
    if not learner.trains_stpr(k):  # the head alone: no gradient step, only the sums at end_task
        epochs = 0
    names = [s.splits.classes[c] for c in s.tasks[k]]
    learner.begin_task(k, names, steps=epochs * len(loader))
    t0 = time.perf_counter()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        desc = f"task {k + 1}/{len(s.tasks)} epoch {epoch + 1}/{epochs}"
        bar = progress(loader, desc, len(loader)) if dist.is_main() else loader
        for frames, labels in bar:
            losses = learner.observe(frames, labels)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({n: f"{v:.3f}" for n, v in losses.items()}, refresh=False)
        log.info("task %d epoch %d/%d loss %s", k, epoch + 1, epochs, {n: round(v, 4) for n, v in losses.items()})
    learner.end_task(_loader(s, s.splits.train_eval, k, train=False), _views_loader(s, k))
    s.task_end_adapters.append(frozen_copy(learner.model.backbone.adapters))
    # Drift costs a second backbone pass over every old test clip, so it is measured once,
    # after the last task (what the metric reports), not after every task.
    last = k == len(s.tasks) - 1
    result = learner.evaluate([_loader(s, s.splits.test, j, train=False) for j in range(k + 1)],
                              reference_adapters=s.task_end_adapters if last else ())
    correct = scored_counts(cfg, result.correct, result.modes)
    log.info("task %d done in %.1fs: accuracy per task %s (%s)", k, time.perf_counter() - t0,
             [round(100 * c / t, 2) for c, t in zip(correct, result.total)], classifier_name(cfg))
    return result


def frozen_copy(adapters: nn.ModuleList) -> nn.ModuleList:
    """An eval-mode, gradient-free copy: the reference a task's feature drift is measured from."""
    return copy.deepcopy(adapters).eval().requires_grad_(False)


def _payload(s: Setup, k: int, h: History) -> dict[str, Any]:
    return {
        "task": k,
        "model_name": s.cfg.model.name,
        "pretrained": s.cfg.model.pretrained,
        "seed": s.cfg.seed,
        "backbone_fingerprint": s.fingerprint,
        "config": s.cfg.to_dict(),
        "preprocess": {"size": s.preprocess.size, "mean": list(s.preprocess.mean), "std": list(s.preprocess.std),
                       "frames": s.cfg.data.num_frames, "sampling": "tsn-centre"},
        "classes": [s.splits.classes[c] for t in s.tasks[: k + 1] for c in t],
        "task_classes": [[s.splits.classes[c] for c in t] for t in s.tasks[: k + 1]],
        "learner": s.learner.state_dict(),
        "history": dataclasses.asdict(h),
    }


def run(
    cfg: Config | None,
    run_dir: str | Path,
    resume: bool = False,
    progress: Progress = _no_progress,
    device: str | None = None,
) -> dict[str, Any]:
    """Train every task of the protocol (continuing after the last checkpoint on resume).

    Everything is built and checked before the run directory is written, so a bad
    config leaves no half-made run behind. `device` overrides where a resumed run runs.
    """
    run_dir = Path(run_dir)
    cfg = run_config(cfg, run_dir, resume)
    if device is not None:
        cfg.device = device
    s = build(cfg)
    h, start = History(), 0
    done = finished_tasks(run_dir) if resume else []
    if done:
        last = done[-1]
        path = checkpoint_path(run_dir, last)
        ckpt = load_checkpoint(path)
        check_same_model(ckpt, cfg.model.name, s.fingerprint, path)
        s.learner.load_state_dict(ckpt["learner"])
        h = History(**ckpt["history"])
        for j in done:  # the adapters as each finished task left them, for drift
            adapters = copy.deepcopy(s.learner.model.backbone.adapters)
            adapters.load_state_dict(load_checkpoint(checkpoint_path(run_dir, j))["learner"]["adapters"])
            s.task_end_adapters.append(frozen_copy(adapters))
        start = last + 1
        log.info("resuming %s after task %d", run_dir, last)
    dist.barrier()  # every rank has checked the folder before rank 0 writes to it
    main = dist.is_main()
    if main and resume:
        drop_stale_temp_files(run_dir)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    metrics: dict[str, Any] = metrics_from_history(s, h) if h.correct else {}
    if main and h.correct:
        write_outputs(run_dir, s, h)
    for k in range(start, len(s.tasks)):
        h.add(train_task(s, k, progress))
        metrics = metrics_from_history(s, h)
        if main:
            save_checkpoint(run_dir, k, _payload(s, k, h))
            write_outputs(run_dir, s, h)
        dist.barrier()
    return metrics
