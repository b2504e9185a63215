"""What the stream hands the web server: the latest frame, recent events, the source's state.

The stream thread only stores references under a short lock; rendering and encoding happen
on the server's side, once per new frame and only while somebody looks. So a viewer that
stops reading, or eight of them, cannot slow a prediction down.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from ..io.overlay import draw_overlay

EVENTS_KEPT = 2000  # the ring the API serves from; older events are in --jsonl
FPS_WINDOW_S = 5.0  # the frame rate shown is over the last few seconds, not since start


@dataclass
class Frame:
    seq: int  # counts frames handed over, from 1
    image: np.ndarray  # the source frame, not yet drawn on
    event: dict | None  # the latest prediction when the frame was handled
    fps: float
    captured: float  # time.monotonic() when the source delivered it
    ready: float  # time.monotonic() when the stream was done with it


class Hub:
    """Thread-safe hand-over between the stream (producer) and the server (consumers)."""

    def __init__(self, jpeg_quality: int = 80) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._jpeg: tuple[Frame, bytes, float] | None = None  # the last encoding and when it was made
        self._encode_lock = threading.Lock()
        self._events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self._seq = 0
        self._frames_seen = 0
        self._times: deque[float] = deque()
        self.jpeg_quality = jpeg_quality
        self.capture_at: float | None = None  # set by the source wrapper just before a frame is handled
        self.source: dict[str, Any] = {"state": "starting"}
        self.serving: Any = None  # the Recognizer the stream predicts with now
        self.closing = threading.Event()
        self.listeners: list[Callable[[], None]] = []  # woken on each event (the server's loop)

    # --- the stream's side: cheap, never blocks on a client -------------------------
    def put_frame(self, image: np.ndarray, event: dict | None, fps: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._frames_seen += 1
            self._times.append(now)
            while self._times and now - self._times[0] > FPS_WINDOW_S:
                self._times.popleft()
            self._frame = Frame(self._frames_seen, image, event, fps, self.capture_at or now, now)
        for wake in list(self.listeners):
            wake()

    def put_event(self, event: dict) -> int:
        """Add an event (a prediction, a swap, a job's step) and return its `seq`."""
        with self._lock:
            self._seq += 1
            self._events.append({"seq": self._seq, **event})
            seq = self._seq
        for wake in list(self.listeners):
            wake()
        return seq

    def set_source(self, **state: Any) -> None:
        """The source's state (`live`, `lost`, `ended`, ...), shown on the page and in /api/status."""
        with self._lock:
            changed = state.get("state") != self.source.get("state")
            self.source = {**self.source, **state, "since": time.time() if changed else self.source.get("since")}
        if changed:
            self.put_event({"event": "source", **{k: v for k, v in self.source.items()}})

    # --- the server's side ------------------------------------------------------------
    def events_after(self, after: int, limit: int = 500) -> tuple[list[dict], int]:
        """Events with seq > `after` (at most `limit`, oldest first) and the newest seq."""
        with self._lock:
            if not self._events:
                return [], self._seq
            start = max(0, after + 1 - self._events[0]["seq"])  # seqs are consecutive: index, not scan
            return list(itertools.islice(self._events, start, start + limit)), self._seq

    def latest_frame(self) -> Frame | None:
        with self._lock:
            return self._frame

    def view(self, after: int, min_interval: float) -> tuple[Frame, bytes] | float | None:
        """What to send a viewer that has frame `after`: (frame, annotated JPEG); or the seconds
        to wait first, since the encoder runs at most once per `min_interval` however many
        viewers ask (one encoding serves them all); or None while no newer frame exists."""
        with self._encode_lock:
            now = time.monotonic()
            cached = self._jpeg
            latest = self.latest_frame()
            if cached is not None and cached[0].seq > after and \
                    (now - cached[2] < min_interval or latest is None or cached[0].seq == latest.seq):
                return cached[0], cached[1]
            if latest is None or latest.seq <= after:
                return None
            if cached is not None and now - cached[2] < min_interval:
                return min_interval - (now - cached[2])
            annotated = draw_overlay(latest.image, latest.event, latest.fps)
            ok, buf = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise ValueError("the frame could not be encoded as JPEG")
            self._jpeg = (latest, buf.tobytes(), now)
            return latest, self._jpeg[1]

    def fps(self) -> float:
        with self._lock:
            t = self._times
            return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def lag_ms(self) -> float | None:
        """Capture to ready on the device for the latest frame; the page adds its transport."""
        with self._lock:
            f = self._frame
        return None if f is None else round(1000 * (f.ready - f.captured), 1)

    def close(self) -> None:
        self.closing.set()
        for wake in list(self.listeners):  # waiting handlers see `closing` now, not at their timeout
            wake()
