"""Clips learned on the device: read with the training sampling, through the head's tower.

A clip is a video file or a folder of frames (`frame_folder`'s rule). Its T segment-centre
frames (`sampling.centre_indices`, what training's head sums were built from) go through
the bundle's own head tower; the head's feature `h = relu(x P)` of each clip is what
`stpr-learn` adds to the sums. With `views` > 1 a clip longer than T also gives the rows
of other offsets within its segments (`sampling.view_indices`), and with `crops` the rows
of crops of its frames (`CROPS`): more rows per clip, measured in docs/learn.md.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from ..engine.recognizer import Recognizer
from ..errors import LearnError  # noqa: F401 (also imported from here)
from ..io.clip import TruncatedClip, clip_frames
from ..io.frame_folder import IMAGE_EXTS, frame_files
from ..io.stream import SourceError, SourceFailed, open_capture
from ..model.analytic import expand
from ..model.preprocess import preprocess
from ..model.sampling import CROPS, crop_view, view_indices  # noqa: F401 (CROPS: also imported from here)


def _folder_frames(folder: Path, T: int, views: int = 1) -> list[list[np.ndarray]]:
    files = frame_files(folder)
    if not files:
        raise LearnError(f"clip {str(folder)!r} is a folder with no frame images ({', '.join(sorted(IMAGE_EXTS))}); "
                         "pass video files or folders of frames")
    if len(files) < T:
        raise LearnError(f"clip {str(folder)!r} has {len(files)} frames, fewer than the T={T} the head reads in time "
                         "order; record a longer clip")
    sets = view_indices(len(files), T, views)
    frames: dict[int, np.ndarray] = {}
    for i in sorted({int(i) for idx in sets for i in idx}):
        img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise LearnError(f"clip {str(folder)!r}: frame {files[i].name!r} cannot be decoded; "
                             "replace or remove it")
        frames[i] = img
    return [[frames[int(i)] for i in idx] for idx in sets]


def read_clip(path: Path, T: int) -> list[np.ndarray]:
    """The T segment-centre frames (BGR) of a video file or frame folder, or a `LearnError`.

    A clip shorter than T is refused, not padded: a repeated frame carries no motion,
    and motion is what the head tells classes apart by."""
    return read_views(path, T, 1)[0]


def read_views(path: Path, T: int, views: int) -> list[list[np.ndarray]]:
    """`read_clip`'s frames for each temporal view of the clip (`sampling.view_indices`)."""
    path = Path(path)
    if path.is_dir():
        return _folder_frames(path, T, views)
    if not path.is_file():
        raise LearnError(f"clip {str(path)!r} does not exist; pass video files or folders of frames")
    sets: list[np.ndarray] = []

    def pick(n: int) -> np.ndarray:
        sets.extend(view_indices(n, T, views))
        return np.unique(np.concatenate(sets))

    try:
        frames, n = clip_frames(lambda: open_capture(str(path)), str(path), T, pick if views > 1 else None)
    except TruncatedClip as e:
        raise LearnError(f"clip {e}; re-record or drop it") from None
    except (SourceError, SourceFailed) as e:
        raise LearnError(f"clip {e}; pass a video OpenCV can decode") from None
    if n < T:
        raise LearnError(f"clip {str(path)!r} has {n} frames, fewer than the T={T} the head reads in time order; "
                         "record a longer clip")
    if views == 1:
        return [frames]
    at = {int(i): f for i, f in zip(np.unique(np.concatenate(sets)), frames)}
    return [[at[int(i)] for i in idx] for idx in sets]


def window_rows(rec: Recognizer, windows: np.ndarray) -> np.ndarray:
    """`(B, T, feature_dim)` windows of the recognizer's towers -> the head's `h (B, M)` float32."""
    return expand(rec.window_block(windows, "head"), rec.head.projection).astype(np.float32)


def _preprocessed(rec: Recognizer, frames: list[np.ndarray]) -> np.ndarray:
    b = rec.bundle
    return np.stack([preprocess(f, b.size, b.mean, b.std) for f in frames])


def clip_rows(rec: Recognizer, frames: list[np.ndarray]) -> np.ndarray:
    """One clip's T frames -> its head row `h (1, M)`."""
    return window_rows(rec, rec.frame_features(_preprocessed(rec, frames))[None])


def rows_of_clips(rec: Recognizer, paths: Sequence[Path], progress: Callable[[int, int], None] | None = None,
                  views: int | None = None, crops: str | None = None) -> np.ndarray:
    """`(N, M)` head rows of the clips at `paths`: one per clip, or one per temporal view and
    crop of each (`views`, `crops`, None: the bundle's `head.views` and `head.crops`; clip by
    clip, in that order). Every clip is read (and
    preprocessed, so memory holds T model-sized frames per clip and view, not the video's)
    before any is run: a bad one fails in seconds, not after the tower has run on the others."""
    T, head = rec.bundle.frames, rec.bundle.manifest.get("head", {})
    # None: as the bundle's head was trained (head.views, head.crops), so both stay one solve
    views = views or int(head.get("views", 1))
    crops = crops or head.get("crops", "none")
    clips = [[_preprocessed(rec, f) for f in read_views(p, T, views)] for p in paths]
    rows = []
    for i, clip in enumerate(clips):
        for x in clip:
            for box in CROPS[crops]:
                rows.append(window_rows(rec, rec.frame_features(crop_view(x, box))[None]))
        if progress is not None:
            progress(i + 1, len(clips))
    return np.concatenate(rows) if rows else np.zeros((0, rec.head.projection.shape[1]), np.float32)


def clip_identity(path: Path) -> str:
    """What makes two clips the same clip: the sha256 of a video file's bytes, or of a frame
    folder's frame files in order. A copy, a link or the same path given twice is one clip;
    a path that is not there is its own identity (`read_clip` refuses it with the cause)."""
    path = Path(path)
    files = frame_files(path) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        return f"missing:{path}"
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        h.update(b"\0" if path.is_dir() else b"")  # frame boundaries: two frames are not their concatenation
    return h.hexdigest()


def distinct_clips(paths: Sequence[Path]) -> list[Path]:
    """`paths` with every clip after its first copy left out (by `clip_identity`), in order."""
    seen: set[str] = set()
    out = []
    for p in paths:
        if (key := clip_identity(p)) not in seen:
            seen.add(key)
            out.append(p)
    return out
