"""stpr-run --watch: a bundle published mid-stream is swapped in without a gap; a bad one is refused."""
import json
import logging
import os
import shutil
import time

import pytest
from click.testing import CliRunner
from helpers import fast_config
from test_runtime import write_video

from stpr.export import export_run
from stpr.export.cli import main as export_main
from stpr.runtime.bundle.manifest import seal_manifest, sha256_file
from stpr.runtime.bundle.publish import publish
from stpr.runtime.cli import run_cli, run_source
from stpr.train import run as R
from stpr.train.data.synthetic import SyntheticActions

SWITCH_AT = 12  # the source frame after which the new bundle is published


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("swap")
    R.run(fast_config(), root / "run")
    export_run(root / "run", root / "bundles" / "task1", task=1)  # K = 2
    export_run(root / "run", root / "bundles" / "task2", task=2)  # K = 3
    test = SyntheticActions("test", clips_per_class=4, seed=0)
    video = write_video(root / "v.avi", [test.raw_clip(i) for i in (0, 4, 8, 12)])  # 32 frames
    return root, video


def _stream_publishing(monkeypatch, link, new_bundle, video, events, publish_with=publish):
    """stpr-run --watch on `video`, publishing `new_bundle` at `link` after frame SWITCH_AT and
    holding the next frame until the watcher has loaded it (so the test does not race)."""
    original = run_source.stream

    def stream(rec, frames, **kw):
        watcher = kw["watcher"]

        def gen():
            for index, frame in frames:
                yield index, frame
                if index == SWITCH_AT:
                    publish_with(new_bundle, link)
                    deadline = time.monotonic() + 120
                    while not watcher.has_offer and time.monotonic() < deadline:
                        time.sleep(0.05)
        return original(rec, gen(), **kw)

    monkeypatch.setattr(run_source, "stream", stream)
    return CliRunner().invoke(run_cli.main, ["--bundle", str(link), "--video", str(video), "--headless", "--watch",
                                             "--watch-interval", "0.1", "--jsonl", str(events)])


def _read(events):
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines[0]["event"] == "start"  # each run's lines start with one
    return [e for e in lines if "event" not in e], [e for e in lines if e.get("event") not in (None, "start")]


def test_new_task_published_mid_stream_is_swapped_in_with_no_gap(bundles, tmp_path, monkeypatch):
    root, video = bundles
    link = publish(root / "bundles" / "task1", tmp_path / "current")
    assert os.readlink(link) == os.path.relpath(root / "bundles" / "task1", tmp_path)  # relative symlink
    events = tmp_path / "ev.jsonl"
    res = _stream_publishing(monkeypatch, link, root / "bundles" / "task2", video, events)
    assert res.exit_code == 0, res.output
    predictions, swaps = _read(events)
    assert [e["frame"] for e in predictions] == list(range(7, 32))  # one per step, no gap
    assert len(swaps) == 1 and swaps[0]["event"] == "swap" and swaps[0]["experts"] == 3
    assert swaps[0]["frame"] == SWITCH_AT + 1 and swaps[0]["bundle"].endswith("task2")
    for e in predictions:
        assert len(e["routing"]) == (2 if e["frame"] <= SWITCH_AT else 3), e["frame"]
    # From the swap on, the scores are those of the new bundle from the start: the window
    # was re-encoded with its backbone, not carried over from the old one.
    alone = tmp_path / "alone.jsonl"
    monkeypatch.undo()  # the plain stream, no publishing
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(root / "bundles" / "task2"), "--video", str(video),
                                            "--headless", "--jsonl", str(alone)])
    assert res.exit_code == 0, res.output
    expected = {e["frame"]: e for e in _read(alone)[0]}
    for e in predictions[SWITCH_AT + 1 - 7:]:
        assert e["top"][0][0] == expected[e["frame"]]["top"][0][0]
        assert e["top"][0][1] == pytest.approx(expected[e["frame"]]["top"][0][1], abs=1e-5)


def _corrupt_copy(src, dst):
    """A bundle whose fused experts file (what the runtime serves) is garbage but whose manifest
    hash was updated to match: it passes the hash check, so only loading it can catch it."""
    shutil.copytree(src, dst)
    (dst / "experts.onnx").write_bytes(b"not an onnx model" * 100)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"]["experts.onnx"] = sha256_file(dst / "experts.onnx")
    (dst / "manifest.json").write_text(json.dumps(seal_manifest(manifest)))  # every hash updated
    return dst


@pytest.mark.parametrize("damage", ["corrupt onnx", "missing manifest"])
def test_bad_bundle_is_refused_and_the_stream_goes_on(bundles, tmp_path, monkeypatch, caplog, damage):
    root, video = bundles
    link = publish(root / "bundles" / "task1", tmp_path / "current")
    bad = tmp_path / "bad"
    if damage == "corrupt onnx":
        _corrupt_copy(root / "bundles" / "task2", bad)
        publish_with = publish  # its hashes match, so publish() takes it
    else:
        bad.mkdir()  # e.g. a link switched by hand to a folder still being copied

        def publish_with(bundle, link):
            os.symlink(bundle, f"{link}.tmp")
            os.replace(f"{link}.tmp", link)
    events = tmp_path / "ev.jsonl"
    watch_log = logging.getLogger("stpr.runtime.engine.watch")  # directly: other tests may stop "stpr" propagating
    watch_log.addHandler(caplog.handler)
    try:
        res = _stream_publishing(monkeypatch, link, bad, video, events, publish_with)
    finally:
        watch_log.removeHandler(caplog.handler)
    assert res.exit_code == 0, res.output
    predictions, notes = _read(events)
    assert [e["frame"] for e in predictions] == list(range(7, 32))  # the old bundle kept serving
    assert all(len(e["routing"]) == 2 for e in predictions)
    assert len(notes) == 1 and notes[0]["event"] == "refused" and notes[0]["bundle"] == str(bad)
    assert notes[0]["reason"] and notes[0]["serving"].endswith("task1")
    assert f"refused bundle {bad}" in caplog.text  # the reason is logged too


def test_export_publish_switches_the_link(bundles, tmp_path):
    root, _ = bundles
    link = tmp_path / "current"
    res = CliRunner().invoke(export_main, [str(root / "run"), "--out", str(tmp_path / "t0"), "--task", "0",
                                           "--publish", str(link)])
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and (link / "manifest.json").is_file() and os.readlink(link) == "t0"
    publish(root / "bundles" / "task2", link)  # re-publish: the link moves, nothing is left beside it
    assert link.resolve() == (root / "bundles" / "task2").resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "t0"]
    (tmp_path / "plain").mkdir()
    bad = CliRunner().invoke(export_main, [str(root / "run"), "--out", str(tmp_path / "t1"), "--task", "0",
                                           "--publish", str(tmp_path / "plain")])
    assert bad.exit_code != 0 and "is not a symlink" in bad.output and not (tmp_path / "t1").exists()
