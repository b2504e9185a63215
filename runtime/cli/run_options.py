"""stpr-run's command line before anything opens: the options, the source they name,
and the combinations and output paths that are refused as usage errors."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from ..contract import PRECISIONS
from ..errors import OutputError
from ..exits import EXIT_WRITE, click_error, exit_codes_help
from ..io.frame_folder import IMAGE_EXTS, frame_files
from ..io.output_paths import check_distinct, check_writable
from .click_types import DAY_S, FiniteFloat

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


LIVE_DESCRIPTIONS = (".sdp", ".m3u", ".m3u8")  # local files that describe a live stream: opened as one


def source_of(camera: int | None, video: Path | None, frames: Path | None, url: str | None) -> tuple[str, object]:
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


def check_outputs(kind: str, source: object, clip: bool, output: Path | None, jsonl: Path | None,
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


def once(ctx: click.Context, param: click.Parameter, value: tuple) -> object:
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


def check_serve(o: RunOptions, kind: str) -> None:
    """--serve and --loop combinations, refused before anything opens."""
    if o.loop and kind not in ("video", "frames"):
        raise click.UsageError("--loop starts a --video or --frames source again at its end; a camera or stream "
                               "has no end to loop")
    if o.serve is None:
        for given, option in ((o.serve_token, "--serve-token"), (o.serve_token_file, "--serve-token-file")):
            if given is not None:
                raise click.UsageError(f"{option} goes with --serve")
        return
    from ..serve.security import parse_bind

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


def command(main: Callable[..., None]) -> click.Command:
    """stpr-run's click command around `main`, one option per `RunOptions` field: a new
    option is a field there and a decorator here."""
    @click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EPILOG)
    @click.argument("url", required=False)
    @click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path),
                  help="Bundle from stpr-export.")
    @click.option("--camera", type=int, multiple=True, callback=once, help="Camera index.")
    @click.option("--video", type=click.Path(exists=True, dir_okay=False, path_type=Path), multiple=True,
                  callback=once, help="Video file.")
    @click.option("--frames", "frames_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                  multiple=True, callback=once, help="Folder of frames (sorted by name).")
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
    @click.option("--output", type=click.Path(path_type=Path), multiple=True, callback=once,
                  help="Write an annotated copy of the input (every frame, source fps; .mkv or .avi, which play up to "
                       "the cut if the run is killed).")
    @click.option("--jsonl", type=click.Path(path_type=Path), multiple=True, callback=once,
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
    @click.option("--learn-after", type=FiniteFloat(min=0, max=DAY_S),
                  help="Start recording this many seconds after the first prediction (needed with --headless).")
    @click.option("--learn-out", type=click.Path(path_type=Path), help="Where --learn writes the new bundle "
                  "[BUNDLE-learned-<time> beside the bundle]; with --watch on a link, the link is switched to it.")
    @click.option("--serve", help="Also serve the web app and JSON API at [HOST:]PORT (host 127.0.0.1 unless given; "
                  "0.0.0.0: every address, with a token). See docs/web.md.")
    @click.option("--serve-token",
                  help="The API token for a non-loopback --serve [a new one, kept in --serve-token-file].")
    @click.option("--serve-token-file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Where the token is kept, mode 600 [~/.config/stpr/serve-token].")
    @click.option("--serve-max-upload-mb", type=FiniteFloat(min=0, min_open=True, max=4096), default=64.0,
                  show_default=True, help="Largest clip upload (all files of one request) --serve takes.")
    @click.option("--serve-fps", type=FiniteFloat(min=0.5, max=120), default=15.0, show_default=True,
                  help="Frames per second --serve draws and encodes for its viewers (all together): the stream "
                       "never waits on them.")
    @click.option("--loop", is_flag=True,
                  help="Start a --video or --frames source again at its end (a demo for --serve).")
    @functools.wraps(main)
    def run(**options: Any) -> None:
        main(**options)
    return run
