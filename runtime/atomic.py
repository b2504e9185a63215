"""Atomic file writes: a temp file in the same folder, fsync, then rename.

Torch-free, so the training side, the exporter and the device runtime share it.
A process killed mid-write leaves the previous file intact and at worst a stray
`.tmp-*` file that no reader picks up.

Temp files and folders are created with the permissions a plain `open()` or
`mkdir()` would give (0666 / 0777 less the umask), not tempfile's private 0600 /
0700: a bundle or run folder must be readable by whoever the umask allows, e.g. a
service account running `stpr-run`.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator

_ATTEMPTS = 100  # name collisions are astronomically rare; this only bounds the loop


def _unique(parent: Path, prefix: str, create: Callable[[Path], None]) -> Path:
    """Create `parent/prefix<random>` with `create(path)`, retrying on a name clash."""
    for _ in range(_ATTEMPTS):
        candidate = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            create(candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temp name {prefix}* in {parent}")


def make_temp_file(parent: str | os.PathLike, prefix: str) -> Path:
    """An empty new file in `parent`, mode 0666 less the umask (as `open(path, 'x')`)."""
    def create(p: Path) -> None:
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

    return _unique(Path(parent), prefix, create)


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder in `parent`, mode 0777 less the umask (as `mkdir`)."""
    return _unique(Path(parent), prefix, lambda p: p.mkdir())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = make_temp_file(path.parent, f".tmp-{path.name}.")
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    # allow_nan=False: NaN is not JSON; callers turn undefined values into null first.
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
