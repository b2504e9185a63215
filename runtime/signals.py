"""SIGTERM handled like Ctrl-C: a service manager stopping a command must get the same
clean exit as a person pressing Ctrl-C (files finalised, summary printed)."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

from .exits import EXIT_SIGTERM

__all__ = ["EXIT_SIGTERM", "Terminated", "sigterm_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM; a KeyboardInterrupt, so every
    `except KeyboardInterrupt` / `finally` cleanup runs for it too."""


@contextlib.contextmanager
def sigterm_as_interrupt(sigint: bool = False) -> Iterator[None]:
    """Within the block, the first SIGTERM raises `Terminated`; later ones are ignored
    so they cannot cut the cleanup short. With `sigint`, Ctrl-C is handled the same way
    (the first raises KeyboardInterrupt, later SIGINTs and SIGTERMs are ignored): for
    cleanup that must finish, such as joining a capture thread before the exit."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    stops = (signal.SIGTERM, signal.SIGINT) if sigint else (signal.SIGTERM,)

    def handler(signum: int, frame: object) -> None:
        for s in stops:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {s: signal.signal(s, handler) for s in stops}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
