"""The zero-shot class overlay: names added on the device, in a file beside the bundle.

The bundle stays as exported (its hashes are its contract); added names live in
`<bundle>.classes.json` (or a path of the user's choice). One overlay per bundle folder,
whatever the path's spelling: the default overlay is named for the folder the path
resolves to (a published link's target, `.`, relative or absolute alike), so it follows
that bundle, and a link switched to another bundle finds that bundle's own overlay.

The file carries the `manifest_sha256` of the bundle it was written for and its own
sha256: a hand edit or a damaged file is refused with the cause; a sound overlay of
another bundle (a folder re-exported in place since) is `StaleOverlay`, which stpr-run
skips with a warning rather than refuse to start.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_write_json
from ..errors import OverlayError, StaleOverlay  # noqa: F401 (also imported from here)
from ..text.class_names import name_problem
from ..text.encoder import clean_class_name
from .manifest import MANIFEST_HASH_KEY, manifest_digest

OVERLAY_KIND = "stpr zero-shot classes"
OVERLAY_VERSION = 1
OVERLAY_HASH_KEY = "overlay_sha256"
SCORING = "frozen-rank"  # runtime/engine/zero_shot.py: frozen image tower, ranked against the trained classes


def default_overlay_path(bundle: str | Path) -> Path:
    """`<folder>.classes.json` beside (not inside) the folder `bundle` resolves to: the same
    file for a link and its target, `.` inside the bundle, a relative or an absolute path."""
    real = Path(os.path.realpath(bundle))
    return real.parent / f"{real.name}.classes.json"


def _digest(overlay: dict[str, Any]) -> str:
    return manifest_digest({k: v for k, v in overlay.items() if k != OVERLAY_HASH_KEY})


def _not_json(path: Path, err: Exception) -> str:
    """Why a file that does not parse is refused. Only a damaged overlay is worth deleting:
    any other file (stpr-run's events.jsonl, say) is the wrong --classes, and it is kept."""
    if OVERLAY_KIND.encode() in path.read_bytes():
        return (f"class overlay {str(path)!r} is not valid JSON ({err}); delete it and add the classes again with "
                "`stpr-classes add`")
    return (f"{str(path)!r} is not a stpr class overlay (not one JSON object: {err}); pass the file `stpr-classes "
            "add` wrote (BUNDLE.classes.json beside the bundle) as --classes")


def read_overlay(path: str | Path, manifest: dict[str, Any]) -> list[str]:
    """The added names, after checking the file's own hash and that it belongs to this bundle."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OverlayError(f"class overlay {str(path)!r} does not exist; add classes with `stpr-classes add`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OverlayError(_not_json(path, e)) from None
    names = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("kind") != OVERLAY_KIND or not isinstance(names, list):
        raise OverlayError(f"{str(path)!r} is not a stpr class overlay; pass the file `stpr-classes add` wrote")
    if data.get(OVERLAY_HASH_KEY) != _digest(data):
        raise OverlayError(f"class overlay {str(path)!r} does not match its overlay_sha256 (edited or damaged "
                           "after stpr-classes wrote it); delete it and add the classes again with stpr-classes add")
    if data.get("bundle_manifest_sha256") != manifest[MANIFEST_HASH_KEY]:
        raise StaleOverlay(f"class overlay {str(path)!r} was written for another bundle (manifest_sha256 "
                           f"{str(data.get('bundle_manifest_sha256'))[:12]}..., this bundle's is "
                           f"{manifest[MANIFEST_HASH_KEY][:12]}...)")
    return [str(n) for n in names]


def check_new_names(names: Sequence[str], existing_trained: Sequence[str], existing_added: Sequence[str]) -> None:
    """Refuse an empty name, one with control characters or emoji, and one that already
    exists (trained or added), compared as the prompt sees them ("Circle_Moving-Left" is
    "circle moving left")."""
    taken = {clean_class_name(n): f"a trained class ({n!r})" for n in existing_trained}
    taken.update({clean_class_name(n): f"an added class ({n!r})" for n in existing_added})
    for name in names:
        if (problem := name_problem(name)) is not None:
            raise OverlayError(problem)
        words = clean_class_name(name)
        if words in taken:
            raise OverlayError(f"class name {name!r} already exists as {taken[words]}; choose another name or "
                               "remove the added one with `stpr-classes remove`")
        taken[words] = f"an earlier name on this command line ({name!r})"


def write_overlay(path: str | Path, manifest: dict[str, Any], names: Sequence[str]) -> Path:
    """Write (atomically) the overlay holding exactly `names` for the bundle of `manifest`."""
    body = {"kind": OVERLAY_KIND, "schema_version": OVERLAY_VERSION,
            "bundle_manifest_sha256": manifest[MANIFEST_HASH_KEY], "scoring": SCORING, "classes": list(names)}
    atomic_write_json(path, {**body, OVERLAY_HASH_KEY: _digest(body)})
    return Path(path)
