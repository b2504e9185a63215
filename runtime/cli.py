"""`stpr-run`: the torch-free device runtime (NumPy + OpenCV + onnxruntime or TensorRT)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Iterator

import click
import numpy as np

from .app import EventLog, Summary, classify_clip, draw_overlay, stream
from .backends import DeviceUnavailable
from .bundle import Bundle, load_bundle
from .experts import EXPERT_VARIANTS
from .manifest import BundleError
from .recognizer import Recognizer
from .watch import BundleWatcher
from .stream import LatestFrame, SourceError, StreamStalled, frames_from_capture, frames_from_folder, open_capture

EXIT_STREAM = 3  # the source failed mid-way (stalled, truncated): results so far are kept


class VideoOut:
    """Annotated frames to --output, written to a temp file renamed at the end."""

    def __init__(self, path: Path | None, fps: float) -> None:
        self.path, self.fps, self.writer = path, fps, None
        self.tmp = path.with_name(f".tmp-{path.name}") if path else None

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self.path is None:
            return
        if self.writer is None:
            h, w = frame.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.path)


def _source(camera: int | None, video: Path | None, frames: Path | None, url: str | None):
    given = [s for s in (camera, video, frames, url) if s is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one source: --camera N, --video PATH, --frames DIR or a URL")
    return given[0]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("url", required=False)
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path), help="Bundle from stpr-export.")
@click.option("--camera", type=int, help="Camera index.")
@click.option("--video", type=click.Path(path_type=Path), help="Video file.")
@click.option("--frames", "frames_dir", type=click.Path(path_type=Path), help="Folder of frames (sorted by name).")
@click.option("--backend", type=click.Choice(["ort", "trt"]), default="ort", show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--fp16", is_flag=True, help="Use the bundle's fp16 files / engines.")
@click.option("--experts", "experts_variant", type=click.Choice(EXPERT_VARIANTS),
              help="Expert weights: fp32, fp16 (GPU), int8 (CPU, from stpr-export --int8) [that of the backbone].")
@click.option("--watch", is_flag=True, help="Follow --bundle (a symlink from stpr-export --publish) and swap in "
              "each new bundle between two steps.")
@click.option("--watch-interval", type=float, default=2.0, show_default=True, help="Seconds between --watch checks.")
@click.option("--stride", type=int, default=1, show_default=True, help="A frame enters the window every S frames.")
@click.option("--smooth", type=int, default=1, show_default=True, help="Average scores over the last N steps.")
@click.option("--topk", type=int, default=3, show_default=True)
@click.option("--clip", is_flag=True, help="Classify the whole video once (T frames, TSN centres).")
@click.option("--headless", is_flag=True, help="No window.")
@click.option("--output", type=click.Path(path_type=Path), help="Write annotated video (mp4).")
@click.option("--jsonl", type=click.Path(path_type=Path), help="Write one JSON event per prediction.")
@click.option("--max-frames", type=int, help="Stop after N source frames.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds without a live frame = stalled.")
def main(url: str | None, bundle_dir: Path, camera: int | None, video: Path | None, frames_dir: Path | None,
         backend: str, device: str, fp16: bool, experts_variant: str | None, watch: bool, watch_interval: float,
         stride: int, smooth: int, topk: int, clip: bool, headless: bool,
         output: Path | None, jsonl: Path | None, max_frames: int | None, timeout: float) -> None:
    """Recognise actions from a camera, video, frame folder or stream URL."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("stpr.runtime.backends").setLevel(logging.INFO)
    logging.getLogger("stpr.runtime.watch").setLevel(logging.INFO)
    source = _source(camera, video, frames_dir, url)
    if stride < 1 or smooth < 1 or topk < 1:
        raise click.UsageError("--stride, --smooth and --topk must be at least 1")
    if watch and (clip or watch_interval <= 0):
        raise click.UsageError("--watch follows a bundle while streaming: not with --clip, and --watch-interval > 0")

    def start_recognizer(b: Bundle) -> Recognizer:
        return Recognizer(b, backend, device, fp16, experts_variant).__enter__()

    watcher = BundleWatcher(bundle_dir, start_recognizer, watch_interval) if watch else None
    try:
        bundle = load_bundle(watcher.resolved if watcher else bundle_dir)  # watching: the folder the link names now
        recognizer = Recognizer(bundle, backend, device, fp16, experts_variant)
    except (BundleError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if not headless and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise click.ClickException("no display to show the window on; pass --headless (and --output/--jsonl)")
    summary, events = Summary(), EventLog(jsonl)
    code = 0
    try:
        with recognizer as rec:
            click.echo(f"stpr-run: {len(bundle.classes)} classes, {len(bundle.manifest['experts'])} experts "
                       f"({rec.variant}{', fused' if rec.experts.fused else ''}), "
                       f"backend {backend} on {rec.providers}", err=True)
            if clip:
                code = _run_clip(rec, source, topk, events, summary)
            else:
                if watcher is not None:
                    watcher.serving_bundle = bundle
                    watcher.start()
                code = _run_stream(rec, source, stride, smooth, topk, events, summary, output, headless,
                                   max_frames, timeout, watcher)
    except (SourceError, DeviceUnavailable, BundleError) as e:
        events.close()
        raise click.ClickException(str(e)) from None
    finally:
        if watcher is not None:
            watcher.stop()
        events.close()
    click.echo(summary.text(), err=True)
    sys.exit(code)


def _run_clip(rec: Recognizer, source, topk: int, events: EventLog, summary: Summary) -> int:
    if not isinstance(source, Path) or source.is_dir():
        raise click.UsageError("--clip classifies one video file: use it with --video PATH")
    event, n = classify_clip(rec, frames_from_capture(open_capture(str(source)), str(source)), topk)
    summary.frames, summary.predictions = n, 1
    for k, v in event["latency_ms"].items():
        summary.latency_ms[k].append(v)
    events.write(event)
    for cls, p in event["top"]:
        click.echo(f"{p:7.4f}  {cls}")
    return 0


def _frames(source, timeout: float) -> tuple[Iterator[tuple[int, np.ndarray]], LatestFrame | None]:
    if isinstance(source, Path) and source.is_dir():
        return enumerate(frames_from_folder(source)), None
    if isinstance(source, Path):
        return enumerate(frames_from_capture(open_capture(str(source)), str(source))), None
    grabber = LatestFrame(open_capture(source))  # live: camera index or stream URL
    grabber.start()

    def live() -> Iterator[tuple[int, np.ndarray]]:
        while (item := grabber.get(timeout)) is not None:
            yield item

    return live(), grabber


def _run_stream(rec: Recognizer, source, stride: int, smooth: int, topk: int, events: EventLog, summary: Summary,
                output: Path | None, headless: bool, max_frames: int | None, timeout: float,
                watcher: BundleWatcher | None = None) -> int:
    import cv2

    frames, grabber = _frames(source, timeout)
    video = VideoOut(output, fps=30.0)

    def show(frame: np.ndarray, event: dict) -> None:
        elapsed = max(1e-6, event["time"])
        annotated = draw_overlay(frame, event, summary.frames / elapsed)
        video.write(annotated)
        if not headless:
            cv2.imshow("stpr-run", annotated)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                raise KeyboardInterrupt

    try:
        stream(rec, frames, stride=stride, smooth=smooth, topk=topk, events=events, summary=summary,
               on_event=show, max_frames=max_frames, watcher=watcher)
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        return 130
    except (StreamStalled, SourceError) as e:
        click.echo(f"error: {e}; events so far are saved", err=True)
        return EXIT_STREAM
    finally:
        if grabber is not None:
            summary.dropped = grabber.dropped
            grabber.stop()
        video.close()
    return 0


if __name__ == "__main__":
    main()
