"""One class overlay per bundle folder, whatever the path's spelling (a published link, `.`,
relative, absolute): `stpr-classes` and `stpr-run`, with or without --watch, all meet the
same file; a publish or a re-export never makes the next start fail; and stpr-classes
commands run at once on one overlay keep every name."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import damaged, write_video

from stpr.runtime.bundle.publish import publish
from stpr.runtime.cli import classes_cli

NAME = "star spinning"


@pytest.fixture
def published(demo, tmp_path, monkeypatch):
    """tmp/bundles/task3 (a copy of the demo bundle), task4 (another bundle: another
    manifest) and the link bundles/current -> task3; the working folder is tmp."""
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    damaged(demo[2], bundles / "task3", lambda m, d: None)
    damaged(demo[2], bundles / "task4", lambda m, d: m.update(created="the next export"))
    publish(bundles / "task3", bundles / "current")
    monkeypatch.chdir(tmp_path)
    return bundles


def classes(*args: str):
    res = CliRunner().invoke(classes_cli.main, list(args))
    assert res.exit_code == 0, res.output
    return res


def run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stpr.runtime.cli.run_cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_every_spelling_of_a_bundle_meets_one_overlay(published, tmp_path, monkeypatch):
    res = classes("add", "bundles/current", NAME)
    overlay = published / "task3.classes.json"
    assert f"to {str(overlay)!r}" in res.output and "where 'bundles/current' leads now" in res.output
    assert not (published / "current.classes.json").exists()
    spellings = ["bundles/current", "bundles/task3", str(published / "current"), str(published / "task3"),
                 "bundles/../bundles/task3/"]
    for spelling in spellings:
        listed = json.loads(classes("list", spelling).output)
        assert listed["zero_shot"] == [NAME] and listed["overlay"] == str(overlay), spelling
    monkeypatch.chdir(published / "task3")
    res = classes("add", ".", "moon")  # written beside the bundle, not inside it
    assert not Path(".classes.json").exists()
    assert json.loads(overlay.read_text())["classes"] == [NAME, "moon"]
    monkeypatch.chdir(tmp_path)
    assert json.loads(classes("list", "bundles/current").output)["zero_shot"] == [NAME, "moon"]


def test_watch_loads_the_classes_a_plain_run_loads_and_a_publish_never_blocks_a_restart(published, demo, tmp_path):
    classes("add", "bundles/current", NAME)
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0)])
    overlay = str(published / "task3.classes.json")
    common = ["--bundle", "bundles/current", "--video", video, "--headless", "--max-frames", "8"]
    plain, watched = run(*common, cwd=tmp_path), run(*common, "--watch", cwd=tmp_path)
    for res in (plain, watched):
        assert res.returncode == 0 and f"+ 1 zero-shot from {overlay!r}" in res.stderr, res.stderr[-2000:]
    publish(published / "task4", published / "current")  # the next task's bundle
    res = run(*common, cwd=tmp_path)
    assert res.returncode == 0 and "zero-shot" not in res.stderr, res.stderr[-2000:]  # task4 has none of its own
    res = run(*common, "--classes", overlay, cwd=tmp_path)  # a supervisor's command line naming the old overlay
    assert res.returncode == 0, res.stderr[-2000:]
    warnings = [line for line in res.stderr.splitlines() if "written for another bundle" in line]
    assert len(warnings) == 1 and "skipped" in warnings[0] and "zero-shot" not in res.stderr


def test_a_bundle_re_exported_in_place_starts_and_says_its_overlay_is_stale(published, demo, tmp_path):
    classes("add", "bundles/task3", NAME)
    os.rename(published / "task3", published / "old")
    os.rename(published / "task4", published / "task3")  # what stpr-export --force does: another manifest there
    video = write_video(tmp_path / "v.avi", [demo[3].raw_clip(0)])
    res = run("--bundle", "bundles/current", "--video", video, "--headless", "--max-frames", "8", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sum("written for another bundle" in line for line in res.stderr.splitlines()) == 1
    res = CliRunner().invoke(classes_cli.main, ["add", "bundles/task3", "moon"])  # never overwritten unasked
    assert res.exit_code == 1 and "delete it to start this bundle's overlay afresh" in res.output
    assert json.loads((published / "task3.classes.json").read_text())["classes"] == [NAME]


_ADD = "import sys\nfrom stpr.runtime.cli.classes_cli import main\nmain(sys.argv[1:])\n"


def test_parallel_adds_keep_every_name(published):
    names = ["ring spinning", "star growing", "moon moving up", "sun moving down"]
    procs = [subprocess.Popen([sys.executable, "-c", _ADD, "add", "bundles/task3", n], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in names]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(names), outs
    kept = json.loads((published / "task3.classes.json").read_text())["classes"]
    assert sorted(kept) == sorted(names)
    procs = [subprocess.Popen([sys.executable, "-c", _ADD, "remove", "bundles/task3", n], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in names[:2]]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert sorted(json.loads((published / "task3.classes.json").read_text())["classes"]) == sorted(names[2:])
