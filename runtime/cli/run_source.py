"""What stpr-run runs on a source: one prediction for a whole clip (--clip), or the
streaming loop over a video, a frame folder, a camera or a stream URL."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import click
import numpy as np

from ..engine.recognizer import Recognizer
from ..engine.watch import BundleWatcher
from ..io.clip import TruncatedClip, clip_frames
from ..io.events import EventLog
from ..io.overlay import draw_overlay
from ..io.stream import (
    LatestFrame,
    SourceError,
    frames_from_capture,
    frames_from_folder,
    live_frames,
    open_capture,
    source_fps,
)
from ..io.video_out import VideoOut
from ..learn.live_learn import LEARN_KEY, LiveLearner
from ..model.sampling import centre_indices
from .app import Summary, classify_clip, stream

if TYPE_CHECKING:
    from ..serve.session import ServeSession
    from ..serve.teach import Teacher

READ_GRACE_S = 1.0  # a live read may block this much longer than --timeout


def run_clip(rec: Recognizer, path: Path, topk: int, events: EventLog, summary: Summary) -> None:
    if not path.is_file():
        raise SourceError(f"--video {str(path)!r} is not a file")
    T = rec.bundle.frames
    try:
        frames, n = clip_frames(lambda: open_capture(str(path)), str(path), T)
    except TruncatedClip as e:  # predict from what decodes, then exit 3 all the same: the file is damaged
        classify_and_print(rec, e.frames, e.decodable, topk, events, summary)
        raise
    if n < T:
        click.echo(f"warning: {str(path)!r} has {n} frames, fewer than the T={T} the model takes: frames are "
                   "repeated (as in training), so the result is less reliable", err=True)
    classify_and_print(rec, frames, n, topk, events, summary)


def classify_and_print(rec: Recognizer, frames: list[np.ndarray], n: int, topk: int, events: EventLog,
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


def frames_of(kind: str, source: object, timeout: float
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


def run_stream(rec: Recognizer, kind: str, source: object, stride: int, smooth: int, topk: int,
                events: EventLog, summary: Summary, video_out: VideoOut, window: bool, max_frames: int | None,
                timeout: float, watcher: BundleWatcher | None = None, learner: "LiveLearner | Teacher | None" = None,
                key_hook: Callable[[], None] | None = None, session: "ServeSession | None" = None,
                loop: bool = False) -> None:
    import cv2

    frames, grabber, fps = frames_of(kind, source, timeout)
    if session is not None or loop:
        from ..serve.source import served_frames

        frames = served_frames((frames, grabber, fps), lambda: frames_of(kind, source, timeout),
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
