"""Streaming pieces: the feature ring buffer, sources, and the live capture thread."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class SourceError(RuntimeError):
    """A camera, video or frame folder that cannot be read, with what to do."""


class StreamStalled(RuntimeError):
    """A live stream stopped delivering frames."""


class FeatureRing:
    """The last T frame features, oldest first: the window the experts see."""

    def __init__(self, frames: int, dim: int) -> None:
        self.buf = np.zeros((frames, dim), dtype=np.float32)
        self.count = 0

    def push(self, feature: np.ndarray) -> None:
        self.buf[self.count % len(self.buf)] = feature
        self.count += 1

    @property
    def full(self) -> bool:
        return self.count >= len(self.buf)

    def window(self) -> np.ndarray:
        """`(T, D)` in time order."""
        start = self.count % len(self.buf)
        return np.concatenate([self.buf[start:], self.buf[:start]]) if self.full else self.buf[: self.count]


def open_capture(source: str | int) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        if isinstance(source, int):
            raise SourceError(f"camera {source} did not open; check it is connected and free, "
                              "try another --camera index, or use --video PATH")
        raise SourceError(f"could not open {source!r}; check the path or URL and that OpenCV can decode it")
    return cap


def frames_from_folder(folder: Path) -> Iterator[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"--frames {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise SourceError(f"frame {str(f)!r} cannot be decoded")
        yield img


def frames_from_capture(cap: cv2.VideoCapture, name: str) -> Iterator[np.ndarray]:
    """Every frame of a file, in order; a file that stops well before its stated
    length is reported as truncated, not taken as a normal end."""
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    read = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        read += 1
        yield frame
    cap.release()
    if expected > 0 and read < 0.9 * expected:
        raise SourceError(f"{name!r} stopped at frame {read} of {expected}: the file is truncated or corrupt")


class LatestFrame(threading.Thread):
    """Live capture in its own thread, handing over only the newest frame.

    A frame the consumer never took is dropped and counted: a slow model sees the
    present, not a growing backlog.
    """

    def __init__(self, cap: cv2.VideoCapture) -> None:
        super().__init__(daemon=True)
        self.cap = cap
        self.cond = threading.Condition()
        self.frame: np.ndarray | None = None
        self.index = -1
        self.taken = -1
        self.dropped = 0
        self.ended = False
        self.stop_flag = False

    def run(self) -> None:
        while not self.stop_flag:
            ok, frame = self.cap.read()
            with self.cond:
                if not ok:
                    self.ended = True
                    self.cond.notify_all()
                    return
                if self.frame is not None and self.taken < self.index:
                    self.dropped += 1
                self.frame, self.index = frame, self.index + 1
                self.cond.notify_all()

    def get(self, timeout: float) -> tuple[int, np.ndarray] | None:
        """The newest frame not yet taken; None at the end of the stream."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.taken >= self.index and not self.ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StreamStalled(f"no frame for {timeout:.0f} s: the stream stopped delivering")
                self.cond.wait(left)
            if self.taken >= self.index:
                return None
            self.taken = self.index
            return self.index, self.frame

    def stop(self) -> None:
        self.stop_flag = True
        self.cap.release()
