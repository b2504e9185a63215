"""Frame preprocessing with OpenCV, exactly as the manifest says (and as open_clip does):
shorter side resized to `size` (bicubic), centre crop, BGR -> RGB, /255, (x - mean) / std."""
from __future__ import annotations

import cv2
import numpy as np


def preprocess(frame_bgr: np.ndarray, size: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """An OpenCV BGR uint8 frame `(H, W, 3)` -> `(3, size, size)` float32."""
    if frame_bgr is None or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) colour frame, got {None if frame_bgr is None else frame_bgr.shape}")
    h, w = frame_bgr.shape[:2]
    scale = size / min(h, w)
    if (h, w) != (size, size):
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        frame_bgr = cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_CUBIC)
        top, left = (nh - size) // 2, (nw - size) // 2
        frame_bgr = frame_bgr[top : top + size, left : left + size]
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return ((rgb - mean) / std).transpose(2, 0, 1).astype(np.float32)
