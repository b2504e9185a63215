"""What stpr-run writes: the jsonl events and the annotated `--output` video.

Every write is checked: a full disk, a read-only folder or an I/O error becomes an
`OutputError` that names the file and the cause, and ends the run with its own exit
code. The jsonl then holds only whole lines, and an `--output` that could not be
finalised is removed and reported, never left as a half-written file.

Each output is held under a lock (`atomic.exclusive`) while the run writes it: a second
process given the same path is refused at its start (`OutputBusy`) instead of
interleaving its lines or frames with the first's.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from .atomic import LockHeld, exclusive, lock_for, make_temp_file, write_error_line
from .errors import OutputBusy, OutputError  # noqa: F401 (also imported from here)

# Containers that need no index at the end: a run killed mid-recording (kill -9, power cut)
# leaves a file that plays up to its last buffered frames. An .mp4 or .mov is unplayable
# until its index (moov) is written at close, and OpenCV cannot write them fragmented.
VIDEO_CODECS = {".mkv": "mp4v", ".avi": "MJPG"}  # suffix -> fourcc: MPEG-4 in Matroska, MJPEG in AVI
VIDEO_SUFFIXES = tuple(VIDEO_CODECS)
INDEXED_SUFFIXES = (".mp4", ".mov", ".m4v")
_DISK_CHECK_FRAMES = 16  # OpenCV's writer reports no error (only a warning a frame): look at the disk instead


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


def disk_full(folder: Path) -> bool:
    """Whether the file system of `folder` has no block left for this process."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
    return free == 0


def frames_readable(path: Path, frames: int) -> int:
    """How many of the `frames` written to the video `path` a player can reach: `frames`
    when its index says so and its last frame decodes, else what the index says (0 for a
    file without one, e.g. an .mp4 whose moov atom was never written)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))  # a Matroska without its end says < 0
        if count != frames or frames == 0:
            return min(count, frames)
        cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
        ok, _ = cap.read()
        return frames if ok else frames - 1
    finally:
        cap.release()


def _plays(path: Path) -> bool:
    """Whether a video player (OpenCV's FFmpeg) opens `path` and decodes its first frame."""
    cap = cv2.VideoCapture(str(path))
    try:
        return cap.isOpened() and cap.read()[0]
    finally:
        cap.release()


def _temp_prefix(path: Path) -> str:
    return f".tmp-{path.stem}."


def keep_cut_recordings(path: Path) -> str:
    """Deal with what a run killed while writing `path` left (call under `path`'s lock, so no
    live run is writing them): a temp recording that plays is kept, renamed `NAME.cut-<its
    last write>SUFFIX` beside `path`; one that does not is removed. Returns one line saying
    what was done ("" when there was nothing)."""
    folder, prefix, suffix = path.parent if str(path.parent) else Path("."), _temp_prefix(path), path.suffix
    try:
        stale = sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)
                       and len(p.name) == len(prefix) + 8 + len(suffix) and p.is_file())
    except OSError:
        return ""
    kept, removed = [], []
    for tmp in stale:
        try:
            if _plays(tmp):
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(tmp.stat().st_mtime))
                target = folder / f"{path.stem}.cut-{stamp}{suffix}"
                n = 1
                while target.exists():
                    n += 1
                    target = folder / f"{path.stem}.cut-{stamp}-{n}{suffix}"
                size = tmp.stat().st_size
                os.rename(tmp, target)
                kept.append(f"{str(target)!r} ({size / 2**20:.1f} MiB)")
            else:
                tmp.unlink()
                removed.append(repr(tmp.name))
        except OSError:
            continue  # left as it is; the next run tries again
    parts = []
    if kept:
        parts.append(f"kept {len(kept)} recording(s) a killed run left, playable up to the cut: {', '.join(kept)}")
    if removed:
        parts.append(f"removed {len(removed)} unplayable temp file(s) of a killed run: {', '.join(removed)}")
    return "; ".join(parts)


class VideoOut:
    """Annotated frames to `--output` at the source's frame rate, written to a hidden temp
    file that `close()` checks, then renames into place (also after Ctrl-C or SIGTERM).

    The container needs no index (`VIDEO_CODECS`), so a run killed mid-recording leaves a
    temp file that plays up to its last buffered frames; the next run on the same path
    keeps it as `NAME.cut-<time>SUFFIX` (`keep_cut_recordings`) and says so. OpenCV's
    writer says nothing when the disk fills up (only a warning), so the disk is watched
    while writing, and the finished file is read back before it is kept."""

    def __init__(self, path: Path | None, fps: float = 30.0) -> None:
        self.path, self.fps, self.writer = path, fps, None
        self.tmp: Path | None = None
        self.frames = 0
        self._lock: contextlib.ExitStack | None = None
        self.cut_note = ""
        if path is not None:
            self._lock = hold_output(path, "--output")
            self.cut_note = keep_cut_recordings(path)

    @property
    def active(self) -> bool:
        return self.path is not None

    def write(self, frame: np.ndarray) -> None:
        if self.path is None:
            return
        if self.writer is None:
            self._open(frame.shape[1], frame.shape[0])
        self.writer.write(frame)
        self.frames += 1
        if self.frames % _DISK_CHECK_FRAMES == 0 and disk_full(self.path.parent):
            raise self._incomplete(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    def _open(self, w: int, h: int) -> None:
        assert self.path is not None
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        try:  # a unique name: a fixed `.tmp-NAME` could be another file, even the input
            self.tmp = make_temp_file(self.path.parent, _temp_prefix(self.path), self.path.suffix)
        except OSError as e:
            raise write_failure("--output", self.path, e) from None
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
        if not self.writer.isOpened():
            self.writer = None
            self.tmp.unlink(missing_ok=True)
            raise OutputError(f"OpenCV cannot write {str(self.path)!r} (no encoder for {self.path.suffix}); "
                              f"use a {' or '.join(VIDEO_SUFFIXES)} file name")

    def _incomplete(self, err: OSError | None, readable: int | None = None) -> OutputError:
        """Drop the damaged temp file; the error says what was lost and why."""
        assert self.path is not None
        if err is None:  # looked at before the temp file goes and frees its blocks
            err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if disk_full(self.path.parent) else \
                OSError(errno.EIO, "the encoder could not write it")
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
        got = "" if readable is None else f", {readable} of {self.frames} frames readable"
        return write_failure("--output", self.path, err, f" (incomplete{got}, not kept)")

    def close(self) -> None:
        try:
            self._finish()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _finish(self) -> None:
        if self.writer is None:
            return
        assert self.path is not None and self.tmp is not None
        self.writer.release()
        self.writer = None
        if (readable := frames_readable(self.tmp, self.frames)) != self.frames:
            raise self._incomplete(None, readable)
        try:
            with open(self.tmp, "rb+") as f:  # on disk before the rename makes it visible
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        except OSError as e:
            raise self._incomplete(e) from None
