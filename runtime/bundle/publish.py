"""Publish a bundle under a stable path that `stpr-run --watch` follows.

The stable path is a symlink switched by rename: a new symlink is made beside it
and `os.replace`d over it, which POSIX makes atomic, so a reader resolving the link
sees the old bundle or the new one, never a half-copied folder. Bundles themselves
are never modified in place (each export is a new folder), which is what makes the
switch safe to watch.

    bundles/task3/            <- stpr-export ... --out bundles/task3 --publish bundles/current
    bundles/current -> task3  <- stpr-run --bundle bundles/current --watch
"""
from __future__ import annotations

import os
from pathlib import Path

from .manifest import verify_bundle


def publish(bundle: str | Path, link: str | Path) -> Path:
    """Point `link` at `bundle` in one atomic rename; returns the link.

    The bundle is verified first (a link never points at a bundle that would be
    refused). The link target is relative when both live in one folder, so the pair
    can be copied or mounted elsewhere.
    """
    bundle, link = Path(bundle), Path(link)
    verify_bundle(bundle)
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"--publish {str(link)!r} exists and is not a symlink; "
                              "pick a new path (it becomes a symlink to the bundle)")
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(bundle.resolve(), link.parent.resolve())
    tmp = link.with_name(f".tmp-{link.name}.{os.getpid()}")
    if tmp.is_symlink():  # left by a publish killed between symlink and rename
        tmp.unlink()
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink()
        raise
    return link
