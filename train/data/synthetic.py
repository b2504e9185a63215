"""A built-in synthetic action dataset, rendered in-process (no download).

Each clip shows one bright shape over a dark, noisy background, moving at constant
speed along one of five motion families: horizontal, vertical, two diagonals, or scale
(growing/shrinking). A class is a (shape, motion) pair, e.g. ``"circle_moving_left"``.

The two motions of a family are exact time reversals of each other: a clip is rendered
"forward" (right, down, down-right, up-right, growing) from the random draws, and the
other motion returns the same frames in reverse order. So a ``*_moving_left`` clip played
backwards is distributed exactly like the matching ``*_moving_right`` clip and has the
identical multiset of frames: anything that averages over frames (a frame-mean baseline)
cannot separate the pair, and only temporal modelling can. Families differ in their
dynamics, so an expert's temporal signature also tells tasks apart (TD-MoE routing).
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

__all__ = ["CLIP_MEAN", "CLIP_STD", "DEFAULT_MOTIONS", "FAMILIES", "MOTIONS", "SHAPES", "SyntheticActions"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
# (forward, reversed) per family; the forward motion is the one rendered from the draws.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("moving_right", "moving_left"),
    ("moving_down", "moving_up"),
    ("moving_down_right", "moving_up_left"),
    ("moving_up_right", "moving_down_left"),
    ("growing", "shrinking"),
)
MOTIONS: tuple[str, ...] = tuple(m for fam in FAMILIES for m in fam)
DEFAULT_MOTIONS: tuple[str, ...] = MOTIONS[:4]  # right, left, down, up
_FAMILY_OF = {m: i for i, fam in enumerate(FAMILIES) for m in fam}
_REVERSED = {fam[1] for fam in FAMILIES}
# Direction (dx, dy) of the forward motion per translation family; None for scale.
_FORWARD_STEP = (
    (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, -1.0), None,
)
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

_SPLIT_IDS = {"train": 0, "test": 1}
_DEFAULT_CLIPS_PER_CLASS = {"train": 48, "test": 16}
_SHIFT = 4  # cv2 fractional-coordinate bits: positions are drawn with 1/16 px precision
_NOISE_SIGMA = 6.0  # std of the per-pixel Gaussian noise, in uint8 units


def _fixed(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> cv2 fixed-point int32 coordinates (``_SHIFT`` bits)."""
    return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32)


def _draw_shape(img: np.ndarray, shape: str, cx: float, cy: float, size: float,
                color: tuple[int, int, int], bg: tuple[int, int, int]) -> None:
    """Draw a filled ``shape`` of extent ``size`` pixels centred at (cx, cy) into ``img``."""
    aa, r = cv2.LINE_AA, size / 2.0
    c = (int(_fixed(cx)), int(_fixed(cy)))
    if shape == "circle":
        cv2.circle(img, c, int(_fixed(r)), color, -1, aa, _SHIFT)
    elif shape == "ring":
        cv2.circle(img, c, int(_fixed(r)), color, -1, aa, _SHIFT)
        cv2.circle(img, c, int(_fixed(r * 0.5)), bg, -1, aa, _SHIFT)
    elif shape == "square":
        h = r * 0.85
        pts = np.array([[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]])
        cv2.fillPoly(img, [_fixed(pts)], color, aa, _SHIFT)
    elif shape == "triangle":
        pts = np.array([[cx, cy - r], [cx + r * 0.95, cy + r * 0.8], [cx - r * 0.95, cy + r * 0.8]])
        cv2.fillPoly(img, [_fixed(pts)], color, aa, _SHIFT)
    elif shape == "cross":
        w = max(r * 0.36, 0.75)
        # One 12-vertex outline: two overlapping bars in one fillPoly would leave the
        # overlap empty (even-odd fill).
        u = np.array([[-w, -r], [w, -r], [w, -w], [r, -w], [r, w], [w, w],
                      [w, r], [-w, r], [-w, w], [-r, w], [-r, -w], [-w, -w]])
        cv2.fillPoly(img, [_fixed(u + (cx, cy))], color, aa, _SHIFT)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


def _check_names(kind: str, names: Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    names = tuple(names)
    bad = [n for n in names if n not in valid]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"invalid {kind} {list(names)!r} (unknown: {bad!r}, must be non-empty "
                         f"and unique); valid: {', '.join(valid)}")
    return names


class SyntheticActions:
    """Moving-shape action clips; classes are ``f"{shape}_{motion}"``.

    Classes are ordered shape-major, then by ``motions``: with the defaults every run of 4
    classes is one shape moving right, left, down and up (the demo's tasks), holding two
    temporal-only pairs. Other motion families (diagonals, growing/shrinking) are available.

    Sample ``i`` has label ``i // clips_per_class`` and is rendered from
    ``numpy.random.default_rng([seed, split_id, i])``: deterministic, independent of the
    order samples are read in (safe for DataLoader workers), and never shared between the
    train and test splits. ``__getitem__`` returns a ``(T, 3, H, W)`` float tensor normalised
    with ``mean``/``std`` after scaling to [0, 1], and the integer label.
    """

    def __init__(
        self,
        split: str = "train",
        num_frames: int = 8,
        image_size: int = 32,
        clips_per_class: int | None = None,
        seed: int = 0,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        shapes: Sequence[str] = SHAPES,
        motions: Sequence[str] = DEFAULT_MOTIONS,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(_SPLIT_IDS)}")
        if clips_per_class is None:
            clips_per_class = _DEFAULT_CLIPS_PER_CLASS[split]
        for name, value, low in (("num_frames", num_frames, 1), ("image_size", image_size, 8),
                                 ("clips_per_class", clips_per_class, 1), ("seed", seed, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), got {mean!r}, {std!r}")
        self.split = split
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.clips_per_class = int(clips_per_class)
        self.seed = int(seed)
        self.shapes = _check_names("shapes", shapes, SHAPES)
        self.motions = _check_names("motions", motions, MOTIONS)
        self._class_parts = [(sh, m) for sh in self.shapes for m in self.motions]  # (shape, motion) per class
        self.classes: list[str] = [f"{sh}_{m}" for sh, m in self._class_parts]
        self.targets: list[int] = [c for c in range(len(self.classes))
                                   for _ in range(self.clips_per_class)]
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._scale = (1.0 / (255.0 * np.asarray(self.std))).astype(np.float32)
        self._offset = (-np.asarray(self.mean) / np.asarray(self.std)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.targets)

    def raw_clip(self, i: int) -> np.ndarray:
        """Render sample ``i`` as a uint8 RGB array of shape (T, H, W, 3)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = i % len(self)
        label = self.targets[i]
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], i])
        shape, motion = self._class_parts[label]
        return self._render(shape, motion, rng)

    def clip(self, i: int) -> np.ndarray:
        """Sample ``i`` as the tower reads it: ``(T, 3, H, W)`` float32, normalised (torch-free)."""
        # (x / 255 - mean) / std as one multiply-add, in numpy: cheaper than torch ops on a
        # permuted view, which are slow in DataLoader-sized single clips.
        x = self.raw_clip(i).astype(np.float32)
        x *= self._scale
        x += self._offset
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def view_count(self, i: int, views: int) -> int:
        """One: a rendered clip is exactly T frames, so every temporal view is the same frames."""
        return 1

    def views(self, i: int, views: int) -> list[np.ndarray]:
        """Sample ``i``'s distinct temporal views: the clip itself (see `view_count`)."""
        return [self.clip(i)]

    def __getitem__(self, i: int) -> tuple[Any, int]:  # (torch.Tensor, label)
        import torch  # the training loader's tensors; the torch-free head reads `clip`

        return torch.from_numpy(self.clip(i)), self.targets[i]

    def _render(self, shape: str, motion: str, rng: np.random.Generator) -> np.ndarray:
        """Render one clip (T, H, W, 3) uint8 from ``rng``.

        The random draws are the same for every motion (same order, same count): the
        family's forward clip is rendered, and the reversed motion returns it backwards
        in time, noise included. Hence, for two generators in the same state,
        ``_render(s, "moving_right", a) == _render(s, "moving_left", b)[::-1]`` exactly.
        """
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
        if motion not in MOTIONS:
            raise ValueError(f"unknown motion {motion!r}; valid: {', '.join(MOTIONS)}")
        t, n, side = self.num_frames, self.image_size, float(self.image_size)
        bg = tuple(int(v) for v in rng.integers(0, 70, size=3))
        color = tuple(int(v) for v in rng.integers(150, 256, size=3))
        size = rng.uniform(0.22, 0.32) * side
        travel = rng.uniform(0.45, 0.65) * side
        u = rng.random(3)  # where the path sits inside the frame
        # Luminance noise (shared by the 3 channels): a third of the draws, which dominate
        # rendering time at 224 px. Drawn for all T frames up front so it reverses with them.
        noise = rng.standard_normal((t, n, n, 1), dtype=np.float32)
        step = _FORWARD_STEP[_FAMILY_OF[motion]]
        if step is None:  # scale: grow from a small to a large shape around a fixed centre
            sizes = np.linspace(0.35 * size, 1.6 * size, t)
            lo, hi = sizes[-1] / 2.0, side - sizes[-1] / 2.0
            cx, cy = lo + u[0] * (hi - lo), lo + u[1] * (hi - lo)
            centres = np.stack([np.full(t, cx), np.full(t, cy)], 1)
        else:
            sizes = np.full(t, size)
            margin = size / 2.0  # keep the whole shape inside the frame
            room = max(side - 2.0 * margin - travel, 0.0)
            progress = np.linspace(0.0, travel, t)
            coords = []
            for axis in range(2):
                if step[axis] == 0.0:  # the still axis sits anywhere
                    coords.append(np.full(t, margin + u[2] * (side - 2.0 * margin)))
                else:
                    start = margin + u[axis] * room
                    path = start + progress if step[axis] > 0 else start + travel - progress
                    coords.append(path)
            centres = np.stack(coords, 1)
        frames = np.empty((t, n, n, 3), dtype=np.uint8)
        frames[:] = np.array(bg, dtype=np.uint8)
        for k in range(t):
            # Pixel centres sit at integer coordinates: continuous position p is pixel p - 0.5.
            _draw_shape(frames[k], shape, centres[k, 0] - 0.5, centres[k, 1] - 0.5, sizes[k], color, bg)
        noisy = frames + noise * _NOISE_SIGMA  # broadcasts to (T, H, W, 3) float32
        np.clip(noisy, 0.0, 255.0, out=noisy)
        out = np.rint(noisy).astype(np.uint8)
        if motion in _REVERSED:
            out = np.ascontiguousarray(out[::-1])
        return out
