"""What counts as "a folder of frames", for training and the device alike.

One rule on both sides: a folder that trains must run on the device, and the reverse.
Hidden files are never frames: macOS leaves `._0001.jpg` resource forks beside the
real images, which decode to nothing.
"""
from __future__ import annotations

from pathlib import Path

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})  # what cv2.imread decodes everywhere


def frame_files(folder: Path) -> list[Path]:
    """The frame images of `folder`, sorted by name (`000001.jpg` ...), hidden files left out."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file())
