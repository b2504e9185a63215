"""`stpr-run`: the torch-free device runtime (NumPy + OpenCV + onnxruntime or TensorRT)."""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn

import click
import numpy as np

from .app import Summary, classify_clip, stream
from .backends import DeviceUnavailable
from .bundle import Bundle, load_bundle
from .click_types import DAY_S, FiniteFloat
from .clip import TruncatedClip, clip_frames
from .contract import PRECISIONS
from .errors import BundleError, ServeError
from .exits import (
    EXIT_ERROR,
    EXIT_INTERRUPT,
    EXIT_NOT_LEARNED,
    EXIT_SIGTERM,
    EXIT_STREAM,
    EXIT_WRITE,
    click_error,
    exit_codes_help,
)
from .frame_folder import IMAGE_EXTS, frame_files
from .live_learn import LEARN_KEY, LearnOptions, LiveLearner, make_learner
from .manifest import MANIFEST_HASH_KEY
from .outputs import EventLog, OutputBusy, OutputError, VideoOut, check_distinct, check_writable, start_event
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

if TYPE_CHECKING:
    from .serve.session import ServeSession
    from .serve.teach import Teacher

EPILOG = "\b\nURL: a live stream OpenCV/FFmpeg can open (rtsp://, http://, udp://, ...),\nin place of --camera, " \
    "--video or --frames. A local file or folder\ngiven there is read as --video or --frames.\n\n" + exit_codes_help(
        ok="done: the video or frame folder ended, or --max-frames was reached",
        error="refused before running (bad bundle, source that does not open, no GPU/TensorRT, an\n"
              "       output another stpr-run is writing, a --learn name stpr-learn refuses)",
        usage="bad command line (option value or combination; an output path that is an input or another output)",
        stream="the source failed mid-way: a live stream stalled (--timeout) or ended, or a\n"
               "       video is truncated; events so far are kept. A supervisor should restart.",
        write="an output could not be written (full disk, read-only, I/O error): one line names\n"
              "       it; the jsonl keeps whole lines, an unfinished --output is not kept",
        interrupt="Ctrl-C: files finalised, summary printed",
        sigterm="SIGTERM: files finalised, summary printed",
        learn="--learn ended without learning its class (the source ended before its windows were\n"
              "       recorded, or learning failed): the reason is printed, the old bundle is untouched")


READ_GRACE_S = 1.0  # a live read may block this much longer than --timeout


LIVE_DESCRIPTIONS = (".sdp", ".m3u", ".m3u8")  # local files that describe a live stream: opened as one


def _source(camera: int | None, video: Path | None, frames: Path | None, url: str | None) -> tuple[str, object]:
    if url is not None and "://" not in url and Path(url).suffix.lower() not in LIVE_DESCRIPTIONS:
        # A local file or folder is not a live stream: read as one, it dropped frames and ended with exit 3.
        if os.path.isfile(url):
            video, url = Path(url), None
        elif os.path.isdir(url):
            frames, url = Path(url), None
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
    serve: str | None = None
    serve_token: str | None = None
    serve_token_file: Path | None = None
    serve_max_upload_mb: float = 64.0
    serve_fps: float = 15.0
    loop: bool = False


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
@click.option("--watch-interval", type=FiniteFloat(min=0, min_open=True, max=DAY_S), default=2.0, show_default=True,
              help="Seconds between --watch checks.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="A frame enters the window every S frames.")
@click.option("--smooth", type=click.IntRange(min=1), default=1, show_default=True,
              help="Average scores over the last N steps.")
@click.option("--topk", type=click.IntRange(min=1), default=3, show_default=True,
              help="Classes (with scores) in each event and in the clip printout.")
@click.option("--clip", is_flag=True, help="Classify the whole video once (T frames, TSN centres); no window.")
@click.option("--headless", is_flag=True, help="No window.")
@click.option("--output", type=click.Path(path_type=Path), multiple=True, callback=_once,
              help="Write an annotated copy of the input (every frame, source fps; .mkv or .avi, which play up to "
                   "the cut if the run is killed).")
@click.option("--jsonl", type=click.Path(path_type=Path), multiple=True, callback=_once,
              help="Append one JSON event per prediction (each run first appends a start event).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after N source frames.")
@click.option("--unknown-threshold", type=FiniteFloat(),
              help="Report `unknown` when the open-set score is below this [the bundle's calibrated threshold, "
                   "which keeps 95 % of held-out clips of the known classes; see openset.json].")
@click.option("--classes", "classes_file", type=click.Path(path_type=Path),
              help="Zero-shot classes added by name (stpr-classes add) [FOLDER.classes.json beside the folder "
                   "--bundle resolves to, if present].")
@click.option("--timeout", type=FiniteFloat(min=0, min_open=True, max=DAY_S), default=5.0, show_default=True,
              help="Seconds without a live frame = stalled (exit 3).")
@click.option("--learn", "learn_name", help="Record windows as examples of this action and learn it (stpr-learn, "
              "live): press l in the window, or see --learn-after.")
@click.option("--learn-windows", type=click.IntRange(min=1), default=16, show_default=True,
              help="Windows to record for --learn.")
@click.option("--learn-every", type=click.IntRange(min=1), help="Source frames between recorded windows [T: no "
              "frame shared].")
@click.option("--learn-after", type=FiniteFloat(min=0, max=DAY_S), help="Start recording this many seconds after the "
              "first prediction (needed with --headless).")
@click.option("--learn-out", type=click.Path(path_type=Path), help="Where --learn writes the new bundle "
              "[BUNDLE-learned-<time> beside the bundle]; with --watch on a link, the link is switched to it.")
@click.option("--serve", help="Also serve the web app and JSON API at [HOST:]PORT (host 127.0.0.1 unless given; "
              "0.0.0.0: every address, with a token). See docs/web.md.")
@click.option("--serve-token", help="The API token for a non-loopback --serve [a new one, kept in --serve-token-file].")
@click.option("--serve-token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Where the token is kept, mode 600 [~/.config/stpr/serve-token].")
@click.option("--serve-max-upload-mb", type=FiniteFloat(min=0, min_open=True, max=4096), default=64.0,
              show_default=True, help="Largest clip upload (all files of one request) --serve takes.")
@click.option("--serve-fps", type=FiniteFloat(min=0.5, max=120), default=15.0, show_default=True,
              help="Frames per second --serve draws and encodes for its viewers (all together): the stream "
                   "never waits on them.")
@click.option("--loop", is_flag=True, help="Start a --video or --frames source again at its end (a demo for --serve).")
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
    _check_serve(o, kind)
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
                    _run_clip(rec, Path(str(source)), o.topk, events, summary)
                else:
                    if watcher is not None:
                        watcher.serving_bundle = bundle
                        if o.watch:
                            watcher.start()
                    if session is not None:
                        session.start(rec, {"kind": kind, "name": str(source)}, _say)
                    _run_stream(rec, kind, source, o.stride, o.smooth, o.topk, events, summary, video_out, window,
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


def _check_serve(o: RunOptions, kind: str) -> None:
    """--serve and --loop combinations, refused before anything opens."""
    if o.loop and kind not in ("video", "frames"):
        raise click.UsageError("--loop starts a --video or --frames source again at its end; a camera or stream "
                               "has no end to loop")
    if o.serve is None:
        for given, option in ((o.serve_token, "--serve-token"), (o.serve_token_file, "--serve-token-file")):
            if given is not None:
                raise click.UsageError(f"{option} goes with --serve")
        return
    from .serve.security import parse_bind

    try:
        parse_bind(o.serve)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if o.clip:
        raise click.UsageError("--serve streams to a page; it does not go with --clip")
    if o.learn_name is not None or o.learn_out is not None:
        raise click.UsageError("--serve teaches from its page (Record); drop --learn/--learn-out")
    if o.classes_file is not None:
        raise click.UsageError("--serve writes new bundles, which a --classes file of this one does not fit; drop "
                               "--classes (classes added by name beside the bundle are carried over)")


def _serve_session(o: RunOptions, watcher: BundleWatcher | None) -> "ServeSession | None":
    if o.serve is None:
        return None
    from .serve.session import ServeOptions, ServeSession

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
                timeout: float, watcher: BundleWatcher | None = None, learner: "LiveLearner | Teacher | None" = None,
                key_hook: Callable[[], None] | None = None, session: "ServeSession | None" = None,
                loop: bool = False) -> None:
    import cv2

    frames, grabber, fps = _frames(kind, source, timeout)
    if session is not None or loop:
        from .serve.source import served_frames

        frames = served_frames((frames, grabber, fps), lambda: _frames(kind, source, timeout),
                               live=kind in ("camera", "url"), loop=loop, reconnect=session is not None,
                               hub=session.hub if session else None)
    video_out.fps = fps

    def on_frame(frame: np.ndarray, event: dict | None) -> None:
        elapsed = max(1e-6, time.perf_counter() - summary.started)
        if session is not None:  # the raw frame: the server draws it only if somebody looks
            session.hub.put_frame(frame, event, summary.frames / elapsed)
        if not (video_out.active or window):
            return
        annotated = draw_overlay(frame, event, summary.frames / elapsed)
        video_out.write(annotated)
        if window:
            cv2.imshow("stpr-run", annotated)
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                raise KeyboardInterrupt
            if key == ord(LEARN_KEY) and key_hook is not None:
                key_hook()

    drawn = video_out.active or window or session is not None  # nobody sees the overlay otherwise: do not draw it
    try:
        stream(rec, frames, stride=stride, smooth=smooth, topk=topk, events=events, summary=summary,
               on_frame=on_frame if drawn else None, max_frames=max_frames, watcher=watcher, learner=learner)
    finally:
        if hasattr(frames, "close"):  # a served source's own captures are released here
            frames.close()
        if isinstance(learner, LiveLearner):  # a bundle being written is finished, so the run does not leave it
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
