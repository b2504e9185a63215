"""stpr-run as an operator meets it: exit codes a supervisor can act on, refusals before
any work, an --output that is a full annotated copy, SIGTERM like Ctrl-C."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import FakeLiveCapture, decode, predictions, write_video

from stpr.runtime.cli import run_cli, run_source

REPO = Path(__file__).resolve().parent.parent


def run(*args: str):
    return CliRunner().invoke(run_cli.main, [str(a) for a in args])


def bgr_frames(test, n: int) -> list[np.ndarray]:
    clips = np.concatenate([test.raw_clip(i) for i in range(0, 4 * ((n + 7) // 8), 4)])[:n]
    return [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in clips]


def test_live_stream_that_ends_is_a_source_failure(demo, tmp_path, monkeypatch):
    # An HTTP/MPEG-TS server killed mid-stream: read() starts failing at once.
    live = FakeLiveCapture(bgr_frames(demo[3], 12), "end")
    monkeypatch.setattr(run_source, "open_capture", lambda s, **kw: live)
    events = tmp_path / "ev.jsonl"
    res = run("--bundle", demo[2], "http://127.0.0.1:8099/live.ts", "--headless", "--jsonl", events)
    assert res.exit_code == run_cli.EXIT_STREAM, res.output
    assert "the live source 'http://127.0.0.1:8099/live.ts' ended" in res.output
    assert "predictions" in res.output and len(predictions(events)) >= 1


def test_clip_of_a_truncated_video_still_predicts_from_what_decodes(demo, tmp_path):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(i) for i in range(0, 40, 4)])  # 80 frames
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    res = run("--bundle", demo[2], "--video", cut, "--clip")
    assert res.exit_code == run_cli.EXIT_STREAM, res.output
    top = [line for line in res.output.splitlines() if line[:7].strip().replace(".", "").isdigit()]
    assert len(top) == 3 and "decodable frames" in res.output  # the top-3, then why it exits 3
    assert "events so far are saved" not in res.output  # there is no --jsonl


@pytest.mark.parametrize("clip", [False, True])
def test_truncated_video_gives_the_same_exit_code_in_both_modes(demo, tmp_path, clip):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(i) for i in range(0, 40, 4)])  # 80 frames
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 3])  # header still says 80 frames
    res = run("--bundle", demo[2], "--video", cut, "--headless", *(["--clip"] if clip else []))
    assert res.exit_code == run_cli.EXIT_STREAM, res.output
    assert "truncated or corrupt" in res.output and "Traceback" not in res.output


def test_output_draws_the_latest_prediction_on_every_frame(demo, tmp_path):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0), demo[3].raw_clip(4)])  # 16 frames, 8 fps
    out = tmp_path / "out.mkv"
    res = run("--bundle", demo[2], "--video", video, "--headless", "--stride", "2", "--output", out)
    assert res.exit_code == 0, res.output
    written, source = decode(out), decode(video)
    assert len(written) == 16 and cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(8)
    # The first prediction comes at frame 14 (T=8 frames, stride 2); from then on the
    # label sits in the top-left corner of the copy: green strokes (the 32-pixel frame gets
    # a caption bar, dark like the scene here), never there in the source.
    def green(img):
        b, g, r = (img[:14, :, i].astype(int) for i in range(3))
        return int(((g > 100) & (g > r + 40) & (g > b + 40)).sum())

    assert green(written[15]) > 5 and green(source[15]) == 0 and not list(tmp_path.glob(".tmp-*"))


def test_sigterm_finalises_the_output_and_prints_the_summary(demo, tmp_path):
    out, events = tmp_path / "out.mkv", tmp_path / "ev.jsonl"
    frames = tmp_path / "frames.npy"
    np.save(frames, np.stack(bgr_frames(demo[3], 16)), allow_pickle=False)
    code = (  # an endless live source, as under a service manager, stopped with SIGTERM
        "import sys, itertools, numpy as np\n"
        f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "from helpers import FakeLiveCapture\n"
        "from stpr.runtime.cli import run_cli as cli, run_source\n"
        f"frames = list(np.load({str(frames)!r}, allow_pickle=False))\n"
        "run_source.open_capture = lambda s, **kw: FakeLiveCapture(frames * 1000, 'stall', fps=25.0)\n"
        f"cli.main(['--bundle', {str(demo[2])!r}, 'rtsp://cam/1', '--headless', '--output', {str(out)!r},"
        f" '--jsonl', {str(events)!r}])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (events.exists() and len(predictions(events)) >= 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]
    assert "terminated (SIGTERM)" in stderr and "predictions" in stderr and "p99" in stderr
    assert len(decode(out)) >= 3 and not list(tmp_path.glob(".tmp-*"))  # a finished, playable file


def test_clip_mode_opens_no_window(demo, tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0)])
    res = run("--bundle", demo[2], "--video", video, "--clip")
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args, message", [
    (["--output", "nodir/x.mkv"], "the folder 'nodir' does not exist"),
    (["--jsonl", "nodir/x.jsonl"], "the folder 'nodir' does not exist"),
    (["--output", "x.txt"], "give a video file name ending in .mkv, .avi"),
    (["--timeout", "-1"], "-1"),
    (["--max-frames", "-5"], "-5"),
    (["--stride", "0"], "0"),
    (["--clip", "--output", "x.mp4"], "drop --output"),
])
def test_bad_options_are_refused_before_any_work(demo, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0)])
    res = run("--bundle", demo[2], "--video", video, "--headless", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "stpr-run:" not in res.output  # no model was loaded
    assert not (tmp_path / "x.mp4").exists()


def test_video_shorter_than_the_window_warns(demo, tmp_path):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0)[:5]])
    streamed = run("--bundle", demo[2], "--video", video, "--headless")
    assert streamed.exit_code == 0 and "5 frames gave no prediction" in streamed.output
    assert "use --clip" in streamed.output
    clipped = run("--bundle", demo[2], "--video", video, "--clip")
    assert clipped.exit_code == 0 and "has 5 frames, fewer than the T=8" in clipped.output


def test_empty_frames_folder_says_so(demo, tmp_path):
    (tmp_path / "empty").mkdir()
    res = run("--bundle", demo[2], "--frames", tmp_path / "empty", "--headless")
    assert res.exit_code == 2 and "holds no images" in res.output  # a usage error, as --help says
    assert "events so far" not in res.output


def test_tensorrt_missing_is_a_one_line_error(demo, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    res = run("--bundle", demo[2], "--camera", "0", "--headless", "--backend", "trt")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1].startswith("Error: ") and "tensorrt" in res.output.lower()


def test_help_documents_options_url_and_exit_codes():
    text = CliRunner().invoke(run_cli.main, ["--help"]).output
    for needle in ("--topk", "Classes (with scores)", "--backend", "TensorRT engines", "--device",
                   "URL: a live stream", "Exit codes"):
        assert needle in text, needle
    flat = " ".join(text.split())
    assert "3 the source failed mid-way" in flat and "143 SIGTERM" in flat and "4 an output could not" in flat


def test_nothing_is_drawn_when_nothing_shows_or_records_it(demo, tmp_path, monkeypatch):
    calls = []
    real = run_source.draw_overlay
    monkeypatch.setattr(run_source, "draw_overlay", lambda *a: calls.append(1) or real(*a))
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0), demo[3].raw_clip(1)])
    assert run("--bundle", demo[2], "--video", video, "--headless", "--jsonl", tmp_path / "e.jsonl").exit_code == 0
    assert calls == []
    assert run("--bundle", demo[2], "--video", video, "--headless", "--output", tmp_path / "o.mkv").exit_code == 0
    assert len(calls) == 16


def test_real_http_stream_killed_mid_way_exits_3(demo, tmp_path):
    # The field test's case end to end: an ffmpeg HTTP/MPEG-TS server on 127.0.0.1, killed.
    import shutil
    import socket

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (the FakeLiveCapture test above covers the logic)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/live.ts"
    server = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                               "testsrc=size=64x64:rate=25", "-f", "mpegts", "-listen", "1", url])
    events = tmp_path / "ev.jsonl"
    try:
        time.sleep(1.0)  # the server listens
        client = subprocess.Popen(
            [sys.executable, "-c", "import sys; from stpr.runtime.cli.run_cli import main; main(sys.argv[1:])",
             "--bundle", str(demo[2]), url, "--headless", "--jsonl", str(events), "--timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (events.exists() and events.read_text().count("\n") >= 2):
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait()
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == run_cli.EXIT_STREAM, stderr[-2000:]
    assert f"the live source {url!r} ended" in stderr and "events so far are saved" in stderr


class OpensButDecodesNothing:
    """A video file OpenCV opens whose every read fails (a broken stream in a valid container)."""

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def read(self):
        return False, None

    def grab(self) -> bool:
        return False

    def release(self) -> None:
        pass


@pytest.mark.parametrize("clip", [False, True])
def test_video_that_opens_but_decodes_nothing_is_a_source_failure(demo, tmp_path, monkeypatch, clip):
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"RIFF")  # only needs to exist: the capture below stands in for OpenCV's
    monkeypatch.setattr(run_source, "open_capture", lambda s: OpensButDecodesNothing())
    res = run("--bundle", demo[2], "--video", empty, "--headless", *(["--clip"] if clip else []))
    assert res.exit_code == run_cli.EXIT_STREAM, res.output
    assert "truncated or corrupt" in res.output


def test_after_ctrl_c_the_summary_counts_the_frames_the_output_holds(demo, tmp_path, monkeypatch):
    real, calls = run_source.draw_overlay, []

    def interrupted_at_the_tenth(*a):  # Ctrl-C while frame 10 is being drawn
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(run_source, "draw_overlay", interrupted_at_the_tenth)
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0), demo[3].raw_clip(4)])
    out = tmp_path / "out.avi"
    res = run("--bundle", demo[2], "--video", video, "--headless", "--output", out)
    assert res.exit_code == 130, res.output
    assert len(decode(out)) == 9 and "frames 9," in res.output
