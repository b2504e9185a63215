"""stpr-run reads a local file given as its positional source as --video (it was opened as
a live stream: frames dropped, exit 3), and `--learn` refuses a name stpr-learn would refuse
before it records, and ends with its own code when the source ends before it learned."""
import pytest
from click.testing import CliRunner
from helpers import fast_config, predictions, write_video

from stpr.export import export_run
from stpr.runtime.cli import run_cli, run_options
from stpr.runtime.exits import EXIT_ERROR, EXIT_NOT_LEARNED
from stpr.train import run as R


def run(*args: object):
    return CliRunner().invoke(run_cli.main, [str(a) for a in args])


def test_a_local_video_given_as_the_source_is_read_as_video(demo, tmp_path):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0), demo[3].raw_clip(4)])  # 16 frames
    events = tmp_path / "ev.jsonl"
    res = run("--bundle", demo[2], video, "--headless", "--jsonl", events)
    assert res.exit_code == 0 and "dropped 0" in res.output, res.output
    assert [e["frame"] for e in predictions(events)] == list(range(7, 16))  # every frame, none dropped
    assert run_options.source_of(None, None, None, str(tmp_path)) == ("frames", tmp_path)
    assert run_options.source_of(None, None, None, "rtsp://cam/1") == ("url", "rtsp://cam/1")
    (tmp_path / "cam.sdp").write_text("v=0\n")  # describes a live RTP stream: still opened as one
    assert run_options.source_of(None, None, None, str(tmp_path / "cam.sdp"))[0] == "url"


@pytest.fixture(scope="module")
def head_bundle(tmp_path_factory, demo):
    root = tmp_path_factory.mktemp("learnrun")
    R.run(fast_config(**{"head.mode": "alone", "head.dim": 512}), root / "run")
    return export_run(root / "run", root / "b0").bundle


@pytest.mark.parametrize("name, message", [("", "class name '' is empty"),
                                           ("  ", "class name '  ' is empty")])
def test_a_name_stpr_learn_refuses_is_refused_before_recording(head_bundle, demo, tmp_path, name, message):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(i) for i in range(0, 40, 4)])
    res = run("--bundle", head_bundle, "--video", video, "--headless", "--learn", name, "--learn-after", "0",
              "--learn-windows", "4")
    assert res.exit_code == EXIT_ERROR and message in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # no traceback
    assert "stpr-run:" not in res.output  # refused before the stream started: nothing recorded


def test_a_name_that_is_a_class_spelled_otherwise_is_refused_before_recording(head_bundle, demo, tmp_path):
    from stpr.runtime.bundle.load import load_bundle

    trained = load_bundle(head_bundle).classes[0]  # e.g. circle_moving_left
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(i) for i in range(0, 40, 4)])
    res = run("--bundle", head_bundle, "--video", video, "--headless", "--learn", trained.upper(),
              "--learn-after", "0", "--learn-windows", "4")
    assert res.exit_code == EXIT_ERROR and "once cleaned" in res.output and "stpr-run:" not in res.output, res.output


def test_a_video_that_ends_mid_recording_exits_with_its_own_code(head_bundle, demo, tmp_path):
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0), demo[3].raw_clip(4)])  # 16 frames: 2 windows
    out = tmp_path / "learned"
    res = run("--bundle", head_bundle, "--video", video, "--headless", "--learn", "wave", "--learn-after", "0",
              "--learn-windows", "4", "--learn-out", out)
    assert res.exit_code == EXIT_NOT_LEARNED, res.output
    assert "the source ended after 2 of the 4 windows: nothing learned" in res.output
    assert not out.exists()
    assert f"{EXIT_NOT_LEARNED}    --learn ended without learning" in run("--help").output
