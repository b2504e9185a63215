"""HMDB51 in its official layout (https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/).

    root/<class>/<video>.avi   or   root/hmdb51_org/<class>/<video>.avi   (or a frame folder <video>/)
    root/testTrainMulti_7030_splits/<class>_test_split<n>.txt   lines "<video>.avi <id>"

with id 1 = train, 2 = test, 0 = unused in that split.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import StprError
from .videos import VideoClips, prefer_frames

__all__ = ["hmdb51"]

_SPLIT_FILE = re.compile(r"^(.+)_test_split(\d)\.txt$")
_HOWTO = ("expected the official layout: ROOT/<class>/*.avi (or ROOT/hmdb51_org/<class>/*.avi) and "
          "ROOT/testTrainMulti_7030_splits/<class>_test_split<n>.txt (unpack hmdb51_org.rar, its per-class "
          ".rar files, and test_train_splits.rar into ROOT)")


def _video_path(root: Path, cls: str, name: str) -> Path:
    """Where ``name`` of class ``cls`` lies: a frame folder before a video, ``root/<class>``
    before ``root/hmdb51_org/<class>``; the first candidate when none exists (reported missing)."""
    candidates = [base / cls / name for base in (root, root / "hmdb51_org")]
    for video in candidates:
        found = prefer_frames(video)
        if found.exists():
            return found
    return candidates[0]


def hmdb51(root: Path, split: int, train: bool, **kw: Any) -> VideoClips:
    """The train (id 1) or test (id 2) videos of official split ``split`` (1, 2 or 3).

    Classes are the names in the split files, sorted, indexed from 0. ``kw`` goes to
    ``VideoClips``. A listed video absent on disk is skipped with reason ``missing``.
    """
    if split not in (1, 2, 3):
        raise StprError(f"HMDB51 split must be 1, 2 or 3, got {split!r}")
    root = Path(root)
    split_dir = root / "testTrainMulti_7030_splits"
    if not split_dir.is_dir():
        raise StprError(f"HMDB51: {split_dir} not found; {_HOWTO}")
    files = {}
    for p in split_dir.iterdir():
        m = _SPLIT_FILE.match(p.name)
        if m and int(m.group(2)) == split:
            files[m.group(1)] = p
    if not files:
        raise StprError(f"HMDB51: no *_test_split{split}.txt files in {split_dir}; {_HOWTO}")
    classes = sorted(files)
    wanted = "1" if train else "2"
    samples = []
    for label, cls in enumerate(classes):
        for line in files[cls].read_text().splitlines():
            parts = line.strip().rsplit(None, 1)  # from the right: keeps a name with spaces whole
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise StprError(f"HMDB51: {files[cls]}: bad line {line!r}; expected '<video>.avi <0|1|2>'")
            if parts[1] == wanted:
                samples.append((_video_path(root, cls, parts[0]), label))
    return VideoClips(samples, classes, train=train, **kw)
