"""`stpr-run`: the torch-free device runtime (NumPy + OpenCV + onnxruntime or TensorRT)."""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn

import click
import numpy as np

from .app import Summary, classify_clip, stream
from .backends import DeviceUnavailable
from .bundle import Bundle, load_bundle
from .clip import TruncatedClip, clip_frames
from .contract import PRECISIONS
from .errors import BundleError
from .exits import EXIT_ERROR, EXIT_INTERRUPT, EXIT_SIGTERM, EXIT_STREAM, EXIT_WRITE, click_error, exit_codes_help
from .frame_folder import IMAGE_EXTS, frame_files
from .live_learn import LEARN_KEY, LearnOptions, LiveLearner, make_learner
from .openset import check_threshold
from .outputs import EventLog, OutputError, VideoOut, check_distinct, check_writable
from .overlay import draw_overlay
from .recognizer import Recognizer
from .sampling import centre_indices
from .signals import Terminated, sigterm_as_interrupt
from .stream import (
    LatestFrame,
    SourceError,
    SourceFailed,
    frames_from_capture,
    frames_from_folder,
    live_frames,
    live_readers_alive,
    open_capture,
    source_fps,
)
from .trt_build import TensorRTUnavailable
from .watch import BundleWatcher
from .zero_shot import load_zero_shot

EPILOG = "\b\nURL: a live stream OpenCV/FFmpeg can open (rtsp://, http://, udp://, ...),\nin place of --camera, " \
    "--video or --frames.\n\n" + exit_codes_help(
        ok="done: the video or frame folder ended, or --max-frames was reached",
        error="refused before running (bad bundle, source that does not open, no GPU/TensorRT)",
        usage="bad command line (option value or combination; an output path that is an input or another output)",
        stream="the source failed mid-way: a live stream stalled (--timeout) or ended, or a\n"
               "       video is truncated; events so far are kept. A supervisor should restart.",
        write="an output could not be written (full disk, read-only, I/O error): one line names\n"
              "       it; the jsonl keeps whole lines, an unfinished --output is not kept",
        interrupt="Ctrl-C: files finalised, summary printed",
        sigterm="SIGTERM: files finalised, summary printed")


READ_GRACE_S = 1.0  # a live read may block this much longer than --timeout


def _source(camera: int | None, video: Path | None, frames: Path | None, url: str | None) -> tuple[str, object]:
    given = [(k, s) for k, s in (("camera", camera), ("video", video), ("frames", frames), ("url", url))
             if s is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one source: --camera N, --video PATH, --frames DIR or a URL")
    return given[0]


def _check_outputs(kind: str, source: object, clip: bool, output: Path | None, jsonl: Path | None,
                   bundle_dir: Path, classes_file: Path | None) -> None:
    """Refuse bad output paths before anything is opened: an output that is an input (the
    video, the frame folder, the bundle, the classes file) or the other output would be
    destroyed by the first write."""
    if clip and kind != "video":
        raise click.UsageError("--clip classifies one video file: use it with --video PATH")
    if clip and output is not None:
        raise click.UsageError("--output writes the annotated stream and --clip makes one prediction for the "
                               "whole video; drop --output (or --clip)")
    inputs = [("--bundle", bundle_dir), ("--classes", classes_file)]
    if kind in ("video", "frames"):
        inputs.append((f"--{kind}", Path(str(source))))
    try:
        check_distinct([("--output", output), ("--jsonl", jsonl)], inputs)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for path, option in ((output, "--output"), (jsonl, "--jsonl")):
        try:
            check_writable(path, option)
        except OutputError as e:  # no permission to write there: the write code, as --help says
            raise click_error(str(e), EXIT_WRITE) from None
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=option) from None
    if kind == "frames" and not frame_files(Path(str(source))):  # before the bundle loads, as a usage error
        raise click.BadParameter(f"{str(source)!r} holds no images ({', '.join(sorted(IMAGE_EXTS))}); give a folder "
                                 "of frames", param_hint="--frames")


def _once(ctx: click.Context, param: click.Parameter, value: tuple) -> object:
    """An option given twice is refused: silently taking the last could run on the wrong source."""
    if len(value) > 1:
        shown = ", ".join(repr(str(v)) for v in value)
        raise click.BadParameter(f"given {len(value)} times ({shown}); give it once")
    return value[0] if value else None


def _finite_threshold(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse NaN and inf at parsing time (float() accepts both): they would accept or reject everything."""
    if value is None:
        return None
    try:
        return check_threshold(value, "--unknown-threshold")
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@dataclass(frozen=True)
class RunOptions:
    """stpr-run's command line, one field per option (click fills them by name)."""
    url: str | None
    bundle_dir: Path
    camera: int | None
    video: Path | None
    frames_dir: Path | None
    backend: str
    device: str
    fp16: bool
    experts_variant: str | None
    watch: bool
    watch_interval: float
    stride: int
    smooth: int
    topk: int
    clip: bool
    headless: bool
    output: Path | None
    jsonl: Path | None
    max_frames: int | None
    unknown_threshold: float | None
    classes_file: Path | None
    timeout: float
    learn_name: str | None = None
    learn_windows: int = 16
    learn_every: int | None = None
    learn_after: float | None = None
    learn_out: Path | None = None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EPILOG)
@click.argument("url", required=False)
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path), help="Bundle from stpr-export.")
@click.option("--camera", type=int, multiple=True, callback=_once, help="Camera index.")
@click.option("--video", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
              callback=_once, help="Video file.")
@click.option("--frames", "frames_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              multiple=True, callback=_once, help="Folder of frames (sorted by name).")
@click.option("--backend", type=click.Choice(["ort", "trt"]), default="ort", show_default=True,
              help="ort: onnxruntime, providers picked by --device. trt: TensorRT engines, built from the "
                   "bundle's ONNX on first start and cached (needs tensorrt and cuda-python).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where onnxruntime runs; cuda that does not come up is an error, not a silent CPU run.")
@click.option("--fp16", is_flag=True, help="Use the bundle's fp16 files / engines.")
@click.option("--experts", "experts_variant", type=click.Choice(PRECISIONS),
              help="Expert weights: fp32, fp16 (GPU), int8 (CPU, from stpr-export --int8) [that of the backbone].")
@click.option("--watch", is_flag=True, help="Follow --bundle (a symlink from stpr-export --publish) and swap in "
              "each new bundle between two steps.")
@click.option("--watch-interval", type=float, default=2.0, show_default=True, help="Seconds between --watch checks.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="A frame enters the window every S frames.")
@click.option("--smooth", type=click.IntRange(min=1), default=1, show_default=True,
              help="Average scores over the last N steps.")
@click.option("--topk", type=click.IntRange(min=1), default=3, show_default=True,
              help="Classes (with scores) in each event and in the clip printout.")
@click.option("--clip", is_flag=True, help="Classify the whole video once (T frames, TSN centres); no window.")
@click.option("--headless", is_flag=True, help="No window.")
@click.option("--output", type=click.Path(path_type=Path), multiple=True, callback=_once,
              help="Write an annotated copy of the input (every frame, source fps; .mp4 or .avi).")
@click.option("--jsonl", type=click.Path(path_type=Path), multiple=True, callback=_once,
              help="Write one JSON event per prediction.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after N source frames.")
@click.option("--unknown-threshold", type=float, callback=_finite_threshold,
              help="Report `unknown` when the open-set score is below this [the bundle's calibrated threshold, "
                   "which keeps 95 % of held-out clips of the known classes; see openset.json].")
@click.option("--classes", "classes_file", type=click.Path(path_type=Path),
              help="Zero-shot classes added by name (stpr-classes add) [BUNDLE.classes.json beside the bundle, "
                   "if present].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds without a live frame = stalled (exit 3).")
@click.option("--learn", "learn_name", help="Record windows as examples of this action and learn it (stpr-learn, "
              "live): press l in the window, or see --learn-after.")
@click.option("--learn-windows", type=click.IntRange(min=1), default=16, show_default=True,
              help="Windows to record for --learn.")
@click.option("--learn-every", type=click.IntRange(min=1), help="Source frames between recorded windows [T: no "
              "frame shared].")
@click.option("--learn-after", type=click.FloatRange(min=0), help="Start recording this many seconds after the "
              "first prediction (needed with --headless).")
@click.option("--learn-out", type=click.Path(path_type=Path), help="Where --learn writes the new bundle "
              "[BUNDLE-learned-<time> beside the bundle]; with --watch on a link, the link is switched to it.")
def main(**options: Any) -> None:
    """Recognise actions from a camera, video, frame folder or stream URL."""
    o = RunOptions(**options)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("stpr.runtime.backends").setLevel(logging.INFO)
    logging.getLogger("stpr.runtime.watch").setLevel(logging.INFO)  # swaps (INFO) and refusals (WARNING)
    logging.getLogger("stpr.runtime.live_learn").setLevel(logging.INFO)  # --learn's recording and learned lines
    kind, source = _source(o.camera, o.video, o.frames_dir, o.url)
    _check_outputs(kind, source, o.clip, o.output, o.jsonl, o.bundle_dir, o.classes_file)
    if o.watch and (o.clip or o.watch_interval <= 0):
        raise click.UsageError("--watch follows a bundle while streaming: not with --clip, and --watch-interval > 0")
    window = not o.headless and not o.clip  # clip mode prints one result: nothing to show
    if window and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise click.ClickException("no display to show the window on; pass --headless (and --output/--jsonl)")

    def recognizer_for(b: Bundle) -> Recognizer:
        return Recognizer(b, o.backend, o.device, o.fp16, o.experts_variant,
                          zero_shot=load_zero_shot(b, o.classes_file), unknown_threshold=o.unknown_threshold)

    def start_recognizer(b: Bundle) -> Recognizer:
        return recognizer_for(b).__enter__()

    # --learn hands its bundle to a watcher, which polls the link only with --watch
    watcher = BundleWatcher(o.bundle_dir, start_recognizer, o.watch_interval) if o.watch or o.learn_name else None
    try:
        bundle = load_bundle(watcher.resolved if watcher else o.bundle_dir)  # watching: the folder the link names now
        learner = None if o.learn_name is None else make_learner(
            bundle, o.bundle_dir, watcher,
            LearnOptions(o.learn_name, o.learn_windows, o.learn_every, o.learn_after, o.learn_out),
            clip=o.clip, headless=o.headless, watch=o.watch, classes_file=o.classes_file)
        recognizer = recognizer_for(bundle)
    except (BundleError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if o.experts_variant is not None and not recognizer.stpr:  # once, not at every --watch swap
        click.echo(f"stpr-run: --experts {o.experts_variant} is ignored: the analytic head alone serves this bundle "
                   "and runs no expert", err=True)
    summary, code, failure, write_errors = Summary(), 0, None, []
    key_hook = learner.trigger if learner is not None else None
    # SIGINT too: a second Ctrl-C must not cut short the cleanup (the capture thread's join, the files).
    with sigterm_as_interrupt(sigint=True):
        try:
            events, video_out = EventLog(o.jsonl), VideoOut(o.output)
        except OutputError as e:
            raise click_error(str(e), EXIT_WRITE) from None
        try:
            with recognizer as rec:
                _say_started(rec, o.backend)
                if o.clip:
                    _run_clip(rec, Path(str(source)), o.topk, events, summary)
                else:
                    if watcher is not None:
                        watcher.serving_bundle = bundle
                        if o.watch:
                            watcher.start()
                    _run_stream(rec, kind, source, o.stride, o.smooth, o.topk, events, summary, video_out, window,
                                o.max_frames, o.timeout, watcher, learner, key_hook)
        except KeyboardInterrupt as e:  # Ctrl-C, the window's q/Esc, or SIGTERM (Terminated)
            terminated = isinstance(e, Terminated)
            click.echo("\nterminated (SIGTERM)" if terminated else "\ninterrupted", err=True)
            code = EXIT_SIGTERM if terminated else EXIT_INTERRUPT
        except SourceFailed as e:
            click.echo(f"error: {e}" + ("; events so far are saved" if o.jsonl else ""), err=True)
            code = EXIT_STREAM
        except OutputError as e:
            write_errors.append(str(e))
        except (SourceError, DeviceUnavailable, BundleError, TensorRTUnavailable, OSError) as e:
            failure = str(e)
        finally:
            if watcher is not None:
                watcher.stop()
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
    _exit(EXIT_WRITE if write_errors else code)


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


def _run_clip(rec: Recognizer, path: Path, topk: int, events: EventLog, summary: Summary) -> None:
    if not path.is_file():
        raise SourceError(f"--video {str(path)!r} is not a file")
    T = rec.bundle.frames
    try:
        frames, n = clip_frames(lambda: open_capture(str(path)), str(path), T)
    except TruncatedClip as e:  # predict from what decodes, then exit 3 all the same: the file is damaged
        _classify_and_print(rec, e.frames, e.decodable, topk, events, summary)
        raise
    if n < T:
        click.echo(f"warning: {str(path)!r} has {n} frames, fewer than the T={T} the model takes: frames are "
                   "repeated (as in training), so the result is less reliable", err=True)
    _classify_and_print(rec, frames, n, topk, events, summary)


def _classify_and_print(rec: Recognizer, frames: list[np.ndarray], n: int, topk: int, events: EventLog,
                        summary: Summary) -> None:
    event = classify_clip(rec, frames, topk, int(centre_indices(n, rec.bundle.frames)[-1]))
    summary.frames, summary.predictions, summary.decoded = n, 1, len(frames)
    for k, v in event["latency_ms"].items():
        summary.latency_ms[k].append(v)
    events.write(event)
    if event.get("unknown"):
        click.echo(f"unknown  (open-set score {event['unknown_score']:.4f} < threshold {rec.unknown_threshold:.4f}); "
                   "nearest known classes:")
    for cls, p in event["top"]:
        click.echo(f"{p:7.4f}  {cls}")


def _frames(kind: str, source: object, timeout: float
            ) -> tuple[Iterator[tuple[int, np.ndarray]], LatestFrame | None, float]:
    """(index, frame) pairs, the live grabber (None for files), and the source's fps."""
    if kind == "frames":
        return enumerate(frames_from_folder(Path(str(source)))), None, 30.0  # a folder states no rate
    if kind == "video":
        if not Path(str(source)).is_file():
            raise SourceError(f"--video {str(source)!r} is not a file")
        cap = open_capture(str(source))
        return enumerate(frames_from_capture(cap, str(source))), None, source_fps(cap)
    # A read may block for at most a little longer than the stall timeout: a stall is then
    # reported as one (the consumer's deadline comes first) and the capture thread ends soon after.
    cap = open_capture(source, read_timeout=timeout + READ_GRACE_S)  # live: camera index or stream URL
    fps = source_fps(cap)
    grabber = LatestFrame(cap)
    grabber.start()
    name = f"camera {source}" if kind == "camera" else repr(source)
    return live_frames(grabber, timeout, name), grabber, fps


def _run_stream(rec: Recognizer, kind: str, source: object, stride: int, smooth: int, topk: int,
                events: EventLog, summary: Summary, video_out: VideoOut, window: bool, max_frames: int | None,
                timeout: float, watcher: BundleWatcher | None = None, learner: LiveLearner | None = None,
                key_hook: Callable[[], None] | None = None) -> None:
    import cv2

    frames, grabber, fps = _frames(kind, source, timeout)
    video_out.fps = fps

    def on_frame(frame: np.ndarray, event: dict | None) -> None:
        elapsed = max(1e-6, time.perf_counter() - summary.started)
        annotated = draw_overlay(frame, event, summary.frames / elapsed)
        video_out.write(annotated)
        if window:
            cv2.imshow("stpr-run", annotated)
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                raise KeyboardInterrupt
            if key == ord(LEARN_KEY) and key_hook is not None:
                key_hook()

    drawn = video_out.active or window  # nobody sees the overlay otherwise: do not draw it
    try:
        stream(rec, frames, stride=stride, smooth=smooth, topk=topk, events=events, summary=summary,
               on_frame=on_frame if drawn else None, max_frames=max_frames, watcher=watcher, learner=learner)
    finally:
        if learner is not None:  # a bundle being written is finished, so the run does not leave it half-way
            learner.wait(timeout=600)
        if grabber is not None:
            summary.dropped = grabber.dropped
            grabber.stop(wait=timeout + 2 * READ_GRACE_S)
    T = rec.bundle.frames
    if summary.frames and not summary.predictions:
        need = (T - 1) * stride + 1
        click.echo(f"warning: {summary.frames} frames gave no prediction: the window needs T={T} frames, one "
                   f"every --stride {stride} ({need} source frames); for a short video use --clip", err=True)


if __name__ == "__main__":
    main()
