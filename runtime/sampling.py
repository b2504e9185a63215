"""TSN test-time sampling, shared by training evaluation and the device's clip mode,
so both pick the very same frames of a video; and the extra temporal views `stpr-learn
--views` reads from a clip longer than T."""
from __future__ import annotations

import numpy as np


def centre_indices(num_video_frames: int, num_segments: int) -> np.ndarray:
    """The centre frame of each of T equal segments: `int((i + 0.5) * n / T)`.

    A video shorter than T repeats frames; the result is int64, length T, in `[0, n)`.
    """
    n, t = int(num_video_frames), int(num_segments)
    seg = np.arange(t, dtype=np.float64)
    return np.minimum(((seg + 0.5) * n / t).astype(np.int64), n - 1)


def view_indices(num_video_frames: int, num_segments: int, views: int) -> list[np.ndarray]:
    """`views` temporal samplings of a clip: frame `int((i + f) * n / T)` of each segment i for
    the offsets `f = (j + 0.5) / views`, j < views (one view: the centres, `centre_indices`).

    Views that pick the very same frames are given once: a clip of exactly T frames has one
    view whatever `views` asks, so a view never weighs a clip twice."""
    n, t, v = int(num_video_frames), int(num_segments), int(views)
    if v == 1:
        return [centre_indices(n, t)]
    seg = np.arange(t, dtype=np.float64)
    out: list[np.ndarray] = []
    for j in range(v):
        idx = np.minimum(((seg + (j + 0.5) / v) * n / t).astype(np.int64), n - 1)
        if not any(np.array_equal(idx, o) for o in out):
            out.append(idx)
    return out
