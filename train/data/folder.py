"""Any ``root/<class>/<video file or frame folder>`` tree, split by a seeded per-class holdout.

For your own data: no annotation files needed. Each class's samples are shuffled with a
generator seeded by ``seed`` and the class name (so adding a class does not move another
class's videos between splits) and the first ``holdout`` fraction is the test split.
"""
from __future__ import annotations

import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StprError
from .videos import VIDEO_EXTS, VideoClips, scan

__all__ = ["folder_dataset", "list_class_samples"]

log = logging.getLogger(__name__)


def list_class_samples(root: Path) -> dict[str, list[Path]]:
    """Class name -> its samples sorted by name: video files and frame folders (a folder
    replaces the video of the same name).

    Hidden entries are ignored: they include the temporary folders a stopped
    ``extract_frames.py`` leaves behind. Classes without any sample are dropped (warned).
    """
    out: dict[str, list[Path]] = {}
    for cls_dir in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        by_name: dict[str, Path] = {}
        for p in sorted(cls_dir.iterdir(), key=lambda p: (not p.is_dir(), p.name)):
            # Frames extracted next to their video (extract_frames.py --out ROOT) stand in for it.
            if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in VIDEO_EXTS):
                by_name.setdefault(p.name if p.is_dir() else p.stem, p)
        if by_name:
            out[cls_dir.name] = [by_name[k] for k in sorted(by_name)]
        else:
            log.warning("class folder %s holds no videos or frame folders; ignored", cls_dir)
    return out


def folder_dataset(root: Path, train: bool, holdout: float = 0.2, seed: int = 0, **kw: Any) -> VideoClips:
    """The train or test part of a ``root/<class>/<sample>`` tree; classes sorted, 0-based.

    The holdout is drawn among the class's *readable* samples: a class with at least 2
    puts ``round(holdout * n)`` of them (at least 1, at most n - 1) in the test split; a
    class with fewer goes wholly to train, with a warning. Unreadable samples are listed
    in the train split, where ``VideoClips`` skips them and counts them against
    ``max_unreadable``; they can never be a class's only test video. ``kw`` goes to
    ``VideoClips``.
    """
    if not 0.0 < holdout < 1.0:
        raise StprError(f"holdout must be in (0, 1), got {holdout!r}")
    root = Path(root)
    if not root.is_dir():
        raise StprError(f"dataset folder {root} not found; expected ROOT/<class>/<video or frame folder>")
    per_class = list_class_samples(root)
    if not per_class:
        raise StprError(f"no class folders with videos under {root}; expected ROOT/<class>/<video or frame folder>")
    classes = list(per_class)  # sorted by list_class_samples
    all_items = [p for items in per_class.values() for p in items]
    with ThreadPoolExecutor(min(32, 4 * (os.cpu_count() or 1))) as pool:  # cached: VideoClips reuses it
        readable = {p for p, (_, reason) in zip(all_items, pool.map(scan, all_items)) if reason is None}
    samples = []
    for label, cls in enumerate(classes):
        items = [p for p in per_class[cls] if p in readable]
        if train:
            samples += [(p, label) for p in per_class[cls] if p not in readable]
        if len(items) < 2:
            if train:  # warn once, from the train split
                log.warning("class %r has %d readable sample(s): all used for training, none held out", cls, len(items))
            n_test = 0
        else:
            n_test = min(max(1, round(holdout * len(items))), len(items) - 1)
        order = np.random.default_rng([seed, zlib.crc32(cls.encode())]).permutation(len(items))
        chosen = order[n_test:] if train else order[:n_test]
        samples += [(items[k], label) for k in sorted(chosen)]
    return VideoClips(samples, classes, train=train, seed=seed, **kw)
