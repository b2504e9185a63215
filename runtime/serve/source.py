"""A source as `--serve` and `--loop` see it: frames stamped with their capture time, a
live source reopened when it drops, a file started again at its end.

Without --serve a live source that drops ends the run (exit 3) so a supervisor restarts
it; with --serve the process holds the page and the teaching state, so it retries the
source itself and the page shows the drop and the return.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np

from ..errors import SourceError, StreamEnded, StreamStalled
from ..io.stream import LatestFrame
from .hub import Hub

RETRY_S = 2.0  # between two tries to reopen a lost live source
STOP_WAIT_S = 3.0

Opened = tuple[Iterator[tuple[int, np.ndarray]], "LatestFrame | None", float]


def served_frames(first: Opened, reopen: Callable[[], Opened], *, live: bool, loop: bool, reconnect: bool,
                  hub: Hub | None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, frame) with indices that keep counting across reopenings."""
    frames, grabber, _ = first
    offset, grabbers = 0, [grabber]
    if hub is not None:
        hub.set_source(state="live", error=None)
    try:
        while True:
            last = -1
            lost = None
            try:
                for i, f in frames:
                    last = i
                    if hub is not None:
                        hub.capture_at = grabber.taken_at if grabber is not None else time.monotonic()
                    yield offset + i, f
            except (StreamEnded, StreamStalled) as e:
                if not (live and reconnect):
                    raise
                lost = str(e)
            if not live and not loop:
                if hub is not None:
                    hub.set_source(state="ended", error=None)
                return
            offset += last + 1
            if grabber is not None:
                grabber.stop(wait=STOP_WAIT_S)
            if lost is not None and hub is not None:
                hub.set_source(state="lost", error=lost)
            frames, grabber = _reopen(reopen, hub)
            grabbers.append(grabber)
            if hub is not None and lost is not None:
                hub.set_source(state="live", error=None)
    finally:
        for g in grabbers:
            if g is not None:
                g.stop(wait=STOP_WAIT_S)


def _reopen(reopen: Callable[[], Opened], hub: Hub | None
            ) -> tuple[Iterator[tuple[int, np.ndarray]], LatestFrame | None]:
    while True:
        try:
            frames, grabber, _ = reopen()
            return frames, grabber
        except SourceError as e:  # still gone: say so, and try again (Ctrl-C/SIGTERM end the wait)
            if hub is not None:
                hub.set_source(state="lost", error=str(e))
            time.sleep(RETRY_S)
