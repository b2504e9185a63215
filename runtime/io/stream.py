"""Streaming pieces: the feature ring buffer, sources, and the live capture thread."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import SourceError, SourceFailed, StreamEnded, StreamStalled  # noqa: F401 (also imported from here)
from .frame_folder import IMAGE_EXTS, frame_files


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


def open_capture(source: str | int, read_timeout: float | None = None) -> cv2.VideoCapture:
    """An opened capture. `read_timeout` (s) bounds how long one read of a stream URL may
    block, so the thread that reads it can always finish and release it."""
    if read_timeout is not None and isinstance(source, str):
        ms = int(1000 * read_timeout)
        cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    else:
        cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        if isinstance(source, int):
            raise SourceError(f"camera {source} did not open; check it is connected and free, "
                              "try another --camera index, or use --video PATH")
        raise SourceError(f"could not open {source!r}; check the path or URL and that OpenCV can decode it")
    return cap


def frames_from_folder(folder: Path) -> Iterator[np.ndarray]:
    """The folder's images in name order. Checked now, not at the first frame, so an
    empty or missing folder is a plain error before anything runs."""
    if not folder.is_dir():
        raise SourceError(f"--frames {str(folder)!r} is not a folder; pass a folder of frame images")
    files = frame_files(folder)
    if not files:
        raise SourceError(f"--frames {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_EXTS))}); "
                          "nothing to run on")

    def read() -> Iterator[np.ndarray]:
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise SourceFailed(f"frame {str(f)!r} cannot be decoded")
            yield img

    return read()


def source_fps(cap: cv2.VideoCapture, default: float = 30.0) -> float:
    """The frame rate the source states, or `default` where it states none."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 0.0 < fps < 1000.0 else default


def truncated(name: str, read: int, expected: int) -> SourceFailed | None:
    """The error for a file that stops well before its stated length (None if it did not):
    the same rule in streaming and clip mode, so both give the same exit code."""
    if expected > 0 and read < 0.9 * expected:
        return SourceFailed(f"{name!r} stopped at frame {read} of {expected}: the file is truncated or corrupt")
    return None


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
    if read == 0:  # opened, yet not one frame: as broken as a truncated file
        raise SourceFailed(f"{name!r} opened but no frame could be decoded: the file is truncated or corrupt")
    if (error := truncated(name, read, expected)) is not None:
        raise error


class LatestFrame(threading.Thread):
    """Live capture in its own thread, handing over only the newest frame.

    A frame the consumer never took is dropped and counted: a slow model sees the
    present, not a growing backlog.

    The thread that reads is the one that releases: releasing a capture from another
    thread while this one is inside `cap.read()` frees the decoder under it, which
    crashed stpr-run at exit (SIGSEGV) on live streams. `stop()` only asks, then waits.
    """

    def __init__(self, cap: cv2.VideoCapture) -> None:
        super().__init__(daemon=True, name="stpr-capture")
        self.cap = cap
        self.cond = threading.Condition()
        self.frame: np.ndarray | None = None
        self.index = -1
        self.taken = -1
        self.read_at = 0.0  # time.monotonic() when the newest frame was read
        self.taken_at = 0.0  # read time of the frame `get` handed out last (the web app's lag)
        self.dropped = 0
        self.ended = False
        self._stop_asked = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_asked.is_set():
                ok, frame = self.cap.read()
                with self.cond:
                    if not ok:
                        return  # the end of the stream (or a read timed out): `finally` says so
                    if self.frame is not None and self.taken < self.index:
                        self.dropped += 1
                    self.frame, self.index, self.read_at = frame, self.index + 1, time.monotonic()
                    self.cond.notify_all()
        finally:
            self.cap.release()
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def get(self, timeout: float) -> tuple[int, np.ndarray] | None:
        """The newest frame not yet taken; None at the end of the stream (`live_frames`
        turns that end into `StreamEnded`)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.taken >= self.index and not self.ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StreamStalled(f"no frame for {timeout:.0f} s: the stream stopped delivering")
                self.cond.wait(left)
            if self.taken >= self.index:
                return None
            self.taken, self.taken_at = self.index, self.read_at
            return self.index, self.frame

    def stop(self, wait: float) -> bool:
        """Ask the thread to end and wait up to `wait` s for it to release the capture;
        False if it is still inside a read (see `live_readers_alive`)."""
        self._stop_asked.set()
        if self.is_alive():
            self.join(wait)
        return not self.is_alive()


def live_readers_alive() -> bool:
    """Whether a capture thread is still running: the process must then not tear the
    interpreter down under it (its decoder would be freed mid-read)."""
    return any(isinstance(t, LatestFrame) and t.is_alive() for t in threading.enumerate())


def live_frames(grabber: LatestFrame, timeout: float, name: str) -> Iterator[tuple[int, np.ndarray]]:
    """(capture index, frame) from a started grabber. A live source has no normal end:
    when it stops (server gone, camera unplugged) this raises `StreamEnded`."""
    while (item := grabber.get(timeout)) is not None:
        yield item
    raise StreamEnded(f"the live source {name} ended after {grabber.index + 1} frames (server stopped or "
                      "device lost)")
