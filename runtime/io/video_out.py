"""The annotated `--output` video: written in a container that needs no index, so a run
killed mid-recording leaves a file that plays to its last frames; every write checked
(a full disk becomes an `OutputError` naming the file), and what a killed run left
behind is kept or removed on the next start."""
from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

import cv2
import numpy as np

from ..atomic import make_temp_file
from ..errors import OutputError
from .output_paths import VIDEO_CODECS, VIDEO_SUFFIXES, hold_output, write_failure

_DISK_CHECK_FRAMES = 16  # OpenCV's writer reports no error (only a warning a frame): look at the disk instead


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
