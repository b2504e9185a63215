"""stpr-run never destroys its input and never reports success it did not have: an
output that is an input (or the other output) is refused before anything is opened,
and a failed write (full disk) ends the run with its own code and one line."""
import json
import os
import sys

import pytest
from click.testing import CliRunner
from helpers import write_video

from stpr.runtime.cli import run_cli
from stpr.runtime.exits import EXIT_USAGE, EXIT_WRITE


def run(*args):
    return CliRunner().invoke(run_cli.main, [str(a) for a in args])


@pytest.fixture
def source(tmp_path):
    """A video file (only its bytes matter: these refusals come before it is opened) and a bundle folder."""
    video = tmp_path / "in.avi"
    video.write_bytes(b"the only copy of the footage")
    (tmp_path / "bundle").mkdir()
    return video, tmp_path / "bundle"


def link(tmp_path, target, name, hard=False):
    p = tmp_path / name
    (os.link if hard else os.symlink)(target, p)
    return p


@pytest.mark.parametrize("case", ["jsonl is input", "output is input", "output via symlink", "jsonl via symlink",
                                  "input via symlink", "hard link", "in a symlinked folder"])
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(source, tmp_path, case):
    video, bundle = source
    args = {  # built lazily: each case makes only its own links
        "jsonl is input": lambda: ("--video", video, "--jsonl", video),
        "output is input": lambda: ("--video", video, "--output", video),
        "output via symlink": lambda: ("--video", video, "--output", link(tmp_path, video, "l.avi")),
        "jsonl via symlink": lambda: ("--video", video, "--jsonl", link(tmp_path, video, "l.jsonl")),
        "input via symlink": lambda: ("--video", link(tmp_path, video, "l.avi"), "--output", video),
        "hard link": lambda: ("--video", video, "--jsonl", link(tmp_path, video, "h.avi", hard=True)),
        "in a symlinked folder": lambda: ("--video", video, "--output", link(tmp_path, tmp_path, "d") / "in.avi"),
    }[case]()
    res = run("--bundle", bundle, *args, "--headless")
    assert res.exit_code == EXIT_USAGE, res.output
    assert "would destroy the input" in res.output and "Traceback" not in res.output
    assert video.read_bytes() == b"the only copy of the footage"


def test_two_outputs_on_one_path_are_refused(source, tmp_path):
    video, bundle = source
    res = run("--bundle", bundle, "--video", video, "--headless", "--output", tmp_path / "x.mkv",
              "--jsonl", tmp_path / "x.mkv")
    assert res.exit_code == EXIT_USAGE and "is also the --output file" in res.output
    assert not (tmp_path / "x.mkv").exists()


@pytest.mark.parametrize("where", ["frames", "bundle"])
def test_an_output_inside_an_input_folder_is_refused(source, tmp_path, where):
    video, bundle = source
    frames = tmp_path / "frames"
    frames.mkdir()
    src = ("--frames", frames) if where == "frames" else ("--video", video)
    target = (frames if where == "frames" else bundle) / "manifest.json"
    res = run("--bundle", bundle, *src, "--headless", "--jsonl", target)
    assert res.exit_code == EXIT_USAGE and "is inside the input" in res.output
    assert not target.exists()


def test_a_source_option_given_twice_is_refused(source, tmp_path):
    video, bundle = source
    res = run("--bundle", bundle, "--video", video, "--video", video, "--headless")
    assert res.exit_code == EXIT_USAGE and "given 2 times" in res.output


def test_a_missing_video_is_refused_before_the_bundle_loads(source, tmp_path):
    res = run("--bundle", source[1], "--video", tmp_path / "nope.mp4", "--headless")
    assert res.exit_code == EXIT_USAGE and "does not exist" in res.output and "stpr-run:" not in res.output


def _run_on(disk, demo, video, *args):
    return disk.run([sys.executable, "-m", "stpr.runtime.cli.run_cli", "--bundle", str(demo[2]), "--video", str(video),
                     "--headless", *map(str, args)])


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def test_a_full_disk_under_jsonl_is_one_line_and_whole_lines(demo, tmp_path, small_disk):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(i) for i in range(0, 80, 4)])  # 160 frames
    events = small_disk.path / "ev.jsonl"
    res = _run_on(small_disk, demo, video, "--jsonl", events)
    assert res.returncode == EXIT_WRITE, res.stderr[-3000:]
    line = _one_error_line(res.stderr)
    assert f"--jsonl {str(events)!r}" in line and small_disk.errno_text in line
    text = events.read_text()
    assert text and text.endswith("\n")
    kept = [json.loads(e) for e in text.splitlines()]  # every line a whole object
    assert f"{len(kept)} from this run" in line and kept[0]["event"] == "start"
    assert small_disk.leftovers() == ["ev.jsonl"]


@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
def test_a_full_disk_under_output_is_reported_incomplete_and_not_kept(demo, tmp_path, small_disk, suffix):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(i) for i in range(0, 80, 4)], size=128)
    out = small_disk.path / f"out{suffix}"
    res = _run_on(small_disk, demo, video, "--output", out)
    assert res.returncode == EXIT_WRITE, res.stderr[-3000:]
    line = _one_error_line(res.stderr)
    assert f"--output {str(out)!r}" in line and "incomplete" in line and "not kept" in line
    assert small_disk.leftovers() == []  # neither the output nor its temp file
