"""Typed run configuration: one dataclass per section, with defaults. Defaults are the
paper's settings (docs/method.md, "Training and evaluation"); `configs/demo.yaml` shrinks
them to the built-in synthetic demo. Reading YAML files and `key=value` overrides, and the
choices and ranges every value is checked against, are `config_load`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass
class ModelConfig:
    name: str = "ViT-B-16-quickgelu"  # open_clip model; 'stpr-tiny' for tests and the demo
    pretrained: str = "openai"  # none | openai | PATH to a local weights file
    adapter_bottleneck: int = 64  # AdaptFormer hidden width r
    adapter_scale: float = 0.1  # AdaptFormer scale s
    adapter_dropout: float = 0.1  # dropout on the adapter hidden
    expert_layers: int = 3  # transformer layers per expert
    expert_heads: int = 2  # attention heads per expert
    expert_mlp_ratio: float = 4.0  # expert MLP width / D
    expert_init: str = "previous"  # previous | random: how expert k starts
    templates: list[str] = field(default_factory=lambda: ["a video of a person {}."])  # prompts, averaged
    logit_scale: float = 100.0  # CLIP's trained temperature
    # Any ONNX image tower (docs/towers.md): the head alone runs on it, without torch. None: `name`'s tower.
    tower: str | None = None  # FILE.onnx: frames (N, 3, H, W) -> (N, D), pooled if more axes
    tower_size: int | None = None  # its input side; None: from FILE.json beside it
    tower_mean: list[float] | None = None  # its RGB normalisation on [0, 1] pixels; None: from FILE.json
    tower_std: list[float] | None = None


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # dataset reader (see stpr.train.data.DATASETS)
    root: str | None = None  # dataset folder (unused by 'synthetic')
    protocol: str = "4+4x4"  # 'A+BxC' (A base classes, then C tasks of B) or 'BxC'
    class_order: str = "auto"  # auto (natural for synthetic, else seeded) | seeded (TCD) | natural
    num_frames: int = 8  # T frames per clip, TSN sampling
    clips_per_class_train: int = 48  # synthetic only: training clips per class
    clips_per_class_test: int = 16  # synthetic only: test clips per class
    workers: int = 0  # DataLoader worker processes (persistent, pinned memory on GPU)
    split: int = 1  # UCF101/HMDB51 official split 1 | 2 | 3
    max_unreadable: float = 0.05  # stop if more than this share of a split cannot be read
    holdout: float = 0.2  # folder datasets: share of each class held out for testing
    task_file: str | None = None  # class order/tasks from a task file (JSON; vCLIMB pickles need allow_pickle)
    allow_pickle: bool = False  # opt-in to read a pickle task file (runs code from the file: trusted files only)


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd (the paper's) | adamw
    lr: float = 0.01  # learning rate
    momentum: float = 0.9  # SGD momentum (AdamW: beta1)
    weight_decay: float = 0.0  # weight decay
    schedule: str = "cosine"  # cosine | constant, per task over its steps
    batch_size: int = 40  # clips per step
    eval_batch_size: int = 40  # clips per evaluation step
    epochs_base: int = 60  # epochs of task 0
    epochs_incremental: int = 30  # epochs of every later task
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | off: autocast for the frozen tower
    compile: bool = False  # torch.compile the adapted tower (GPU; pays off on long runs)


@dataclass
class MethodConfig:
    routing: str = "td"  # td (calibrated) | td-raw (paper's Eq. 11) | avg | clip | adapter | oracle (analysis only)
    tau: float = 0.1  # router softmax temperature of td-raw, clip and adapter (raw cosine units)
    td_tau: float = 1.0  # calibrated td: softmax temperature in units of each expert's own-task score spread
    distill: str = "fssd"  # fssd | uniform | none
    lambda_fssd: float = 1.0  # weight of the FSSD loss (Eq. 16)
    fssd_eps: float = 1e-6  # added to the channel variance in the importance
    text_candidates: str = "seen"  # seen | batch: texts the contrastive loss ranks against


@dataclass
class HeadConfig:
    mode: str = "none"  # none (StPR alone, the paper) | alone | route-hard | route-soft | fuse (docs/method.md)
    tower: str = "frozen"  # frozen CLIP tower | adapted: the adapters as the base task left them
    dim: int = 2048  # M, width of the random projection
    ridge: float = 0.0  # ridge lambda; 0 chooses it on the base task (holdout MSE)
    balance: str = "weight"  # weight: each clip n_ref / n_class (uneven classes) | none
    crops: str = "none"  # none | corners: each clip also gives the rows of its 4 corners (runtime/model/sampling.py)
    views: int = 1  # temporal views per clip, each a row (runtime/sampling.view_indices; a T-frame clip has one)
    tau: float = 0.1  # softmax temperature on the ridge scores (route-soft, fuse, probabilities)
    fuse_weight: float = 0.5  # fuse: share of the head's probabilities


def routing_tau(method: MethodConfig, mode: str | None = None) -> float:
    """The softmax temperature routing `mode` (default: the configured one) runs with."""
    return method.td_tau if (mode or method.routing) == "td" else method.tau


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    seed: int = 1000  # every random choice (class order, init, shuffling) flows from it
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
