"""TSN test-time sampling, shared by training evaluation and the device's clip mode,
so both pick the very same frames of a video; the extra temporal views `stpr-learn
--views` reads from a clip longer than T; and the crops that give a clip more head rows,
on the device (`stpr-learn --crops`) and in training (`head.crops`), one function for both."""
from __future__ import annotations

import cv2
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


# Spatial views: (top, left, side) of a square crop as fractions of the model-sized frame;
# the crop is resized back to the model's size. "corners": the frame and its four corners at 7/8.
# The names are contract.HEAD_CROPS (what head.crops and --crops accept).
CROPS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "none": ((0.0, 0.0, 1.0),),
    "corners": ((0.0, 0.0, 1.0), (0.0, 0.0, 0.875), (0.0, 0.125, 0.875), (0.125, 0.0, 0.875),
                (0.125, 0.125, 0.875)),
}


def crop_view(x: np.ndarray, box: tuple[float, float, float]) -> np.ndarray:
    """`(T, 3, S, S)` preprocessed frames -> the same crop of each, resized back to S."""
    top, left, side = box
    if side >= 1.0:
        return x
    S = x.shape[-1]
    n = max(1, round(side * S))
    t, lft = round(top * S), round(left * S)
    hwc = x[:, :, t:t + n, lft:lft + n].transpose(0, 2, 3, 1)
    return np.stack([cv2.resize(f, (S, S), interpolation=cv2.INTER_CUBIC) for f in hwc]).transpose(0, 3, 1, 2)
