"""`stpr-learn`: add, extend or remove classes of a bundle's analytic head on the device.

Torch-free, like `stpr-run`. The clips go through the bundle's own head tower, their
features update the head's sums, the head is solved again and a new bundle is written
(docs/runtime.md, "Learn on the device"; the maths in docs/method.md).

    stpr-learn --bundle bundles/b1 --out bundles/b2 --add "wave hello" clips/*.mp4
    stpr-learn --bundle bundles/b1 --out bundles/b2 --data my_clips/   # my_clips/<class>/<clips>
    stpr-learn --bundle bundles/b2 --out bundles/b3 --remove "wave hello" --publish bundles/current
    stpr-learn --bundle dev1/b1 --out ship/d1 --delta          # a device's head delta, to ship
    stpr-learn --bundle bundles/b0 --out bundles/fleet --merge ship/d1 ship/d2 ship/d3
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np

from ..atomic import LockHeld, as_write_error, exclusive, write_error_line
from ..bundle.load import Bundle
from ..bundle.publish import publish
from ..engine.recognizer import Recognizer
from ..errors import BundleError
from ..exits import EXIT_INTERRUPT, EXIT_SIGTERM, EXIT_WRITE, click_error, exit_codes_help
from ..io.frame_folder import IMAGE_EXTS
from ..io.signals import Terminated, sigterm_as_interrupt
from ..learn.learn_bundle import MIN_CLIPS, check_request, head_bundle, learn
from ..learn.learn_clips import CROPS, LearnError, distinct_clips, rows_of_clips
from ..learn.learn_merge import merge, write_delta

EPILOG = exit_codes_help(
    error="refused, nothing written: a bundle without a head or its sums, a clip that decodes no frame or has "
          "fewer than T, a class with fewer clips than --min-clips, an empty, duplicate or unknown name; "
          "--merge of a bundle learned from another base, tower, projection or lambda, or of one bundle twice",
    write="the new bundle could not be written (full disk, read-only): nothing half-written is kept",
    interrupt="Ctrl-C: nothing written, the old bundle is untouched",
    sigterm="SIGTERM: nothing written, the old bundle is untouched")
_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def data_clips(data: Path) -> dict[str, list[Path]]:
    """`DIR/<class>/<clips>` -> class -> clips (video files, or folders of frames). Hidden
    entries are skipped, as in training's folder rule."""
    if not data.is_dir():
        raise LearnError(f"--data {str(data)!r} is not a folder; pass DIR holding one folder of clips per class")
    out: dict[str, list[Path]] = {}
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        clips = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if any(p.suffix.lower() in IMAGE_EXTS for p in clips):
            raise LearnError(f"--data {str(folder)!r} holds images directly; put each clip's frames in a folder of "
                             "its own (DIR/<class>/<clip>/<frames>) or pass video files")
        out[folder.name] = clips
    if not out:
        raise LearnError(f"--data {str(data)!r} holds no class folders; lay it out as DIR/<class>/<clips>")
    return out


def _requested(add: str | None, clips: tuple[Path, ...], data: Path | None) -> dict[str, list[Path]]:
    if clips and add is None:
        raise click.UsageError("clips were given without --add NAME; name the class they show")
    if add is not None and not clips:
        raise LearnError(f"--add {add!r} has no clips; pass its video files or frame folders after it")
    wanted = data_clips(data) if data is not None else {}
    if add is not None:
        if add in wanted:
            raise LearnError(f"class {add!r} is given twice, by --add and by a folder of --data; give it once")
        wanted[add] = list(clips)
    return wanted


@click.command(context_settings=_SETTINGS, epilog=EPILOG)
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path),
              help="The bundle to learn from (a folder, or the --publish link).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The new bundle's folder.")
@click.option("--add", help="A class to add (or to give more examples): its clips follow as arguments.")
@click.argument("clips", nargs=-1, type=click.Path(path_type=Path))
@click.option("--merge", "merging", is_flag=True,
              help="Merge: the arguments are bundles (or head deltas) learned on devices from --bundle; --out gets "
                   "the head of all their clips, as if learned in one place.")
@click.option("--delta", is_flag=True,
              help="Write only --bundle's head delta to --out (its manifest and learned rows): what --merge needs.")
@click.option("--data", type=click.Path(path_type=Path), help="Add every class of DIR/<class>/<clips>.")
@click.option("--remove", multiple=True, help="A class to drop (repeatable).")
@click.option("--min-clips", type=click.IntRange(min=1), default=MIN_CLIPS, show_default=True,
              help="Refuse a new class with fewer clips.")
@click.option("--views", type=click.IntRange(min=1), default=None,
              help="Rows per clip from this many temporal samplings (offsets within each of the T segments) of a "
                   "clip longer than T; 1 reads the segment centres. Default: what the bundle's head was trained "
                   "with (head.views, 1 unless set), so both are one solve.")
@click.option("--crops", type=click.Choice(sorted(CROPS)), default=None,
              help="Rows per clip from crops of its frames too (corners: the frame and its four corners at 7/8). "
                   "Default: what the bundle's head was trained with (head.crops), so both are one solve.")
@click.option("--backend", type=click.Choice(["ort", "trt"]), default="ort", show_default=True,
              help="What runs the head's tower: onnxruntime or TensorRT.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--fp16", is_flag=True, help="Run the bundle's fp16 tower (the one stpr-run --fp16 serves).")
@click.option("--force", is_flag=True, help="Replace a bundle already in --out.")
@click.option("--publish", "publish_link", type=click.Path(path_type=Path),
              help="Then point this symlink at the new bundle (what `stpr-run --watch` follows).")
def main(bundle_dir: Path, out: Path, add: str | None, clips: tuple[Path, ...], merging: bool, delta: bool,
         data: Path | None, remove: tuple[str, ...], min_clips: int, views: int | None, crops: str | None, backend: str,
         device: str, fp16: bool, force: bool, publish_link: Path | None) -> None:
    """Teach a bundle new actions from a few clips, or drop some: a new bundle, no torch, no workstation."""
    if publish_link is not None and publish_link.exists() and not publish_link.is_symlink():
        raise click.UsageError(f"--publish {str(publish_link)!r} exists and is not a symlink; pick a new path")
    t0 = time.perf_counter()
    code = 0
    with sigterm_as_interrupt():
        try:
            if merging or delta:
                _merge_or_delta(bundle_dir, out, clips, merging, delta, add, data, remove, force, publish_link)
                return
            wanted = _distinct(_requested(add, clips, data))
            if not wanted and not remove:
                raise click.UsageError("nothing to do: give --add NAME CLIPS..., --data DIR or --remove NAME")
            loaded = head_bundle(bundle_dir)
            # names and clip counts before the tower runs: a refusal comes in a second, not after it
            check_request(loaded[0].classes, {n: np.zeros((len(p), 0)) for n, p in wanted.items()}, list(remove),
                          min_clips, bundle=loaded[0])
            adds = _rows(loaded[0], wanted, backend, device, fp16, views, crops)
            out.parent.mkdir(parents=True, exist_ok=True)
            with exclusive(out.parent / f".{out.name}.lock"):
                report = learn(bundle_dir, out, adds, list(remove), min_clips=min_clips, force=force, loaded=loaded)
            if publish_link is not None:
                publish(out, publish_link)
        except (LearnError, BundleError) as e:
            raise click.ClickException(str(e)) from None
        except LockHeld:
            raise click.ClickException(f"another stpr-learn or stpr-export is writing {str(out)!r} now; wait for "
                                       "it or choose another --out") from None
        except OSError as e:
            # a write into the new bundle names the bundle: a file copied into it fails with the
            # source's name (shutil), and its temp folder's name means nothing to the user
            into = as_write_error(e, out.parent)
            raise click_error(write_error_line(into or e, f"the bundle {str(out)!r}" if into else None,
                                               " (nothing was written; the old bundle is untouched)"),
                              EXIT_WRITE) from None
        except KeyboardInterrupt as e:
            click.echo("\nstopped: nothing written, the old bundle is untouched", err=True)
            code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_INTERRUPT
    if code:
        sys.exit(code)
    changes = [f"+{n} ({k} clips)" for n, k in report.added.items()] + [f"-{n}" for n in report.removed]
    click.echo(f"wrote {str(out)!r}: {len(report.classes)} classes ({', '.join(changes)}) in "
               f"{time.perf_counter() - t0:.1f} s", err=True)
    if publish_link is not None:
        click.echo(f"published: {str(publish_link)!r} -> {str(out)!r}", err=True)


def _merge_or_delta(bundle_dir: Path, out: Path, paths: tuple[Path, ...], merging: bool, delta: bool,
                    add: str | None, data: Path | None, remove: tuple[str, ...], force: bool,
                    publish_link: Path | None) -> None:
    """`--merge B1 B2 ...` or `--delta`: no tower runs, only head files are read (errors as in main)."""
    if merging and delta:
        raise LearnError("--merge and --delta are two steps: write each device's --delta, then --merge them")
    if add is not None or data is not None:
        raise LearnError(f"--{'merge' if merging else 'delta'} takes no --add or --data; merge first, then add "
                         "clips to the merged bundle")
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    if delta:
        if paths or remove or publish_link is not None:
            raise LearnError("--delta writes --bundle's learned rows as they are; it takes no clips, --remove or "
                             "--publish")
        with exclusive(out.parent / f".{out.name}.lock"):
            names = write_delta(bundle_dir, out, force=force)
        size = sum((out / n).stat().st_size for n in names)
        click.echo(f"wrote the head delta {str(out)!r} ({size / 1e6:.2f} MB: {', '.join(names)}); merge it with "
                   "stpr-learn --bundle BASE --out MERGED --merge DELTAS...", err=True)
        return
    if not paths:
        raise LearnError("--merge needs the bundles (or head deltas) to merge as arguments: --merge B1 B2 ...")
    with exclusive(out.parent / f".{out.name}.lock"):
        report = merge(bundle_dir, out, list(paths), list(remove), force=force)
    if publish_link is not None:
        publish(out, publish_link)
    pooled = ", ".join(f"{n} ({k} clips)" for n, k in report.added.items())
    click.echo(f"wrote {str(out)!r}: {len(paths)} bundles merged, {len(report.classes)} classes (+{pooled}"
               f"{''.join(f', -{n}' for n in report.removed)}) in {time.perf_counter() - t0:.1f} s", err=True)


def _distinct(wanted: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Each class's clips with repeats left out (the same content under any path counts once,
    as one example: counted twice it would weigh double and pass --min-clips on its own), and
    one line per class that had any."""
    out = {}
    for name, paths in wanted.items():
        out[name] = distinct_clips(paths)
        if len(out[name]) < len(paths):
            click.echo(f"{name!r}: {len(paths)} clips given, {len(out[name])} distinct; a clip given more than once "
                       "(same content, any path) counts once", err=True)
    return out


def _rows(b: Bundle, wanted: dict[str, list[Path]], backend: str, device: str, fp16: bool, views: int | None = None,
          crops: str | None = None) -> dict[str, np.ndarray]:
    """Each class's head rows, with a progress line per class (the tower is the slow part);
    `views` and `crops` None: as the bundle's head was trained."""
    adds: dict[str, np.ndarray] = {}
    if not wanted:
        return adds
    with Recognizer(b, backend, device, fp16) as rec:
        for name, paths in wanted.items():
            t = time.perf_counter()
            adds[name] = rows_of_clips(rec, paths, views=views, crops=crops)
            click.echo(f"{name!r}: {len(paths)} clips through the head's tower in {time.perf_counter() - t:.1f} s",
                       err=True)
    return adds


if __name__ == "__main__":
    main()
