"""Dataset readers by name: `--dataset NAME`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import StprError
from ..model.clip_tower import Preprocess


@dataclass
class Splits:
    train: Dataset  # training sampling (random TSN offsets)
    train_eval: Dataset  # the same videos with test sampling: anchors and FSSD statistics
    test: Dataset
    classes: list[str]  # raw class names, indexed by dataset class id


def _synthetic(cfg: DataConfig, pp: Preprocess, seed: int) -> Splits:
    from .synthetic import SyntheticActions

    common = dict(num_frames=cfg.num_frames, image_size=pp.size, seed=seed, mean=pp.mean, std=pp.std)
    train = SyntheticActions("train", clips_per_class=cfg.clips_per_class_train, **common)
    test = SyntheticActions("test", clips_per_class=cfg.clips_per_class_test, **common)
    # Synthetic clips are exactly T frames long, so train and test sampling coincide.
    return Splits(train=train, train_eval=train, test=test, classes=list(train.classes))


DATASETS: dict[str, Callable[[DataConfig, Preprocess, int], Splits]] = {
    "synthetic": _synthetic,
}


def build_splits(cfg: DataConfig, preprocess: Preprocess, seed: int) -> Splits:
    if cfg.dataset not in DATASETS:
        raise StprError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[cfg.dataset](cfg, preprocess, seed)
