"""Where stpr-run may write its outputs, checked before anything opens, and the lock
each output is held under while a run writes it: a second process given the same path
is refused at its start (`OutputBusy`) instead of interleaving its lines or frames."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..atomic import LockHeld, exclusive, lock_for, write_error_line
from ..errors import OutputBusy, OutputError

# Containers that need no index at the end: a run killed mid-recording (kill -9, power cut)
# leaves a file that plays up to its last buffered frames. An .mp4 or .mov is unplayable
# until its index (moov) is written at close, and OpenCV cannot write them fragmented.
VIDEO_CODECS = {".mkv": "mp4v", ".avi": "MJPG"}  # suffix -> fourcc: MPEG-4 in Matroska, MJPEG in AVI
VIDEO_SUFFIXES = tuple(VIDEO_CODECS)
INDEXED_SUFFIXES = (".mp4", ".mov", ".m4v")


def write_failure(option: str, path: Path, err: OSError, detail: str = "") -> OutputError:
    """The one-line error for a failed write of `path`, with the system's reason."""
    return OutputError(write_error_line(err, f"{option} {str(path)!r}", detail))


def check_writable(path: Path | None, option: str) -> None:
    """Refuse an output path that cannot be written, before any work is done: a wrong path
    is a `ValueError` (a usage error), a folder or file without write permission an
    `OutputError` (the write error's exit code, as `--help` says)."""
    if path is None:
        return
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; give a file name, e.g. {path / 'out'}")
    if not parent.is_dir():
        raise ValueError(f"{option} {str(path)!r}: the folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {option} {str(path)!r}: the folder {str(parent)!r} is not writable; "
                          "write to a folder you can write to")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option} {str(path)!r} exists and is read-only; remove it or pick another name")
    if option == "--output" and path.suffix.lower() in INDEXED_SUFFIXES:
        raise ValueError(f"--output {str(path)!r}: a {path.suffix} file is unplayable until its index is written at "
                         "the end, so a kill or power cut would lose the whole recording; give a .mkv (MPEG-4) or "
                         ".avi (MJPEG) name, which plays up to the cut (remux it later if you need "
                         f"{path.suffix}: ffmpeg -i {path.stem}.mkv -c copy {path.name})")
    if option == "--output" and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--output {str(path)!r}: give a video file name ending in {', '.join(VIDEO_SUFFIXES)}")


def _same_file(a: Path, b: Path) -> bool:
    # realpath follows symbolic links (also of folders on the way); samefile catches hard links.
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet: not a hard link of the other
        return False


def _inside(path: Path, folder: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(folder).rstrip(os.sep) + os.sep)


def check_distinct(outputs: list[tuple[str, Path | None]], inputs: list[tuple[str, Path | None]]) -> None:
    """Refuse an output that is an input or another output (an input folder: anything in it).

    Writing starts by truncating or replacing the file, so a clash would destroy the
    source footage or lose one of the outputs; the paths are compared resolved."""
    given = [(o, p) for o, p in outputs if p is not None]
    for i, (option, path) in enumerate(given):
        for other, src in inputs:
            if src is None:
                continue
            if _same_file(path, src) or (src.is_dir() and _inside(path, src)):
                where = "is" if _same_file(path, src) else "is inside"
                raise ValueError(f"{option} {str(path)!r} {where} the input {other} {str(src)!r}: writing it "
                                 f"would destroy the input; give {option} another path")
        for other, earlier in given[:i]:
            if _same_file(path, earlier):
                raise ValueError(f"{option} {str(path)!r} is also the {other} file: one would overwrite the "
                                 f"other; give them different paths")


def hold_output(path: Path, option: str) -> contextlib.ExitStack:
    """The lock of output `path`, held until the returned stack closes; `OutputBusy` when
    another process holds it (a second stpr-run on the same file)."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(exclusive(lock_for(path)))
    except LockHeld:
        raise OutputBusy(f"{option} {str(path)!r} is being written by another process now (another stpr-run); "
                         f"wait for it to end or give {option} another path") from None
    except OSError as e:
        raise write_failure(option, path, e) from None
    return stack


