"""The jsonl event log: a `start` line per run, appended (a restart never erases what an
earlier run saved), every write checked, and only whole lines kept when a write fails."""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from .output_paths import hold_output, write_failure


def start_event(bundle: Path, manifest_sha256: str, source: dict) -> dict:
    """The first line each run appends to the jsonl: which bundle served, on what source, when."""
    return {"event": "start", "time": 0.0, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pid": os.getpid(), "bundle": os.path.realpath(bundle), "manifest_sha256": manifest_sha256,
            "source": source}


def _whole_lines_size(path: Path, size: int) -> int:
    """The size of `path` up to its last newline: a run killed mid-write leaves half an
    object at the end, which the next run's lines must not be glued to."""
    if size == 0:
        return 0
    try:
        with open(path, "rb") as f:
            pos = size
            while pos > 0:
                step = min(pos, 65536)
                f.seek(pos - step)
                chunk = f.read(step)
                if (nl := chunk.rfind(b"\n")) >= 0:
                    return pos - step + nl + 1
                pos -= step
    except OSError:
        return size  # unreadable (write-only): append after it as it is
    return 0


class EventLog:
    """jsonl events, one line per prediction, each written at once so a crash loses none.

    The file is appended to, never truncated: a restart (a supervisor's, after exit 3)
    keeps every earlier run's lines, even when its own source then fails to open. Each
    run's lines start with a `start` event (`start_event`). A failed write cuts the file
    back to its last whole line before it raises, so a reader never meets half an object."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.fd, self.size, self.lines = path, None, 0, 0
        self._lock: contextlib.ExitStack | None = None
        if path is None:
            return
        self._lock = hold_output(path, "--jsonl")
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            size = os.fstat(self.fd).st_size
            self.size = _whole_lines_size(path, size)
            if self.size != size:  # under the lock: no other writer, so the tail is a killed run's
                os.ftruncate(self.fd, self.size)
        except OSError as e:
            self._release()
            raise write_failure("--jsonl", path, e) from None

    def write(self, event: dict) -> None:
        if self.fd is None:
            return
        line = (json.dumps(event, allow_nan=False) + "\n").encode("utf-8")
        try:
            done = 0
            while done < len(line):  # os.write may write part of it (a disk filling up)
                done += os.write(self.fd, line[done:])
        except OSError as e:
            self._fail(e)
        self.size, self.lines = self.size + len(line), self.lines + 1

    def close(self) -> None:
        if self.fd is None:
            self._release()
            return
        try:
            os.fsync(self.fd)
        except OSError as e:
            self._fail(e)
        os.close(self.fd)
        self.fd = None
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _fail(self, err: OSError) -> None:
        assert self.fd is not None and self.path is not None
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, self.size)  # back to the last whole line; shrinking needs no free space
        except OSError:
            pass  # the error below says the file is damaged either way
        finally:
            os.close(fd)
            self._release()
        raise write_failure("--jsonl", self.path, err,
                            f" (it keeps its whole lines: {self.lines} from this run)") from None


