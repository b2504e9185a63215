"""SIGTERM handled like Ctrl-C: a service manager stopping a command must get the same
clean exit as a person pressing Ctrl-C (files finalised, summary printed)."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

EXIT_SIGTERM = 128 + signal.SIGTERM  # 143, the shell's code for "ended by SIGTERM"


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM; a KeyboardInterrupt, so every
    `except KeyboardInterrupt` / `finally` cleanup runs for it too."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, the first SIGTERM raises `Terminated`; later ones are ignored
    so they cannot cut the cleanup short."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
