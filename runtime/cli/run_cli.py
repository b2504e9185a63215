"""`stpr-run`: the torch-free device runtime (NumPy + OpenCV + onnxruntime or TensorRT).

The command and its run: options are checked in run_options, sources run in run_source."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..bundle.load import Bundle, load_bundle
from ..bundle.manifest import MANIFEST_HASH_KEY
from ..engine.recognizer import Recognizer
from ..engine.trt_build import TensorRTUnavailable
from ..engine.watch import BundleWatcher
from ..engine.zero_shot import load_zero_shot
from ..errors import BundleError, OutputBusy, OutputError, ServeError
from ..exits import EXIT_ERROR, EXIT_INTERRUPT, EXIT_NOT_LEARNED, EXIT_SIGTERM, EXIT_STREAM, EXIT_WRITE, click_error
from ..io.events import EventLog, start_event
from ..io.signals import Terminated, sigterm_as_interrupt
from ..io.stream import SourceError, SourceFailed, live_readers_alive
from ..io.video_out import VideoOut
from ..learn.live_learn import LearnOptions, make_learner
from ..model.backends import DeviceUnavailable
from .app import Summary
from .run_options import RunOptions, check_outputs, check_serve, command, source_of
from .run_source import run_clip, run_stream

if TYPE_CHECKING:
    from ..serve.session import ServeSession


@command
def main(**options: Any) -> None:
    """Recognise actions from a camera, video, frame folder or stream URL."""
    o = RunOptions(**options)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("stpr.runtime.model.backends").setLevel(logging.INFO)
    logging.getLogger("stpr.runtime.engine.watch").setLevel(logging.INFO)  # swaps (INFO) and refusals (WARNING)
    logging.getLogger("stpr.runtime.learn.live_learn").setLevel(logging.INFO)  # --learn's recording and learned lines
    kind, source = source_of(o.camera, o.video, o.frames_dir, o.url)
    check_outputs(kind, source, o.clip, o.output, o.jsonl, o.bundle_dir, o.classes_file)
    if o.watch and (o.clip or o.watch_interval <= 0):
        raise click.UsageError("--watch follows a bundle while streaming: not with --clip, and --watch-interval > 0")
    check_serve(o, kind)
    window = not o.headless and not o.clip  # clip mode prints one result: nothing to show
    if window and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise click.ClickException("no display to show the window on; pass --headless (and --output/--jsonl)")

    def recognizer_for(b: Bundle) -> Recognizer:
        return Recognizer(b, o.backend, o.device, o.fp16, o.experts_variant,
                          zero_shot=load_zero_shot(b, o.classes_file), unknown_threshold=o.unknown_threshold)

    def start_recognizer(b: Bundle) -> Recognizer:
        return recognizer_for(b).__enter__()

    # --learn hands its bundle to a watcher, which polls the link only with --watch
    watcher = BundleWatcher(o.bundle_dir, start_recognizer, o.watch_interval) \
        if o.watch or o.learn_name is not None or o.serve else None
    try:
        session = _serve_session(o, watcher)
        bundle = load_bundle(watcher.resolved if watcher else o.bundle_dir)  # watching: the folder the link names now
        learner = None if o.learn_name is None else make_learner(
            bundle, o.bundle_dir, watcher,
            LearnOptions(o.learn_name, o.learn_windows, o.learn_every, o.learn_after, o.learn_out),
            clip=o.clip, headless=o.headless, watch=o.watch, classes_file=o.classes_file)
        recognizer = recognizer_for(bundle)
    except (BundleError, ValueError, ServeError) as e:
        raise click.ClickException(str(e)) from None
    if o.experts_variant is not None and not recognizer.stpr:  # once, not at every --watch swap
        click.echo(f"stpr-run: --experts {o.experts_variant} is ignored: the analytic head alone serves this bundle "
                   "and runs no expert", err=True)
    summary, code, failure, write_errors = Summary(), 0, None, []
    key_hook = learner.trigger if learner is not None else None
    # SIGINT too: a second Ctrl-C must not cut short the cleanup (the capture thread's join, the files).
    with sigterm_as_interrupt(sigint=True):
        video_out = None
        try:  # each output locked, so a second stpr-run on the same file is refused here, having created none
            video_out = VideoOut(o.output)
            events = EventLog(o.jsonl)
            if session is not None:
                events = session.events(events)
        except OutputError as e:
            if video_out is not None:
                video_out.close()
            raise click_error(str(e), EXIT_ERROR if isinstance(e, OutputBusy) else EXIT_WRITE) from None
        if video_out.cut_note:
            click.echo(f"warning: --output: {video_out.cut_note}", err=True)
        try:
            events.write(start_event(bundle.path, bundle.manifest[MANIFEST_HASH_KEY],
                                     {kind: source if kind == "camera" else str(source)}))
            with recognizer as rec:
                _say_started(rec, o.backend)
                if o.clip:
                    run_clip(rec, Path(str(source)), o.topk, events, summary)
                else:
                    if watcher is not None:
                        watcher.serving_bundle = bundle
                        if o.watch:
                            watcher.start()
                    if session is not None:
                        session.start(rec, {"kind": kind, "name": str(source)}, _say)
                    run_stream(rec, kind, source, o.stride, o.smooth, o.topk, events, summary, video_out, window,
                                o.max_frames, o.timeout, watcher, learner or (session and session.teacher), key_hook,
                                session, o.loop)
        except KeyboardInterrupt as e:  # Ctrl-C, the window's q/Esc, or SIGTERM (Terminated)
            terminated = isinstance(e, Terminated)
            click.echo("\nterminated (SIGTERM)" if terminated else "\ninterrupted", err=True)
            code = EXIT_SIGTERM if terminated else EXIT_INTERRUPT
        except SourceFailed as e:
            click.echo(f"error: {e}" + ("; events so far are saved" if o.jsonl else ""), err=True)
            code = EXIT_STREAM
        except OutputError as e:
            write_errors.append(str(e))
        except (SourceError, DeviceUnavailable, BundleError, TensorRTUnavailable, ServeError, OSError) as e:
            failure = str(e)
        finally:
            if watcher is not None:
                watcher.stop()
            if session is not None:
                session.stop()
            for out in (events, video_out):  # each one finalised, whatever happened to the other
                try:
                    out.close()
                except OutputError as e:
                    write_errors.append(str(e))
    for message in write_errors:  # a file asked for and not written outranks every other outcome
        click.echo(f"error: {message}", err=True)
    if failure is not None:
        raise click_error(failure, EXIT_WRITE if write_errors else EXIT_ERROR)
    click.echo(summary.text(), err=True)
    if not code and learner is not None and (why := learner.unfinished()):
        click.echo(f"error: {why}", err=True)
        code = EXIT_NOT_LEARNED
    _exit(EXIT_WRITE if write_errors else code)


def _say(line: str) -> None:
    click.echo(line, err=True)


def _serve_session(o: RunOptions, watcher: BundleWatcher | None) -> "ServeSession | None":
    if o.serve is None:
        return None
    from ..serve.session import ServeOptions, ServeSession

    assert watcher is not None
    return ServeSession(ServeOptions(o.serve, o.serve_token, o.serve_token_file, o.serve_max_upload_mb, o.serve_fps),
                        o.bundle_dir, watcher, o.watch and o.bundle_dir.is_symlink(),
                        {"backend": o.backend, "device": o.device, "fp16": o.fp16})


def _exit(code: int) -> NoReturn:
    """Exit with `code`. A capture thread still inside a read that would not return (a
    driver that hangs) cannot be released safely, and tearing the interpreter down under
    it can crash: then the files are already final, and the process ends at once."""
    if live_readers_alive():
        click.echo("warning: the capture did not stop in time; exiting without waiting for it", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _say_started(rec: Recognizer, backend: str) -> None:
    b = rec.bundle
    zs = f" + {len(rec.zero_shot.names)} zero-shot from {str(rec.zero_shot.source)!r}" if rec.zero_shot else ""
    click.echo(f"stpr-run: {len(b.classes)} classes{zs}, {rec.describe()}, backend {backend} on {rec.providers}",
               err=True)
    _say_unknown(rec)


def _say_unknown(rec: Recognizer) -> None:
    """One line on how `unknown` is decided for this run, so a bundle without it is not a surprise."""
    u = rec.bundle.unknown
    if u is None:
        click.echo("stpr-run: this bundle has no calibrated unknown score (exported without the run's held-out "
                   "clips): every prediction names a known class", err=True)
    else:
        click.echo(f"stpr-run: unknown when the {u['score']} score < {rec.unknown_threshold:.4g}", err=True)


if __name__ == "__main__":
    main()
