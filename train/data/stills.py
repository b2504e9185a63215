"""Captioned still images for pretraining the demo's tiny CLIP (`scripts/data/pretrain_tiny_clip.py`).

Each image shows one shape of the demo (`synthetic.SHAPES`) over the demo's dark, noisy
background, with a colour, a place in the frame and, in most images, a *static* motion
cue: faded copies of the shape behind it (a trail) for the eight directions, darker
inner copies for "growing", faded larger copies for "shrinking". Its caption names some
of those attributes in the words the demo's class names use ("a red circle moving left
at the top"), so the text tower learns what "moving left" means while the demo's clips,
which carry no trail, keep the direction visible only over time. Real CLIP is in the same
place: it knows the words from blurred photos, not from any single frame of a video.

`positives(images, captions)` says which caption fits which image (every attribute a
caption names must match), the mask a multi-positive contrastive loss needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .synthetic import _FAMILY_OF, _FORWARD_STEP, _NOISE_SIGMA, MOTIONS, SHAPES, _draw_shape

__all__ = ["COLOURS", "Caption", "Still", "render_still", "sample_stills", "caption_for", "positives",
           "motion_words", "place_words"]

# Named colours (RGB). The demo's clips use random light colours that need no name.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45), "green": (60, 200, 70), "blue": (70, 110, 245), "yellow": (235, 220, 60),
    "purple": (170, 80, 230), "cyan": (60, 215, 225), "orange": (245, 150, 40), "white": (235, 235, 235),
}
_PLACES_X = ("left", None, "right")
_PLACES_Y = ("top", None, "bottom")


@dataclass(frozen=True)
class Still:
    """The attributes of one still image; `colour` None = an unnamed light colour,
    `motion` None = no motion cue, `place` None = the centre."""

    shape: str
    colour: str | None
    motion: str | None
    place: str | None


@dataclass(frozen=True)
class Caption:
    """What a caption names; None = the caption says nothing of that attribute."""

    text: str
    shape: str
    colour: str | None
    motion: str | None
    names_place: bool  # whether the caption says where the shape is
    place: str | None  # where it is, if it says so (None = the centre)


def motion_words(motion: str) -> str:
    """`"moving_down_right"` -> `"moving down right"`, as the demo's class names read."""
    return motion.replace("_", " ")


def place_words(place: str | None) -> str:
    return "in the centre" if place is None else f"at the {place}"


def _place_of(cx: float, cy: float, side: float) -> str | None:
    col = _PLACES_X[min(2, int(3 * cx / side))]
    row = _PLACES_Y[min(2, int(3 * cy / side))]
    words = [w for w in (row, col) if w]
    return " ".join(words) if words else None


def _direction(motion: str) -> tuple[float, float] | None:
    """Unit direction of travel of a translation motion; None for growing/shrinking."""
    step = _FORWARD_STEP[_FAMILY_OF[motion]]
    if step is None:
        return None
    dx, dy = step
    forward = motion == MOTIONS[2 * _FAMILY_OF[motion]]
    s = 1.0 if forward else -1.0
    n = float(np.hypot(dx, dy))
    return s * dx / n, s * dy / n


def _blend(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a, b))  # type: ignore[return-value]


def render_still(still: Still, rng: np.random.Generator, size_px: int = 32) -> tuple[np.ndarray, Still]:
    """Render `still` as a uint8 RGB `(H, W, 3)` image; returns it with the attributes as
    drawn (the place is read off where the shape landed)."""
    side = float(size_px)
    bg = tuple(int(v) for v in rng.integers(0, 70, size=3))
    if still.colour is None:
        colour = tuple(int(v) for v in rng.integers(150, 256, size=3))
    else:
        base = np.asarray(COLOURS[still.colour])
        colour = tuple(int(v) for v in np.clip(base + rng.integers(-18, 19, size=3), 0, 255))
    size = rng.uniform(0.22, 0.32) * side
    margin = size / 2.0
    cx, cy = (margin + rng.random(2) * (side - 2 * margin)).tolist()
    img = np.empty((size_px, size_px, 3), dtype=np.uint8)
    img[:] = np.array(bg, dtype=np.uint8)
    spacing = rng.uniform(0.18, 0.3) * side  # how far apart the trail's copies sit
    inner: list[tuple[float, float]] = []  # (scale, fade) of copies drawn over the shape
    if still.motion is not None:
        d = _direction(still.motion)
        if d is not None:  # a trail: the shape's past places, fading with age
            for k, fade in ((3, 0.85), (2, 0.7), (1, 0.5)):
                _draw_shape(img, still.shape, cx - k * spacing / 3 * d[0] - 0.5, cy - k * spacing / 3 * d[1] - 0.5,
                            size, _blend(colour, bg, fade), bg)
        elif still.motion == "shrinking":  # it was larger: faded larger copies behind it
            for scale, fade in ((1.9, 0.85), (1.45, 0.65)):
                _draw_shape(img, still.shape, cx - 0.5, cy - 0.5, size * scale, _blend(colour, bg, fade), bg)
        else:  # growing: it was smaller: darker copies inside it
            inner = [(0.7, 0.45), (0.4, 0.7)]
    _draw_shape(img, still.shape, cx - 0.5, cy - 0.5, size, colour, bg)
    for scale, fade in inner:
        _draw_shape(img, still.shape, cx - 0.5, cy - 0.5, size * scale, _blend(colour, bg, fade), bg)
    noisy = img + rng.standard_normal((size_px, size_px, 1), dtype=np.float32) * _NOISE_SIGMA
    out = np.rint(np.clip(noisy, 0.0, 255.0)).astype(np.uint8)
    return out, Still(still.shape, still.colour, still.motion, _place_of(cx, cy, side))


def sample_stills(n: int, rng: np.random.Generator, size_px: int = 32,
                  p_static: float = 0.3,
                  p_unnamed_colour: float = 0.3) -> tuple[np.ndarray, list[Still], list[Caption]]:
    """`n` random images `(n, H, W, 3)` uint8, their attributes and one caption each.

    A caption always names the shape; it names the motion of most moving images, the
    colour of most named-colour images and the place of half. Static images are never
    captioned with a motion (a still frame shows none).
    """
    colours = list(COLOURS)
    images = np.empty((n, size_px, size_px, 3), dtype=np.uint8)
    stills, caps = [], []
    for i in range(n):
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = None if rng.random() < p_unnamed_colour else colours[rng.integers(len(colours))]
        motion = None if rng.random() < p_static else MOTIONS[rng.integers(len(MOTIONS))]
        images[i], drawn = render_still(Still(shape, colour, motion, None), rng, size_px)
        stills.append(drawn)
        caps.append(caption_for(drawn, rng))
    return images, stills, caps


def caption_for(still: Still, rng: np.random.Generator) -> Caption:
    colour = still.colour if still.colour is not None and rng.random() < 0.7 else None
    motion = still.motion if still.motion is not None and rng.random() < 0.85 else None
    says_place = rng.random() < 0.5
    words = ["a"] if rng.random() < 0.5 else []
    words += [colour] if colour else []
    words.append(still.shape)
    if motion:
        words.append(motion_words(motion))
    if says_place:
        words.append(place_words(still.place))
    return Caption(" ".join(words), still.shape, colour, motion, says_place, still.place)


def positives(stills: list[Still], captions: list[Caption]) -> np.ndarray:
    """`M (N, U)`: True where image i has every attribute caption j names."""
    def codes(values: list) -> np.ndarray:  # equal values, equal integers (None included)
        table = {v: i for i, v in enumerate(dict.fromkeys(values))}
        return np.array([table[v] for v in values])

    M = np.ones((len(stills), len(captions)), dtype=bool)
    for attr in ("shape", "colour", "motion", "place"):
        img = [getattr(s, attr) for s in stills]
        cap = [getattr(c, attr) for c in captions]
        both = codes(img + cap)
        match = both[: len(img), None] == both[None, len(img):]
        if attr == "place":  # a caption that does not say where fits every place
            named = np.array([c.names_place for c in captions])
        else:  # a caption that does not name the attribute (None) fits every value
            named = np.array([v is not None for v in cap])
        M &= match | ~named[None, :]
    return M
