"""Frame sampling for video clips.

TSN sampling (Wang et al., "Temporal Segment Networks", TPAMI 2018) splits a video into
``T`` equal segments and takes one frame from each, so a fixed-length clip covers the whole
video whatever its length. Training takes a random frame inside each segment (temporal
augmentation); evaluation takes each segment's centre (deterministic).
"""
from __future__ import annotations

import numpy as np

from stpr.runtime.model.sampling import centre_indices

__all__ = ["tsn_indices"]


def tsn_indices(
    num_video_frames: int,
    num_segments: int,
    train: bool,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Return ``num_segments`` frame indices into a video of ``num_video_frames`` frames.

    The video ``[0, n)`` is split into ``T`` segments with float boundaries
    ``[i * n / T, (i + 1) * n / T)``. With ``train`` one frame is drawn uniformly inside each
    segment using ``rng`` (required); otherwise segment ``i`` gives ``int((i + 0.5) * n / T)``.
    A video shorter than ``T`` frames repeats frames. The result is always int64, of length
    ``T``, non-decreasing and within ``[0, n)``; when ``n == T`` it is ``0, 1, ..., T - 1``.

    Raises:
        ValueError: if ``num_video_frames`` or ``num_segments`` is not positive, or if
            ``train`` is true and ``rng`` is None.
    """
    n, t = int(num_video_frames), int(num_segments)
    if n <= 0:
        raise ValueError(f"num_video_frames must be positive, got {num_video_frames}")
    if t <= 0:
        raise ValueError(f"num_segments must be positive, got {num_segments}")
    seg = np.arange(t, dtype=np.float64)
    if not train:
        idx = centre_indices(n, t)  # the device's clip mode uses the same function
    else:
        if rng is None:
            raise ValueError("tsn_indices(train=True) needs an rng (numpy.random.Generator), got None")
        start = seg * n / t
        end = (seg + 1.0) * n / t
        idx = np.floor(start + rng.random(t) * (end - start)).astype(np.int64)
        # Guard against float rounding pushing a draw onto the next segment's first frame:
        # the last frame wholly or partly inside segment i is ceil(end) - 1.
        lo = np.floor(start).astype(np.int64)
        hi = np.maximum(lo, np.ceil(end).astype(np.int64) - 1)
        idx = np.clip(idx, lo, hi)
    return np.clip(idx, 0, n - 1)
