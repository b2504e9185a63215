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
import errno
import fcntl
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import LockHeld  # noqa: F401 (also imported from here)

_ATTEMPTS = 100  # name collisions are astronomically rare; this only bounds the loop


def _unique(parent: Path, prefix: str, create: Callable[[Path], None], suffix: str = "") -> Path:
    """Create `parent/prefix<random>suffix` with `create(path)`, retrying on a name clash."""
    for _ in range(_ATTEMPTS):
        candidate = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            create(candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temp name {prefix}* in {parent}")


def make_temp_file(parent: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
    """An empty new file in `parent`, mode 0666 less the umask (as `open(path, 'x')`).
    `suffix` keeps an extension that a writer reads the format from (OpenCV's .mp4)."""
    def create(p: Path) -> None:
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

    return _unique(Path(parent), prefix, create, suffix)


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder in `parent`, mode 0777 less the umask (as `mkdir`)."""
    return _unique(Path(parent), prefix, lambda p: p.mkdir())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = make_temp_file(path.parent, f".tmp-{path.name}.")
    except OSError as e:
        raise _naming(e, path) from None
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        raise _naming(e, path) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _naming(err: OSError, path: Path) -> OSError:
    """`err` with the file the caller wanted written as its filename: a failed write()
    names no file, and the temp name means nothing to the user."""
    return type(err)(err.errno, err.strerror or str(err), str(path)) if err.errno else err


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EROFS, errno.EACCES, errno.EPERM}
_WRITE_ONLY = _FULL | {errno.EROFS}  # errors only a write gives (EACCES and EIO come from reads too)
_WRITE_WORDS = ("write failed", "failed writing", "no space left", "file too large", "read-only file system")


def as_write_error(err: BaseException, target: str | os.PathLike | None = None) -> OSError | None:
    """`err` as a failed write (None when it is something else: a bug, a failed read):
    an OSError only a write gives or one about a file under `target`, or a RuntimeError
    that the C++ writers of torch or onnx raise, which say what failed only in their text."""
    if isinstance(err, RuntimeError):
        text = str(err).strip()
        if not any(w in text.lower() for w in _WRITE_WORDS):
            return None
        return OSError(0, text.splitlines()[-1][:200], None if target is None else str(target))
    if isinstance(err, OSError):
        under = target is not None and err.filename is not None and \
            os.path.realpath(err.filename).startswith(os.path.realpath(target))
        return err if under or err.errno in _WRITE_ONLY else None
    return None


def write_error_line(err: OSError, target: str | None = None, detail: str = "") -> str:
    """One line for a failed write: the file (`target`, else the error's filename), the
    system's reason, and what to do about it."""
    target = target or (repr(str(err.filename)) if err.filename else "a file")
    cause = err.strerror or (os.strerror(err.errno) if err.errno else str(err) or type(err).__name__)
    fix = "free space or write elsewhere" if err.errno in _FULL else \
        "write to a folder you can write to" if err.errno in _DENIED else "check the disk, or write elsewhere"
    return f"cannot write {target}: {cause}{detail}; {fix}"


def lock_for(target: str | os.PathLike) -> Path:
    """The lock file of `target` (a file or folder that one process at a time may write):
    `.NAME.lock` beside where it really lives, so every spelling of the path (a link, `.`,
    relative or absolute) meets the same lock."""
    real = Path(os.path.realpath(target))
    return real.parent / f".{real.name}.lock"


_LOCK_POLL_S = 0.05


@contextlib.contextmanager
def exclusive(lock: str | os.PathLike, wait: float = 0.0) -> Iterator[None]:
    """Hold the lock file `lock` for the block, or raise `LockHeld` (at once, or after
    `wait` seconds of trying: for holders that keep it a moment, such as a read-modify-write).

    flock, so a killed holder leaves no stale lock (the kernel drops it). The file is
    removed at the end; a process that opened it just before then finds, after its lock,
    that the name now means another file, and starts again on the new one."""
    lock = Path(lock)
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(_LOCK_POLL_S)
                continue
            raise LockHeld(str(lock)) from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    # allow_nan=False: NaN is not JSON; callers turn undefined values into null first.
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
