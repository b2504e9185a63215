"""stpr-train and stpr-export on a full disk end with one line and exit 4, leaving no temp
file; two exports to one --out never both "succeed"; --quiet changes only the display;
and the four commands share one exit-code convention."""
import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from helpers import FAST

from stpr.export.cli import main as export_main
from stpr.runtime.cli.classes_cli import main as classes_main
from stpr.runtime.cli.run_cli import main as run_main
from stpr.runtime.exits import EXIT_ERROR, EXIT_USAGE, EXIT_WRITE
from stpr.train.cli import main as train_main

FAST_ARGS = [a for k, v in FAST.items() if k != "device" for a in ("--set", f"{k}={v}")] + ["--device", "cpu"]


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def test_stpr_train_on_a_full_disk_is_one_line_and_leaves_no_temp_file(small_disk):
    out = small_disk.path / "run"
    res = small_disk.run([sys.executable, "-m", "stpr.train.cli", "--out", str(out), "--quiet", *FAST_ARGS])
    assert res.returncode == EXIT_WRITE, res.stderr[-3000:]
    line = one_error_line(res.stderr)
    assert "cannot write" in line and str(out) in line and small_disk.errno_text in line
    assert not [n for n in small_disk.leftovers() if ".tmp-" in n]


def test_stpr_export_on_a_full_disk_is_one_line_and_leaves_nothing(demo, small_disk):
    out = small_disk.path / "b"
    res = small_disk.run([sys.executable, "-m", "stpr.export.cli", str(demo[1]), "--out", str(out), "--task", "0"])
    assert res.returncode == EXIT_WRITE, res.stderr[-3000:]
    line = one_error_line(res.stderr)
    assert f"cannot write the bundle {str(out)!r}" in line and "no bundle written" in line
    assert small_disk.leftovers() == []  # no bundle, no work folder, no lock file


def test_two_exports_to_one_out_write_one_bundle_and_the_other_fails(demo, tmp_path):
    out = tmp_path / "b"
    first = subprocess.Popen([sys.executable, "-m", "stpr.export.cli", str(demo[1]), "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".b.lock"
    deadline = time.monotonic() + 60
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lock.exists(), "the first export never took the lock"
    second = CliRunner().invoke(export_main, [str(demo[1]), "--out", str(out), "--force"])
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    assert second.exit_code == EXIT_ERROR and "another stpr-export is writing --out" in second.output
    assert len(second.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # one bundle, no temp folder, no lock
    assert json.loads((out / "manifest.json").read_text())["files"]


def test_quiet_changes_no_number(tmp_path):
    # tqdm.auto's bar drew one more DataLoader iterator per epoch, and so a torch seed.
    for name, quiet in (("quiet", ["--quiet"]), ("bars", [])):
        res = CliRunner().invoke(train_main, ["--out", str(tmp_path / name), *FAST_ARGS, *quiet])
        assert res.exit_code == 0, res.output
    assert (tmp_path / "quiet" / "metrics.json").read_text() == (tmp_path / "bars" / "metrics.json").read_text()


def test_export_of_a_folder_that_is_not_a_run_says_so(tmp_path):
    (tmp_path / "notarun").mkdir()
    res = CliRunner().invoke(export_main, [str(tmp_path / "notarun"), "--out", str(tmp_path / "b")])
    assert res.exit_code == EXIT_ERROR and "is not a run directory (no config.yaml)" in res.output
    assert "--resume" not in res.output


@pytest.mark.parametrize("main, args", [
    (train_main, ["--epochs", "0"]),
    (train_main, ["--resume"]),
    (export_main, ["run", "--out", "b", "--parity-clips", "0"]),
    (export_main, ["run", "--out", "b", "--engine"]),
    (run_main, ["--bundle", "b", "--camera", "0", "--stride", "0"]),
    (classes_main, ["add"]),
])
def test_a_bad_command_line_exits_2_in_every_command(tmp_path, monkeypatch, main, args):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == EXIT_USAGE, res.output


@pytest.mark.parametrize("main, args", [(train_main, []), (export_main, []), (run_main, []),
                                        (classes_main, []), (classes_main, ["add"])])
def test_every_help_documents_the_same_exit_codes(main, args):
    flat = " ".join(CliRunner().invoke(main, [*args, "--help"]).output.split())
    assert "Exit codes (the same in stpr-train, stpr-export, stpr-run and stpr-classes)" in flat
    for code in ("0 ", "1 ", "2 bad command line", "4 ", "130 Ctrl-C", "143 SIGTERM"):
        assert f" {code}" in flat, code
