"""Kinetics-400 in its official layout (https://github.com/cvdfoundation/kinetics-dataset).

    root/annotations/{train,val,test}.csv   header "label,youtube_id,time_start,time_end,split"
    root/{train,val,test}/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4
    root/{train,val,test}/<youtube_id>_<start:06d>_<end:06d>.mp4          (flat, as the CVDF tarballs unpack)

A clip may also be a folder of extracted frames of the same name without extension. Label
folders may spell spaces as underscores (``air_drumming``), as some downloaders do.
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import StprError
from .videos import VIDEO_EXTS, VideoClips

__all__ = ["kinetics400", "read_annotations"]

log = logging.getLogger(__name__)
_SPLITS = ("train", "val", "test")
_HOWTO = ("expected ROOT/annotations/{train,val,test}.csv and clips under ROOT/{train,val,test}/ "
          "(see the CVDF kinetics-dataset)")


def read_annotations(path: Path) -> list[tuple[str, str]]:
    """``(label, clip name)`` rows of an annotation CSV; the clip name is
    ``<youtube_id>_<start:06d>_<end:06d>``."""
    if not path.is_file():
        raise StprError(f"Kinetics: {path} not found; {_HOWTO}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)  # handles the quoted labels ("passing American football (in game)")
        need = {"label", "youtube_id", "time_start", "time_end"}
        if not need <= set(reader.fieldnames or ()):
            raise StprError(f"Kinetics: {path} has columns {reader.fieldnames}, needs {sorted(need)} (a test "
                            f"CSV without labels cannot be evaluated)")
        rows = []
        for r in reader:
            start, end = int(float(r["time_start"])), int(float(r["time_end"]))
            rows.append((r["label"].strip(), f"{r['youtube_id'].strip()}_{start:06d}_{end:06d}"))
    return rows


def _index_clips(split_dir: Path, labels: set[str]) -> dict[str, Path]:
    """Clip name -> path for every clip under ``split_dir``, with or without label folders.

    One directory listing per folder instead of a stat per candidate path: Kinetics has
    ~240k clips. Frame folders win over video files of the same name.
    """
    label_dirs = labels | {name.replace(" ", "_") for name in labels}
    found: dict[str, Path] = {}

    def add(entry: os.DirEntry) -> None:
        path = Path(entry.path)
        if entry.is_dir():
            found[entry.name] = path
        elif path.suffix.lower() in VIDEO_EXTS:
            found.setdefault(path.stem, path)

    if split_dir.is_dir():
        for entry in os.scandir(split_dir):
            if entry.is_dir() and entry.name in label_dirs:
                for clip in os.scandir(entry.path):
                    add(clip)
            else:
                add(entry)
    return found


def kinetics400(root: Path, split: str, train: bool, **kw: Any) -> VideoClips:
    """The clips of ``split`` (train, val or test) listed in its annotation CSV.

    Classes are the sorted unique labels of ``train.csv`` (raw names such as
    ``air drumming``), indexed from 0. Clips gone from the web are skipped with reason
    ``missing`` and one summary warning, but do not count toward ``max_unreadable``;
    existing clips that fail to decode do. ``kw`` goes to ``VideoClips``.
    """
    if split not in _SPLITS:
        raise StprError(f"Kinetics split must be one of {', '.join(_SPLITS)}, got {split!r}")
    root = Path(root)
    classes = sorted({label for label, _ in read_annotations(root / "annotations" / "train.csv")})
    index = {name: i for i, name in enumerate(classes)}
    rows = read_annotations(root / "annotations" / f"{split}.csv")
    unknown = sorted({label for label, _ in rows} - set(index))
    if unknown:
        raise StprError(f"Kinetics: {split}.csv has labels not in train.csv: {unknown[:5]}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise StprError(f"Kinetics: {split_dir} not found; {_HOWTO}")
    clips = _index_clips(split_dir, set(classes))
    samples = [(clips.get(name, split_dir / label / f"{name}.mp4"), index[label]) for label, name in rows]
    return VideoClips(samples, classes, train=train, count_missing=False, **kw)
