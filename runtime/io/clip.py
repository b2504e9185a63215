"""Clip mode's decoding: only the T sampled frames of a video are kept in memory.

Shared with training's video reader (`stpr.train.data.videos.read_frames`), so the
device and the training evaluation pick and decode the very same frames.
"""
from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

from ..errors import TruncatedClip  # noqa: F401 (also imported from here)
from ..model.sampling import centre_indices
from .stream import SourceFailed, truncated


def grab_frames(cap: cv2.VideoCapture, indices: Sequence[int]) -> tuple[dict[int, np.ndarray], int]:
    """Frames at `indices` of an opened capture, read in order up to the last one (OpenCV
    seeking is not frame-accurate for many codecs). Frames not wanted are only grabbed,
    never converted or kept, so memory holds at most the wanted frames.

    Returns (index -> frame for those decoded, frames grabbed); a file shorter than its
    header says yields fewer."""
    wanted, last = set(int(i) for i in indices), int(max(indices))
    cache: dict[int, np.ndarray] = {}
    k = 0
    while k <= last and cap.grab():
        if k in wanted:
            ok, img = cap.retrieve()
            if ok:
                cache[k] = img
        k += 1
    return cache, k


def fill_from_earlier(indices: Sequence[int], cache: dict[int, np.ndarray]) -> list[np.ndarray]:
    """One frame per index; an index past the decodable end (header counts overstate by a
    few frames in many mp4s) repeats the nearest earlier sampled frame."""
    out, prev = [], cache[min(cache)]
    for i in indices:
        prev = cache.get(int(i), prev)
        out.append(prev)
    return out


def count_frames(cap: cv2.VideoCapture) -> tuple[int, bool]:
    """(frames in a file, whether `cap` was read to count them): the header's count,
    else counted by grabbing, after which the caller must reopen the file."""
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if n > 0:
        return n, False
    while cap.grab():
        n += 1
    return n, True


def _centre_frames(open_cap: Callable[[], cv2.VideoCapture], n: int, frames: int) -> list[np.ndarray]:
    cap = open_cap()
    try:
        idx = centre_indices(n, frames)
        cache, _ = grab_frames(cap, idx)
    finally:
        cap.release()
    return fill_from_earlier(idx, cache)


def clip_frames(open_cap: Callable[[], cv2.VideoCapture], name: str, frames: int,
                pick: Callable[[int], np.ndarray] | None = None) -> tuple[list[np.ndarray], int]:
    """The T (= `frames`) segment-centre frames of a video and its frame count; with `pick`,
    the frames at `pick(frame count)` instead (stpr-learn's extra views).

    Memory stays at T frames whatever the video's length. A truncated file raises
    `TruncatedClip`, which carries the centre frames of its decodable part."""
    cap = open_cap()
    try:
        n, spent = count_frames(cap)
        if spent:  # no count in the header: counted by a first pass, read again
            cap.release()
            cap = open_cap()
        if n == 0:
            raise SourceFailed(f"{name!r} opened but holds no frames: the file is truncated or corrupt")
        idx = centre_indices(n, frames) if pick is None else pick(n)
        cache, grabbed = grab_frames(cap, idx)
    finally:
        cap.release()
    if not cache:
        raise SourceFailed(f"{name!r} opened but no frame could be decoded: the file is truncated or corrupt")
    if grabbed <= int(idx[-1]) and (error := truncated(name, grabbed, n)) is not None:
        raise TruncatedClip(f"{error}; classified from its {grabbed} decodable frames",
                            _centre_frames(open_cap, grabbed, frames), grabbed)
    return fill_from_earlier(idx, cache), n
