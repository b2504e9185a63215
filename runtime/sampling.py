"""TSN test-time sampling, shared by training evaluation and the device's clip mode,
so both pick the very same frames of a video."""
from __future__ import annotations

import numpy as np


def centre_indices(num_video_frames: int, num_segments: int) -> np.ndarray:
    """The centre frame of each of T equal segments: `int((i + 0.5) * n / T)`.

    A video shorter than T repeats frames; the result is int64, length T, in `[0, n)`.
    """
    n, t = int(num_video_frames), int(num_segments)
    seg = np.arange(t, dtype=np.float64)
    return np.minimum(((seg + 0.5) * n / t).astype(np.int64), n - 1)
