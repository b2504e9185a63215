"""A bundle folder's life on disk: written in a temp folder beside it, swapped in by rename.

Shared by `stpr-export` and `stpr-learn` (torch-free). A bundle is never edited in
place: the new one is assembled in `.tmp-<name>-<pid>-*` and renamed into place only
once it is complete, so a run killed mid-way leaves the old bundle serving and no
half-written one under the bundle's name.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

from .manifest import BundleError, read_manifest

log = logging.getLogger(__name__)


def prepare_target(out: Path, force: bool) -> None:
    """Refuse to overwrite anything but a bundle, and a bundle only with --force."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    try:
        old = read_manifest(out, check_hash=False)
    except BundleError:
        raise BundleError(f"{str(out)!r} exists and is not a bundle; choose a new or empty folder for --out") from None
    if not force:
        src = old.get("source", {})
        raise BundleError(
            f"{str(out)!r} already holds a bundle (from {src.get('run_dir')}, task {src.get('task')}); "
            "pass --force to replace it"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp(out: Path) -> list[Path]:
    """Remove the hidden work folders (`.tmp-<name>-<pid>-*`, `.old-<name>-<pid>-*`) that an
    export or learn of `out` killed before its cleanup left beside it (hundreds of MB for
    ViT-B/16).
    A folder whose process still runs is left alone: that export is in progress."""
    pattern = re.compile(rf"^\.(tmp|old)-{re.escape(out.name)}-(\d+)-")
    removed = []
    for p in out.parent.iterdir() if out.parent.is_dir() else []:
        m = pattern.match(p.name)
        if m and p.is_dir() and int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log.info("removed %s, left by an interrupted stpr-export or stpr-learn", p)
    return removed


def swap_into_place(tmp: Path, out: Path) -> None:
    # Rename the finished bundle into place; an old bundle (with --force) goes aside first
    # and is removed only once the new one is there.
    old = None
    if out.exists():
        old = out.with_name(f".old-{out.name}-{os.getpid()}-{int(time.time())}")
        out.rename(old)
    tmp.rename(out)
    if old is not None and old.is_symlink():  # --out was a link (rmtree refuses links): the link goes, its bundle stays
        old.unlink()
    elif old is not None:
        shutil.rmtree(old, ignore_errors=True)
