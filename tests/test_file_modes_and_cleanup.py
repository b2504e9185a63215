"""What stpr writes is readable as the umask allows (a service account must read a bundle),
and an interrupted export leaves no hidden temp folder behind for good."""
import os
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from stpr.export import export_run
from stpr.export.cli import main as export_main
from stpr.runtime.atomic import atomic_write_text


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def current_umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_run_folder_and_bundle_follow_the_umask(demo):
    root, run, bundle, _ = demo  # written under the test process's umask
    u = current_umask()
    for f in [run / "config.yaml", run / "metrics.json", run / "checkpoints" / "task_000.pt",
              run / "plots" / "accuracy_matrix.png", bundle / "manifest.json", bundle / "backbone.onnx",
              bundle / "anchors.npy", bundle / "parity.json"]:
        assert mode(f) == 0o666 & ~u, f
    for d in (bundle, run / "checkpoints"):
        assert mode(d) == 0o777 & ~u, d


def test_a_group_readable_umask_gives_a_group_readable_bundle(demo, tmp_path):
    old = os.umask(0o027)
    try:
        res = export_run(demo[1], tmp_path / "b", task=0)
        atomic_write_text(tmp_path / "note.txt", "x")
    finally:
        os.umask(old)
    assert mode(res.bundle) == 0o750
    assert {mode(p) for p in res.bundle.iterdir()} == {0o640}
    assert mode(tmp_path / "note.txt") == 0o640


def test_temp_folders_of_a_killed_export_are_removed_by_the_next(demo, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    stale = tmp_path / f".tmp-b-{dead}-1a2b3c4d"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "backbone.onnx").write_bytes(b"x" * 1000)
    running = tmp_path / f".tmp-b-{os.getppid()}-5e6f7a8b"  # an export still in progress: kept
    running.mkdir()
    export_run(demo[1], tmp_path / "b", task=0)
    assert not stale.exists() and running.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "b"]


@pytest.mark.parametrize("count", ["0", "-3"])
def test_parity_clips_below_one_is_refused(demo, tmp_path, count):
    res = CliRunner().invoke(export_main, [str(demo[1]), "--out", str(tmp_path / "b"), "--parity-clips", count])
    assert res.exit_code == 2 and f"'--parity-clips': {count} is not in the range x>=1" in res.output
    assert not (tmp_path / "b").exists() and "Traceback" not in res.output


def test_sigterm_during_export_removes_its_work_folder(demo, tmp_path, monkeypatch):
    from stpr.export import bundle as bundle_mod
    from stpr.runtime.io.signals import Terminated

    def killed(*a, **k):  # the service manager's SIGTERM arrives while arrays are written
        raise Terminated()

    monkeypatch.setattr(bundle_mod, "write_arrays", killed)
    res = CliRunner().invoke(export_main, [str(demo[1]), "--out", str(tmp_path / "b"), "--task", "0"])
    assert res.exit_code == 143 and "terminated: no bundle was written" in res.output
    assert list(tmp_path.iterdir()) == []  # no bundle, no hidden .tmp-b-* folder
