"""`stpr-classes`: add, list and remove zero-shot classes of a bundle, on the device.

Names go into an overlay file beside the bundle (`runtime.class_overlay`); the bundle is
never edited. Each name is embedded once here with the bundle's text tower, so a bundle
without one (`--no-text`, or an older stpr-export) is refused at `add`, not at the first run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import click

from ..atomic import LockHeld, exclusive, lock_for, write_error_line
from ..bundle.class_overlay import (
    OverlayError,
    StaleOverlay,
    check_new_names,
    default_overlay_path,
    read_overlay,
    write_overlay,
)
from ..bundle.manifest import BundleError, verify_bundle
from ..exits import EXIT_WRITE, click_error, exit_codes_help
from ..text.class_names import length_problem
from ..text.encoder import TextEncoder, text_section

_BUNDLE = click.argument("bundle", type=click.Path(path_type=Path))
_OVERLAY = click.option("--classes", "overlay", type=click.Path(path_type=Path),
                        help="Overlay file [FOLDER.classes.json beside the folder BUNDLE resolves to].")


def _open(bundle: Path, overlay: Path | None) -> tuple[dict, Path, list[str]]:
    """The verified manifest, the overlay path and the names already in it."""
    if not bundle.is_dir():
        raise click.ClickException(f"bundle folder {str(bundle)!r} does not exist; "
                                   "pass the --out folder of stpr-export")
    try:
        manifest = verify_bundle(bundle)
        path = overlay or default_overlay_path(bundle)
        return manifest, path, _names(path, manifest)
    except BundleError as e:
        raise click.ClickException(str(e)) from None


def _names(path: Path, manifest: dict) -> list[str]:
    try:
        return read_overlay(path, manifest) if path.is_file() else []
    except StaleOverlay as e:  # never overwritten unasked: it may be the only copy of another bundle's names
        raise OverlayError(f"{e}; delete it to start this bundle's overlay afresh, or give --classes NEW.json"
                           ) from None


EPILOG = exit_codes_help(
    error="refused: no bundle, a bundle without a text tower, a bad or foreign overlay, a name that "
          "exists, is too long or holds control characters or emoji",
    write="the overlay could not be written (read-only, full disk): the old one is kept")
_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


_LOCK_WAIT_S = 30.0  # another stpr-classes holds the overlay only to read and rewrite it


def _update(path: Path, manifest: dict, change: Callable[[list[str]], list[str]]) -> list[str]:
    """Rewrite the overlay as `change(names in it now)`, under its lock: names are read again
    once the lock is held, so commands run at once on one overlay each keep the others'
    changes. Only into an existing folder (a typo must not create folders, even under /)."""
    if not path.parent.is_dir():
        raise click.BadParameter(f"the folder {str(path.parent)!r} of {str(path)!r} does not exist; create it "
                                 "first", param_hint="--classes")
    try:
        with exclusive(lock_for(path), wait=_LOCK_WAIT_S):
            names = change(_names(path, manifest))
            write_overlay(path, manifest, names)
            return names
    except LockHeld:
        raise click.ClickException(f"another stpr-classes has held {str(path)!r} for {_LOCK_WAIT_S:.0f} s; "
                                   "try again when it is done") from None
    except BundleError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click_error(write_error_line(e, repr(str(path)), " (the overlay is unchanged)"), EXIT_WRITE) from None


def _check_fits(enc: TextEncoder, names: tuple[str, ...]) -> None:
    if (problem := length_problem(enc.tokenizer, enc.templates, names)) is not None:
        raise click.ClickException(problem)


def _names_command(f: Callable[..., None]) -> click.Command:
    """`stpr-classes <command> BUNDLE NAMES... [--classes FILE]`: add and remove."""
    return main.command(context_settings=_SETTINGS, epilog=EPILOG)(
        _BUNDLE(click.argument("names", nargs=-1, required=True)(_OVERLAY(f))))


@click.group(context_settings=_SETTINGS, epilog=EPILOG)
def main() -> None:
    """Add actions to a bundle by name, without retraining (zero-shot, scored by stpr-run)."""


@_names_command
def add(bundle: Path, names: tuple[str, ...], overlay: Path | None) -> None:
    """Add NAMES (each one argument: quote names with spaces)."""
    manifest, path, added = _open(bundle, overlay)
    try:
        text = text_section(manifest, bundle)
        check_new_names(names, manifest["classes"], added)
        with TextEncoder(bundle, text) as enc:  # proves the tower and tokenizer run here
            _check_fits(enc, names)
            enc.embed_names(list(names))
    except BundleError as e:
        raise click.ClickException(str(e)) from None

    def append(now: list[str]) -> list[str]:  # checked again: another add may have taken a name meanwhile
        check_new_names(names, manifest["classes"], now)
        return [*now, *names]

    _update(path, manifest, append)
    loads = f"stpr-run --bundle {bundle}" + (f" --classes {path}" if overlay is not None else "")
    real = os.path.realpath(bundle)
    via = "" if overlay is not None or os.path.abspath(bundle) == real else \
        f" (the overlay of {real!r}, where {str(bundle)!r} leads now: a bundle published there later starts " \
        "without these names)"
    click.echo(f"added {len(names)} zero-shot class(es) to {str(path)!r}{via}; {loads} loads it")


@main.command(name="list", context_settings=_SETTINGS, epilog=EPILOG)
@_BUNDLE
@_OVERLAY
def list_(bundle: Path, overlay: Path | None) -> None:
    """Print the trained and added classes as JSON."""
    manifest, path, added = _open(bundle, overlay)
    click.echo(json.dumps({"trained": manifest["classes"], "zero_shot": added, "overlay": str(path)}, indent=2,
                          ensure_ascii=False))  # a name in any script printed as itself, not as \u escapes


@_names_command
def remove(bundle: Path, names: tuple[str, ...], overlay: Path | None) -> None:
    """Remove added NAMES (trained classes cannot be removed here)."""
    manifest, path, _ = _open(bundle, overlay)

    def drop(now: list[str]) -> list[str]:
        missing = [n for n in names if n not in now]
        if missing:
            raise click.ClickException(f"{missing[0]!r} is not an added class of {str(bundle)!r} "
                                       f"(added: {now}); see `stpr-classes list {bundle}`")
        return [n for n in now if n not in names]

    _update(path, manifest, drop)
    click.echo(f"removed {len(names)} class(es) from {str(path)!r}")


if __name__ == "__main__":
    main()
