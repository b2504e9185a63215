"""The torch-free head run's set-up: what can train without torch, its ONNX tower, its data
and protocol (train/head_run.py runs it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from stpr.runtime.errors import BundleError
from stpr.runtime.model.tower import OnnxTower, TowerSpec, tower_spec

from .config import Config
from .data.protocol import run_tasks
from .data.registry import Splits, build_splits, check_dataset
from .errors import StprError, missing_extra


def needs_torch(cfg: Config) -> str | None:
    """Why `cfg` cannot train without torch (None: it can): only the head alone on a frozen tower can."""
    if cfg.head.mode != "alone":
        what = "StPR (--head none)" if cfg.head.mode == "none" else f"--head {cfg.head.mode} (it scores through StPR)"
        return f"{what} trains with gradient steps"
    if cfg.head.tower != "frozen":
        return "head.tower adapted trains the adapters on the base task"
    return None


def tower_of(cfg: Config) -> TowerSpec:
    """The ONNX tower a torch-free run reads: `model.tower`, else the packaged one of `model.name`."""
    if cfg.model.tower:
        try:
            return tower_spec(cfg.model.tower, cfg.model.tower_size, cfg.model.tower_mean, cfg.model.tower_std)
        except BundleError as e:
            raise StprError(str(e)) from None
    from .pretrained import packaged_onnx_tower

    return packaged_onnx_tower(cfg.model.name, cfg.model.pretrained)


def onnx_device(spec: str) -> str:
    """`--device` as onnxruntime reads it: cpu, or cuda (CUDA or TensorRT providers)."""
    if spec == "auto":
        import onnxruntime as ort

        return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    if spec == "cpu" or spec.startswith("cuda"):
        return "cpu" if spec == "cpu" else "cuda"
    raise StprError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N")


@dataclass
class Setup:
    cfg: Config
    spec: TowerSpec
    splits: Splits
    tasks: list[list[int]]  # dataset class ids per task

    def global_ids(self, k: int) -> list[int]:
        start = sum(len(t) for t in self.tasks[:k])
        return list(range(start, start + len(self.tasks[k])))


def build(cfg: Config) -> Setup:
    """Tower, data and protocol from a config (no clip read yet)."""
    if cfg.model.tower and cfg.head.mode != "alone":
        raise StprError(f"--tower serves the analytic head alone; --head {cfg.head.mode} needs StPR's open_clip "
                        "tower (--model); use --head alone")
    reason = needs_torch(cfg)
    if reason:  # only the head alone on a frozen tower trains without torch
        extra = missing_extra(ModuleNotFoundError("torch", name="torch"), "stpr-train", "train")
        raise StprError(f"{reason}, so {str(extra)[0].lower()}{str(extra)[1:]}")
    check_dataset(cfg.data)
    spec = tower_of(cfg)
    try:  # shapes and preprocessing checked before any folder is written
        with OnnxTower(spec):
            pass
    except BundleError as e:
        raise StprError(str(e)) from None
    splits = build_splits(cfg.data, spec, cfg.seed)
    return Setup(cfg, spec, splits, run_tasks(cfg.data, splits, cfg.seed))


def task_clips(dataset: Any, class_ids: Sequence[int], global_ids: Sequence[int]) -> tuple[list[int], np.ndarray]:
    """The dataset indices of a task's clips and their global class ids (`TaskSubset`'s order)."""
    label_map = dict(zip(class_ids, global_ids))
    idx = [i for i, t in enumerate(dataset.targets) if t in label_map]
    return idx, np.asarray([label_map[dataset.targets[i]] for i in idx], np.int64)


