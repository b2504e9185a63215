"""What stpr-run writes: the jsonl events and the annotated `--output` video."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")


def check_writable(path: Path | None, option: str) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; give a file name, e.g. {path / 'out'}")
    if not parent.is_dir():
        raise ValueError(f"{option} {str(path)!r}: the folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {str(path)!r}: the folder {str(parent)!r} is not writable")
    if option == "--output" and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--output {str(path)!r}: give a video file name ending in {', '.join(VIDEO_SUFFIXES)}")


class EventLog:
    """jsonl events, one line per prediction, flushed at once so a crash loses none."""

    def __init__(self, path: Path | None) -> None:
        self.f: IO[str] | None = open(path, "w", encoding="utf-8") if path else None

    def write(self, event: dict) -> None:
        if self.f:
            self.f.write(json.dumps(event, allow_nan=False) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None


class VideoOut:
    """Annotated frames to `--output` at the source's frame rate, written to a hidden temp
    file that `close()` finalises and renames into place (also after Ctrl-C or SIGTERM)."""

    def __init__(self, path: Path | None, fps: float = 30.0) -> None:
        self.path, self.fps, self.writer = path, fps, None
        self.tmp = path.with_name(f".tmp-{path.name}") if path else None
        self.frames = 0

    @property
    def active(self) -> bool:
        return self.path is not None

    def write(self, frame: np.ndarray) -> None:
        if self.path is None:
            return
        if self.writer is None:
            h, w = frame.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
            if not self.writer.isOpened():
                self.writer = None
                raise OSError(f"OpenCV cannot write {str(self.path)!r} (no encoder for {self.path.suffix}); "
                              "use a .mp4 or .avi file name")
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.tmp, self.path)
