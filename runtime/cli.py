"""`stpr-run`: the torch-free device runtime (NumPy + OpenCV + onnxruntime or TensorRT)."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import click
import numpy as np

from .app import Summary, classify_clip, stream
from .backends import DeviceUnavailable
from .bundle import Bundle, load_bundle
from .clip import clip_frames
from .experts import EXPERT_VARIANTS
from .manifest import BundleError
from .outputs import EventLog, VideoOut, check_writable
from .openset import check_threshold
from .overlay import draw_overlay
from .recognizer import Recognizer
from .sampling import centre_indices
from .signals import EXIT_SIGTERM, Terminated, sigterm_as_interrupt
from .stream import (LatestFrame, SourceError, SourceFailed, frames_from_capture, frames_from_folder, live_frames,
                     open_capture, source_fps)
from .trt_build import TensorRTUnavailable
from .watch import BundleWatcher
from .zero_shot import load_zero_shot

EXIT_ERROR = 1  # refused before running: bad bundle, source that does not open, missing backend
EXIT_STREAM = 3  # the source failed mid-way (stalled, ended live stream, truncated file): results so far kept
EXIT_INTERRUPT = 130  # Ctrl-C (128 + SIGINT)

EPILOG = f"""\b
URL: a live stream OpenCV/FFmpeg can open (rtsp://, http://, udp://, ...),
in place of --camera, --video or --frames.
\b
Exit codes:
  0    done: the video or frame folder ended, or --max-frames was reached
  {EXIT_ERROR}    refused before running (bad bundle, source that does not open, no GPU/TensorRT)
  2    bad command line (option value or combination)
  {EXIT_STREAM}    the source failed mid-way: a live stream stalled (--timeout) or ended, or a
       video is truncated; events so far are kept. A supervisor should restart.
  {EXIT_INTERRUPT}  Ctrl-C, and {EXIT_SIGTERM} SIGTERM: files finalised, summary printed
"""


def _source(camera: int | None, video: Path | None, frames: Path | None, url: str | None) -> tuple[str, object]:
    given = [(k, s) for k, s in (("camera", camera), ("video", video), ("frames", frames), ("url", url))
             if s is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one source: --camera N, --video PATH, --frames DIR or a URL")
    return given[0]


def _check_outputs(kind: str, clip: bool, output: Path | None, jsonl: Path | None) -> None:
    if clip and kind != "video":
        raise click.UsageError("--clip classifies one video file: use it with --video PATH")
    if clip and output is not None:
        raise click.UsageError("--output writes the annotated stream and --clip makes one prediction for the "
                               "whole video; drop --output (or --clip)")
    for path, option in ((output, "--output"), (jsonl, "--jsonl")):
        try:
            check_writable(path, option)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=option) from None


def _finite_threshold(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse NaN and inf at parsing time (float() accepts both): they would accept or reject everything."""
    if value is None:
        return None
    try:
        return check_threshold(value, "--unknown-threshold")
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EPILOG)
@click.argument("url", required=False)
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path), help="Bundle from stpr-export.")
@click.option("--camera", type=int, help="Camera index.")
@click.option("--video", type=click.Path(path_type=Path), help="Video file.")
@click.option("--frames", "frames_dir", type=click.Path(path_type=Path), help="Folder of frames (sorted by name).")
@click.option("--backend", type=click.Choice(["ort", "trt"]), default="ort", show_default=True,
              help="ort: onnxruntime, providers picked by --device. trt: TensorRT engines, built from the "
                   "bundle's ONNX on first start and cached (needs tensorrt and cuda-python).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where onnxruntime runs; cuda that does not come up is an error, not a silent CPU run.")
@click.option("--fp16", is_flag=True, help="Use the bundle's fp16 files / engines.")
@click.option("--experts", "experts_variant", type=click.Choice(EXPERT_VARIANTS),
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
@click.option("--output", type=click.Path(path_type=Path),
              help="Write an annotated copy of the input (every frame, source fps; .mp4 or .avi).")
@click.option("--jsonl", type=click.Path(path_type=Path), help="Write one JSON event per prediction.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after N source frames.")
@click.option("--unknown-threshold", type=float, callback=_finite_threshold,
              help="Report `unknown` when the open-set score is below this [the bundle's calibrated threshold, "
                   "which keeps 95 % of held-out clips of the known classes; see openset.json].")
@click.option("--classes", "classes_file", type=click.Path(path_type=Path),
              help="Zero-shot classes added by name (stpr-classes add) [BUNDLE.classes.json beside the bundle, "
                   "if present].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds without a live frame = stalled (exit 3).")
def main(url: str | None, bundle_dir: Path, camera: int | None, video: Path | None, frames_dir: Path | None,
         backend: str, device: str, fp16: bool, experts_variant: str | None, watch: bool, watch_interval: float,
         stride: int, smooth: int, topk: int, clip: bool, headless: bool,
         output: Path | None, jsonl: Path | None, max_frames: int | None, unknown_threshold: float | None,
         classes_file: Path | None,
         timeout: float) -> None:
    """Recognise actions from a camera, video, frame folder or stream URL."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("stpr.runtime.backends").setLevel(logging.INFO)
    logging.getLogger("stpr.runtime.watch").setLevel(logging.INFO)
    kind, source = _source(camera, video, frames_dir, url)
    _check_outputs(kind, clip, output, jsonl)
    if watch and (clip or watch_interval <= 0):
        raise click.UsageError("--watch follows a bundle while streaming: not with --clip, and --watch-interval > 0")
    window = not headless and not clip  # clip mode prints one result: nothing to show
    if window and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise click.ClickException("no display to show the window on; pass --headless (and --output/--jsonl)")

    def start_recognizer(b: Bundle) -> Recognizer:
        return Recognizer(b, backend, device, fp16, experts_variant, zero_shot=load_zero_shot(b, classes_file),
                          unknown_threshold=unknown_threshold).__enter__()

    watcher = BundleWatcher(bundle_dir, start_recognizer, watch_interval) if watch else None
    try:
        bundle = load_bundle(watcher.resolved if watcher else bundle_dir)  # watching: the folder the link names now
        recognizer = Recognizer(bundle, backend, device, fp16, experts_variant,
                                zero_shot=load_zero_shot(bundle, classes_file), unknown_threshold=unknown_threshold)
    except (BundleError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    summary, events, video_out = Summary(), EventLog(jsonl), VideoOut(output)
    code, failure = 0, None
    with sigterm_as_interrupt():
        try:
            with recognizer as rec:
                zs = f" + {len(rec.zero_shot.names)} zero-shot from {str(rec.zero_shot.source)!r}" \
                    if rec.zero_shot else ""
                click.echo(f"stpr-run: {len(bundle.classes)} classes{zs}, {rec.describe()}, "
                           f"backend {backend} on {rec.providers}", err=True)
                _say_unknown(rec)
                if clip:
                    _run_clip(rec, Path(str(source)), topk, events, summary)
                else:
                    if watcher is not None:
                        watcher.serving_bundle = bundle
                        watcher.start()
                    _run_stream(rec, kind, source, stride, smooth, topk, events, summary, video_out, window,
                                max_frames, timeout, watcher)
        except KeyboardInterrupt as e:  # Ctrl-C, the window's q/Esc, or SIGTERM (Terminated)
            terminated = isinstance(e, Terminated)
            click.echo("\nterminated (SIGTERM)" if terminated else "\ninterrupted", err=True)
            code = EXIT_SIGTERM if terminated else EXIT_INTERRUPT
        except SourceFailed as e:
            click.echo(f"error: {e}; events so far are saved", err=True)
            code = EXIT_STREAM
        except (SourceError, DeviceUnavailable, BundleError, TensorRTUnavailable, OSError) as e:
            failure = str(e)
        finally:
            if watcher is not None:
                watcher.stop()
            events.close()
            video_out.close()
    if failure is not None:
        raise click.ClickException(failure)
    click.echo(summary.text(), err=True)
    sys.exit(code)


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
    frames, n = clip_frames(lambda: open_capture(str(path)), str(path), T)
    if n < T:
        click.echo(f"warning: {str(path)!r} has {n} frames, fewer than the T={T} the model takes: frames are "
                   "repeated (as in training), so the result is less reliable", err=True)
    event = classify_clip(rec, frames, topk, int(centre_indices(n, T)[-1]))
    summary.frames, summary.predictions = n, 1
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
    cap = open_capture(source)  # live: camera index or stream URL
    fps = source_fps(cap)
    grabber = LatestFrame(cap)
    grabber.start()
    name = f"camera {source}" if kind == "camera" else repr(source)
    return live_frames(grabber, timeout, name), grabber, fps


def _run_stream(rec: Recognizer, kind: str, source: object, stride: int, smooth: int, topk: int,
                events: EventLog, summary: Summary, video_out: VideoOut, window: bool, max_frames: int | None,
                timeout: float, watcher: BundleWatcher | None = None) -> None:
    import cv2

    frames, grabber, fps = _frames(kind, source, timeout)
    video_out.fps = fps

    def on_frame(frame: np.ndarray, event: dict | None) -> None:
        elapsed = max(1e-6, time.perf_counter() - summary.started)
        annotated = draw_overlay(frame, event, summary.frames / elapsed)
        video_out.write(annotated)
        if window:
            cv2.imshow("stpr-run", annotated)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                raise KeyboardInterrupt

    drawn = video_out.active or window  # nobody sees the overlay otherwise: do not draw it
    try:
        stream(rec, frames, stride=stride, smooth=smooth, topk=topk, events=events, summary=summary,
               on_frame=on_frame if drawn else None, max_frames=max_frames, watcher=watcher)
    finally:
        if grabber is not None:
            summary.dropped = grabber.dropped
            grabber.stop()
    T = rec.bundle.frames
    if summary.frames and not summary.predictions:
        need = (T - 1) * stride + 1
        click.echo(f"warning: {summary.frames} frames gave no prediction: the window needs T={T} frames, one "
                   f"every --stride {stride} ({need} source frames); for a short video use --clip", err=True)


if __name__ == "__main__":
    main()
