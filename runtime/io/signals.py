"""SIGTERM handled like Ctrl-C: a service manager stopping a command must get the same
clean exit as a person pressing Ctrl-C (files finalised, summary printed)."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator

import click

from ..exits import EXIT_INTERRUPT, EXIT_SIGTERM

__all__ = ["EXIT_SIGTERM", "InterruptibleCommand", "Terminated", "sigterm_as_interrupt"]


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


class InterruptibleCommand(click.Command):
    """A click command whose Ctrl-C exits 130 (SIGTERM as `Terminated`: 143) with one line
    whenever it comes, also before the command's own handler is in place (while an option's
    check or the command imports torch): click's default is "Aborted!" and exit 1, which a
    script reads as a failure."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        with _interrupt_exits(info_name or self.name):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _interrupt_exits(ctx.info_name or self.name):
            return super().invoke(ctx)


@contextlib.contextmanager
def _interrupt_exits(name: str | None) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        click.echo(f"\n{name}: {'terminated (SIGTERM)' if terminated else 'interrupted'}; nothing was written",
                   err=True)
        sys.exit(EXIT_SIGTERM if terminated else EXIT_INTERRUPT)
