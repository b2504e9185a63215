#!/usr/bin/env python3
"""Build a ``folder`` dataset of real photographs in motion, to test StPR beyond synthetic shapes.

    python scripts/data/make_photo_motion.py --out data/photo_motion [--images coffee,rocket] [--seed 0]

Writes ``OUT/<photo>_moving_<motion>/clip_NNN/000001.png ...`` (what ``--dataset folder``
reads). The photos are the colour ones bundled in the scikit-image wheel (``skimage.data``:
no download at run time). A clip is a window sliding over the photo (a camera pan), so the
picture content moves across the frame in the class's direction; "growing" zooms in.

As in ``train/data/synthetic.py`` each family is rendered forward from the random draws
and its other motion is the same clip backwards in time, noise included: "moving right" is
"moving left" reversed in distribution, and anything averaging over frames cannot tell
them apart. Per clip the window size, start, speed, brightness, tint and noise are drawn
from a generator seeded by (--seed, photo, motion, clip index): reproducible, and stable
when photos or motions are added. Prints a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

# Colour photographs that skimage.data loads from files inside the wheel (checked with
# scikit-image 0.26 and no pooch installed, i.e. with no way to download).
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    name: (lambda name=name: _skimage_data(name))
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
}
PHOTOS["motorcycle"] = lambda: _skimage_data("stereo_motorcycle")[0]
DEFAULT_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
# motion -> (window step (dx, dy) per unit progress, or None for a zoom; played reversed?).
# The window moving right makes the picture move left, so "left" is the forward render.
MOTIONS: dict[str, tuple[tuple[float, float] | None, bool]] = {
    "left": ((1.0, 0.0), False), "right": ((1.0, 0.0), True),
    "up": ((0.0, 1.0), False), "down": ((0.0, 1.0), True),
    "up_left": ((1.0, 1.0), False), "down_right": ((1.0, 1.0), True),
    "down_left": ((1.0, -1.0), False), "up_right": ((1.0, -1.0), True),
    "growing": (None, False), "shrinking": (None, True),
}
DEFAULT_MOTIONS = ("left", "right", "up", "down")
NOISE_SIGMA = 4.0  # per-pixel luminance noise (uint8 units): sensor-like, below the picture's detail


def _skimage_data(name: str):
    try:
        import skimage.data
    except ModuleNotFoundError:
        sys.exit("make_photo_motion: needs scikit-image (pip install scikit-image), whose wheel ships the photos")
    return getattr(skimage.data, name)()


def class_name(photo: str, motion: str) -> str:
    """Folder name and class name: ``coffee_moving_left``, ``coffee_growing`` (the demo's words)."""
    return f"{photo}_{motion}" if MOTIONS[motion][0] is None else f"{photo}_moving_{motion}"


def _windows(h: int, w: int, step: tuple[float, float] | None, t: int,
             rng: np.random.Generator) -> np.ndarray:
    """(T, 3) window top-left x, y and side in photo pixels for the forward render."""
    short = min(h, w)
    progress = np.linspace(0.0, 1.0, t)
    if step is None:  # zoom in around a fixed centre, evenly in log-scale
        big = rng.uniform(0.5, 0.8) * short
        sides = big * rng.uniform(1.5, 2.0) ** -progress
        cx, cy = rng.uniform(big / 2, w - big / 2), rng.uniform(big / 2, h - big / 2)
        return np.stack([cx - sides / 2, cy - sides / 2, sides], 1)
    side = rng.uniform(0.3, 0.5) * short  # crop scale
    travel = rng.uniform(0.4, 0.8) * side  # speed: path length over the clip
    u = rng.random(2)  # where the path sits in the photo
    coords = []
    for axis, extent in ((0, w), (1, h)):
        d = step[axis]
        room = extent - side - abs(d) * travel  # >= 0: side + travel <= 0.9 * short side
        start = u[axis] * room + (travel if d < 0 else 0.0)
        coords.append(start + d * travel * progress)
    return np.stack([coords[0], coords[1], np.full(t, side)], 1)


def render_clip(photo: np.ndarray, motion: str, rng: np.random.Generator, frames: int, size: int) -> np.ndarray:
    """One clip (T, size, size, 3) uint8 RGB of ``photo`` (H, W, 3 RGB) moving per ``motion``.

    Both motions of a family make the same draws in the same order, so for generators in
    the same state ``render_clip(p, "right", a) == render_clip(p, "left", b)[::-1]`` exactly.
    """
    step, reverse = MOTIONS[motion]
    h, w = photo.shape[:2]
    win = _windows(h, w, step, frames, rng)
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, size=3)  # brightness and a slight tint
    noise = rng.standard_normal((frames, size, size, 1), dtype=np.float32) * NOISE_SIGMA
    # Shrink the photo once (INTER_AREA: no aliasing) so the smallest window is `size` px;
    # the per-frame sub-pixel crops then resample by at most the zoom factor.
    f = size / win[:, 2].min()
    small = cv2.resize(photo, (max(size, round(w * f)), max(size, round(h * f))), interpolation=cv2.INTER_AREA)
    out = np.empty((frames, size, size, 3), np.float32)
    for k, (x, y, side) in enumerate(win * f):
        a = side / size  # source pixels per output pixel; pixel centres at +0.5
        m = np.array([[a, 0.0, x + 0.5 * a - 0.5], [0.0, a, y + 0.5 * a - 0.5]])
        out[k] = cv2.warpAffine(small, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT)
    out = np.rint(np.clip(out * gain.astype(np.float32) + noise, 0.0, 255.0)).astype(np.uint8)
    return np.ascontiguousarray(out[::-1]) if reverse else out


def _names(text: str, valid: dict, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names or len(set(names)) != len(names):
        sys.exit(f"make_photo_motion: bad --{what} {text!r} (unknown: {bad}); valid: {','.join(valid)}")
    return names


def build(out: Path, images: list[str], motions: list[str], clips: int, frames: int, size: int, seed: int) -> dict:
    """Write the dataset to ``out`` atomically and return the summary."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        sys.exit(f"make_photo_motion: --out {out} exists and is not an empty folder; choose a new one")
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and beside OUT: the rename is atomic (same file system), and the folder reader
    # ignores hidden entries should a stopped run leave it behind.
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for photo_name in images:
            photo = np.ascontiguousarray(PHOTOS[photo_name]()[..., :3])
            for motion in motions:
                cls = tmp / class_name(photo_name, motion)
                for i in range(clips):
                    rng = np.random.default_rng([seed, zlib.crc32(photo_name.encode()), zlib.crc32(motion.encode()), i])
                    clip_dir = cls / f"clip_{i:03d}"
                    clip_dir.mkdir(parents=True)
                    for k, frame in enumerate(render_clip(photo, motion, rng, frames, size)):
                        # PNG: lossless, so the noise and sub-pixel motion survive as drawn.
                        if not cv2.imwrite(str(clip_dir / f"{k + 1:06d}.png"), frame[..., ::-1]):
                            raise OSError(f"could not write {clip_dir / f'{k + 1:06d}.png'}")
        tmp.rename(out)  # replaces an empty folder at `out`, if any
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(images) * len(motions)
    return {"out": str(out), "images": images, "motions": motions, "classes": n, "clips": n * clips,
            "frames": n * clips * frames, "frames_per_clip": frames, "size": size, "seed": seed,
            "seconds": round(time.perf_counter() - t0, 2)}


EPILOG = """Prints a JSON summary (classes, clips, frames). Takes about 30 s on this machine (2 CPU cores,
shared with other jobs) with the defaults."""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--out", type=Path, required=True, help="dataset folder to create (absent or empty)")
    p.add_argument("--images", default=",".join(DEFAULT_IMAGES), help=f"photos, from: {','.join(PHOTOS)}")
    p.add_argument("--motions", default=",".join(DEFAULT_MOTIONS), help=f"from: {','.join(MOTIONS)}")
    p.add_argument("--clips-per-class", type=int, default=48, help="clips per class; data.holdout of them test")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--size", type=int, default=32, help="frame side in pixels (stpr-tiny's input: 32)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if min(a.clips_per_class, a.frames) < 1 or a.size < 8 or a.seed < 0:
        p.error("--clips-per-class and --frames must be >= 1, --size >= 8, --seed >= 0")
    images, motions = _names(a.images, PHOTOS, "images"), _names(a.motions, MOTIONS, "motions")
    print(json.dumps(build(a.out, images, motions, a.clips_per_class, a.frames, a.size, a.seed)))


if __name__ == "__main__":
    main()
