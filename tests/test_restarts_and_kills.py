"""What a supervisor's restart, a second process or a kill -9 does to stpr-run's outputs:
the events log is appended to (each run opens with a `start` event) and never truncated,
even by a restart whose source fails to open; two processes never write one output; and a
recording killed mid-way plays up to its last buffered frames and is kept by the next run."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import decode, predictions, write_video
from live_server import MjpegServer

from stpr.runtime.cli import run_cli
from stpr.runtime.exits import EXIT_ERROR, EXIT_SIGTERM
from stpr.runtime.io.events import EventLog
from stpr.runtime.io.video_out import VideoOut

RUN = [sys.executable, "-m", "stpr.runtime.cli.run_cli"]
GONE = "http://127.0.0.1:9/gone"  # nothing listens there: the source fails to open at once


def run(*args: object):
    return CliRunner().invoke(run_cli.main, [str(a) for a in args])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line a whole object


def test_a_restart_whose_source_fails_keeps_every_earlier_event_ten_times(demo, tmp_path):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0), demo[3].raw_clip(4)])  # 16 frames
    events = tmp_path / "ev.jsonl"
    assert run("--bundle", demo[2], "--video", video, "--headless", "--jsonl", events).exit_code == 0
    first = events.read_text()
    assert len(predictions(events)) == 9
    start = _lines(events)[0]
    assert start["event"] == "start" and start["source"] == {"video": str(video)}
    assert start["bundle"] == str(Path(demo[2]).resolve()) and len(start["manifest_sha256"]) == 64
    for i in range(10):  # the restarts --help recommends after exit 3, with the stream still down
        res = run("--bundle", demo[2], GONE, "--headless", "--jsonl", events, "--timeout", "1")
        assert res.exit_code == EXIT_ERROR, res.output
        text = events.read_text()
        assert text.startswith(first)  # nothing earlier lost, nothing rewritten
        starts = [e for e in _lines(events) if e.get("event") == "start"]
        assert len(starts) == i + 2 and starts[-1]["source"] == {"url": GONE}
    assert len(predictions(events)) == 9


def test_a_line_cut_by_a_kill_is_dropped_and_the_whole_lines_kept(tmp_path):
    events = tmp_path / "ev.jsonl"
    events.write_text('{"frame": 7, "top": []}\n{"frame": 8, "top": []}\n{"frame": 9, "to')  # killed mid-write
    log = EventLog(events)
    log.write({"event": "start"})
    log.close()
    assert [e.get("frame", e.get("event")) for e in _lines(events)] == [7, 8, "start"]


def _live(demo, n: int = 40) -> list[np.ndarray]:
    clips = np.concatenate([demo[3].raw_clip(i) for i in range(0, 4 * ((n + 7) // 8), 4)])[:n]
    return [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in clips]


def _wait_for(path: Path, predictions_at_least: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(predictions(path)) >= predictions_at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {predictions_at_least} predictions in {path} (exit {proc.poll()})")


def test_a_second_process_on_the_same_output_is_refused(demo, tmp_path):
    events, out = tmp_path / "ev.jsonl", tmp_path / "out.avi"
    with MjpegServer(_live(demo)) as server:
        first = subprocess.Popen([*RUN, "--bundle", str(demo[2]), server.url, "--headless", "--jsonl", str(events),
                                  "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(events, 2, first)
            for option, value, other in (("--jsonl", f"./{events.name}", ("--output", "b.avi")),
                                         ("--output", str(out), ("--jsonl", "b.jsonl"))):
                # the same file spelled another way; --max-frames ends it if it is (wrongly) let in
                second = subprocess.run([*RUN, "--bundle", str(demo[2]), server.url, "--headless", option, value,
                                         *other, "--max-frames", "30"], capture_output=True, text=True,
                                        cwd=tmp_path, timeout=120)
                assert second.returncode == EXIT_ERROR, second.stderr[-2000:]
                assert "being written by another process" in second.stderr and option in second.stderr
            first.send_signal(signal.SIGTERM)
            _, stderr = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
    assert first.returncode == EXIT_SIGTERM, stderr[-2000:]
    lines = _lines(events)  # no NUL bytes, no line of the refused runs
    assert [e.get("event") for e in lines].count("start") == 1 and len(decode(out)) > 0
    assert not (tmp_path / "b.avi").exists() and not (tmp_path / "b.jsonl").exists()


# ---------------------------------------------------------------- kill -9 while recording

_WRITER = """
import sys, numpy as np
from pathlib import Path
from stpr.runtime.io.video_out import VideoOut
out = VideoOut(Path(sys.argv[1]), fps=25.0)
rng = np.random.default_rng(0)
base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
for i in range(100000):
    out.write(np.roll(base, 3 * i, axis=1))
    if i == int(sys.argv[2]):
        print("written", flush=True)
"""


@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
def test_a_recording_killed_mid_way_plays_and_the_next_run_keeps_it(tmp_path, suffix):
    out = tmp_path / f"rec{suffix}"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out), "300"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (tmp,) = tmp_path.glob(f".tmp-rec.*{suffix}")
    played = len(decode(tmp))
    assert played > 100  # the frames before the writer's last buffer
    nxt = VideoOut(out)
    assert "kept 1 recording" in nxt.cut_note
    nxt.close()
    (cut,) = tmp_path.glob(f"rec.cut-*{suffix}")
    assert len(decode(cut)) == played and not list(tmp_path.glob(".tmp-*")) and not out.exists()


def test_an_unplayable_leftover_is_removed_and_said(tmp_path):
    (tmp_path / ".tmp-rec.0123abcd.mkv").write_bytes(b"\0" * 100)
    (tmp_path / ".tmp-other.0123abcd.mkv").write_bytes(b"\0" * 100)  # another output's: not ours to touch
    out = VideoOut(tmp_path / "rec.mkv")
    out.close()
    assert "removed 1 unplayable temp file" in out.cut_note and ".tmp-rec.0123abcd.mkv" in out.cut_note
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-other.0123abcd.mkv"]


@pytest.mark.slow
def test_stpr_run_killed_ten_times_keeps_ten_playable_recordings(demo, tmp_path):
    # 320x320 MJPEG frames: OpenCV's writer flushes every 256 KiB, a few dozen of these. The
    # video is far longer than what a run gets through before its kill, however slow the test.
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(i % 40) for i in range(0, 1000, 4)], size=320)
    events, out = tmp_path / "ev.jsonl", tmp_path / "rec.avi"
    args = [*RUN, "--bundle", str(demo[2]), "--video", str(video), "--headless", "--jsonl", str(events),
            "--output", str(out)]
    for i in range(10):
        before = len(predictions(events)) if events.exists() else 0
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(events, before + 80, proc)
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        handled = predictions(events)[-1]["frame"] + 1  # its frame is drawn right after its line is written
        if i:  # this run kept the recording the previous kill left
            assert "kept 1 recording(s) a killed run left" in stderr, stderr[-2000:]
        (tmp,) = tmp_path.glob(".tmp-rec.*.avi")
        played = len(decode(tmp))
        assert 0 < played <= handled
        assert handled - played <= 262144 / (tmp.stat().st_size / played) + 2  # at most one writer buffer lost
    res = subprocess.run([*args, "--max-frames", "10"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "kept 1 recording(s) a killed run left" in res.stderr, res.stderr[-2000:]
    cuts = sorted(tmp_path.glob("rec.cut-*.avi"))
    assert len(cuts) == 10 and all(len(decode(c)) > 0 for c in cuts)
    assert len(decode(out)) == 10 and not list(tmp_path.glob(".tmp-*"))
    assert [e.get("event") for e in _lines(events)].count("start") == 11
