"""UCF101 in its official layout (https://www.crcv.ucf.edu/data/UCF101.php).

    root/UCF-101/<Class>/v_<Class>_gXX_cYY.avi       (or a frame folder v_<Class>_gXX_cYY/)
    root/ucfTrainTestlist/classInd.txt               "1 ApplyEyeMakeup" (1-based, alphabetical)
    root/ucfTrainTestlist/trainlist0{1,2,3}.txt      "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    root/ucfTrainTestlist/testlist0{1,2,3}.txt       "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import StprError
from .videos import VideoClips, prefer_frames

__all__ = ["ucf101"]

_HOWTO = ("expected the official layout: ROOT/UCF-101/<Class>/*.avi and ROOT/ucfTrainTestlist/ (unpack UCF101.rar "
          "and UCF101TrainTestSplits-RecognitionTask.zip into ROOT)")


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise StprError(f"UCF101: {path} not found; {_HOWTO}")
    # The official lists have CRLF endings and a trailing blank line.
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def read_class_index(path: Path) -> list[str]:
    """Class names from ``classInd.txt``; list position = index - 1."""
    rows = [ln.split() for ln in _lines(path)]
    if any(len(r) != 2 or not r[0].isdigit() for r in rows):
        raise StprError(f"UCF101: {path} must hold lines '<index> <ClassName>', e.g. '1 ApplyEyeMakeup'")
    classes = [name for _, name in sorted((int(i), name) for i, name in rows)]
    if [int(i) for i, _ in sorted(rows, key=lambda r: int(r[0]))] != list(range(1, len(rows) + 1)):
        raise StprError(f"UCF101: {path} must number the classes 1..N without gaps")
    return classes


def ucf101(root: Path, split: int, train: bool, **kw: Any) -> VideoClips:
    """The train or test videos of official split ``split`` (1, 2 or 3).

    Labels are ``classInd`` index - 1 (alphabetical order). ``kw`` goes to ``VideoClips``
    (num_frames, size, mean, std, max_unreadable, seed). A listed video absent on disk is
    skipped with reason ``missing`` and counts toward ``max_unreadable``: UCF101 ships whole,
    so an absent file means a broken unpacking.
    """
    if split not in (1, 2, 3):
        raise StprError(f"UCF101 split must be 1, 2 or 3, got {split!r}")
    root = Path(root)
    lists = root / "ucfTrainTestlist"
    classes = read_class_index(lists / "classInd.txt")
    index = {name: i for i, name in enumerate(classes)}
    list_file = lists / f"{'trainlist' if train else 'testlist'}0{split}.txt"
    samples = []
    for line in _lines(list_file):
        rel, *label = line.split()
        cls = rel.split("/")[0]
        if cls not in index:
            raise StprError(f"UCF101: {list_file} lists {rel!r}, whose class {cls!r} is not in classInd.txt")
        if label and int(label[0]) - 1 != index[cls]:
            raise StprError(f"UCF101: {list_file} gives {rel!r} label {label[0]}, but classInd.txt numbers "
                            f"{cls!r} {index[cls] + 1}")
        samples.append((prefer_frames(root / "UCF-101" / rel), index[cls]))
    if not (root / "UCF-101").is_dir():
        raise StprError(f"UCF101: {root / 'UCF-101'} not found; {_HOWTO}")
    return VideoClips(samples, classes, train=train, **kw)
