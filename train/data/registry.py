"""Dataset readers by name: `--dataset NAME`."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import StprError

if TYPE_CHECKING:  # the readers are torch-free: the head trains on them without torch
    from torch.utils.data import Dataset

    from ..config import DataConfig
    from ..model.clip_tower import Preprocess

log = logging.getLogger(__name__)


@dataclass
class Splits:
    train: "Dataset"  # training sampling (random TSN offsets)
    train_eval: "Dataset"  # the same videos with test sampling: anchors and FSSD statistics
    test: "Dataset"
    classes: list[str]  # raw class names, indexed by dataset class id


def _synthetic(cfg: DataConfig, pp: Preprocess, seed: int) -> Splits:
    from .synthetic import SyntheticActions

    common = dict(num_frames=cfg.num_frames, image_size=pp.size, seed=seed, mean=pp.mean, std=pp.std)
    train = SyntheticActions("train", clips_per_class=cfg.clips_per_class_train, **common)
    test = SyntheticActions("test", clips_per_class=cfg.clips_per_class_test, **common)
    # Synthetic clips are exactly T frames long, so train and test sampling coincide.
    return Splits(train=train, train_eval=train, test=test, classes=list(train.classes))


def _root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise StprError(f"--dataset {cfg.dataset} needs --data-root, the folder holding it in its official layout")
    root = Path(cfg.root)
    if not root.is_dir():
        raise StprError(f"--data-root {cfg.root!r} is not a folder")
    return root


def _video_splits(read: Callable[..., Any], cfg: DataConfig, pp: Preprocess, seed: int) -> Splits:
    """`read(is_train_split, **kw)` -> VideoClips; train_eval = the training videos with
    test-time sampling (a shallow copy: the readability scan is shared)."""
    kw = dict(num_frames=cfg.num_frames, size=pp.size, mean=pp.mean, std=pp.std, max_unreadable=cfg.max_unreadable)
    train, test = read(True, **kw), read(False, **kw)
    train_eval = copy.copy(train)
    train_eval.train = False
    for name, ds in (("train", train), ("test", test)):
        if ds.skipped:
            log.warning("%s split of %s: %d videos skipped (missing or unreadable)", name, cfg.dataset,
                        len(ds.skipped))
    return Splits(train=train, train_eval=train_eval, test=test, classes=list(train.classes))


def _ucf101(cfg: DataConfig, pp: Preprocess, seed: int) -> Splits:
    from .ucf101 import ucf101

    root = _root(cfg)
    return _video_splits(lambda tr, **kw: ucf101(root, cfg.split, tr, seed=seed, **kw), cfg, pp, seed)


def _hmdb51(cfg: DataConfig, pp: Preprocess, seed: int) -> Splits:
    from .hmdb51 import hmdb51

    root = _root(cfg)
    return _video_splits(lambda tr, **kw: hmdb51(root, cfg.split, tr, seed=seed, **kw), cfg, pp, seed)


def _kinetics400(cfg: DataConfig, pp: Preprocess, seed: int) -> Splits:
    from .kinetics import kinetics400

    root = _root(cfg)  # the official val split is Kinetics' test split
    return _video_splits(lambda tr, **kw: kinetics400(root, "train" if tr else "val", tr, seed=seed, **kw),
                         cfg, pp, seed)


def _folder(cfg: DataConfig, pp: Preprocess, seed: int) -> Splits:
    from .folder import folder_dataset

    root = _root(cfg)
    return _video_splits(lambda tr, **kw: folder_dataset(root, tr, holdout=cfg.holdout, seed=seed, **kw),
                         cfg, pp, seed)


DATASETS: dict[str, Callable[[DataConfig, Preprocess, int], Splits]] = {
    "synthetic": _synthetic,
    "ucf101": _ucf101,
    "hmdb51": _hmdb51,
    "kinetics400": _kinetics400,
    "folder": _folder,
}


def check_dataset(cfg: DataConfig) -> None:
    """Name (and root) checks that need no model: run before anything heavy."""
    if cfg.dataset not in DATASETS:
        raise StprError(f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    if cfg.dataset != "synthetic":
        _root(cfg)


def build_splits(cfg: DataConfig, preprocess: Preprocess, seed: int) -> Splits:
    check_dataset(cfg)
    return DATASETS[cfg.dataset](cfg, preprocess, seed)
