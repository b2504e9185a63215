"""A teaching job as the API shows it, its states, the limits a request must keep, and
the refusal a request gets: an HTTP code and one line."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RECORDING, LEARNING, DONE, FAILED = "recording", "learning", "done", "failed"
MAX_WINDOWS = 64  # more windows of one live session add little and hold the stream's attention for long
MAX_NAME_CHARS = 64  # a class name is a few words: the overlay and the page must show it whole
SWAP_WAIT_S = 120.0  # a delivered bundle not served by then (a watcher that never polls) fails the job


class Refused(Exception):
    """A request the device will not take: `status` is the HTTP code, the message one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    """One teaching request: its state as `/api/jobs` shows it, the rows it recorded and the
    bundle it delivers."""

    id: str
    kind: str  # learn (live windows), clips (uploaded), remove, undo
    name: str | None
    of: int = 0
    state: str = RECORDING
    recorded: int = 0
    error: str = ""
    note: str = ""
    out: Path | None = None  # the bundle this job delivers
    previous: str = ""  # the bundle served when the job was delivered (what undo goes back to)
    created: float = field(default_factory=time.time)
    delivered_at: float | None = None
    rows: list[np.ndarray] = field(default_factory=list)
    last_index: int | None = None

    def public(self) -> dict[str, Any]:
        d = {"id": self.id, "kind": self.kind, "name": self.name, "state": self.state, "recorded": self.recorded,
             "of": self.of, "error": self.error or None, "created": round(self.created, 3)}
        if self.note:
            d["note"] = self.note
        if self.out is not None and self.state == DONE:
            d["bundle"] = str(self.out)
        return d
