"""Each refusal is one line with the exit code --help gives: a bad --seed or --opset, an
option's 0, an output into a read-only folder, an empty frame folder, Ctrl-C at any moment,
a disk full before the run wrote anything; train.log and metrics.json score the classifier
the run is scored by."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from helpers import FAST, SmallDisk

from stpr.export.cli import main as export_main
from stpr.export.onnx_export import max_opset
from stpr.runtime.cli.run_cli import main as run_main
from stpr.runtime.exits import EXIT_ERROR, EXIT_INTERRUPT, EXIT_USAGE, EXIT_WRITE
from stpr.train.cli import main as train_main

FAST_ARGS = [a for k, v in FAST.items() if k != "device" for a in ("--set", f"{k}={v}")] + ["--device", "cpu",
                                                                                             "--quiet"]


def _one_line(output: str) -> str:
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


@pytest.mark.parametrize("args, words", [
    (["--seed", "-1"], "'--seed': -1 is not in the range"),
    (["--set", "seed=-1"], "seed=-1 (must be an integer from 0 to 4294967295)"),
    (["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
    (["--epochs", "0"], "--epochs '0'"),
])
def test_a_bad_seed_or_a_zero_count_is_one_line_with_the_documented_code(tmp_path, args, words):
    res = CliRunner().invoke(train_main, ["--out", str(tmp_path / "run"), *args])
    assert words in _one_line(res.output)
    # an option's value is a usage error (2); a --set value is a bad config (1), as --help says
    assert res.exit_code == (EXIT_ERROR if args[0] == "--set" else EXIT_USAGE), res.output
    assert not (tmp_path / "run").exists()


def test_an_opset_newer_than_torch_writes_is_one_line(tmp_path):
    res = CliRunner().invoke(export_main, [str(tmp_path / "run"), "--out", str(tmp_path / "b"), "--opset", "99"])
    line = _one_line(res.output)
    assert res.exit_code == EXIT_USAGE and f"99 is newer than this torch exports; give 17 to {max_opset()}" in line


SIGINT_DURING_IMPORT = textwrap.dedent("""
    import builtins, os, signal, sys
    real = builtins.__import__

    def ctrl_c_at_torch(name, *args, **kwargs):  # Ctrl-C while the command imports torch
        if name == "torch" or name.startswith("torch."):
            builtins.__import__ = real
            os.kill(os.getpid(), signal.SIGINT)
        return real(name, *args, **kwargs)

    builtins.__import__ = ctrl_c_at_torch
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    __import__(module, fromlist=["main"]).main()
""")


@pytest.mark.parametrize("module", ["stpr.train.cli", "stpr.export.cli"])
def test_ctrl_c_while_the_command_starts_exits_130(tmp_path, module):
    args = [str(tmp_path / "run")] if module == "stpr.export.cli" else []
    res = subprocess.run([sys.executable, "-c", SIGINT_DURING_IMPORT, module, *args, "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == EXIT_INTERRUPT, res.stderr[-3000:]
    assert "Aborted!" not in res.stderr and "Traceback" not in res.stderr
    # stpr-train imports torch only once it knows the run needs it, after parsing: then the run's
    # own Ctrl-C line (nothing saved, nothing to resume) answers; stpr-export's comes while it starts
    assert "interrupted; nothing was written" in res.stderr or "interrupted; nothing was saved" in res.stderr
    assert len([line for line in res.stderr.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "o").exists()


@pytest.fixture
def read_only(tmp_path):
    """A read-only folder: a read-only tmpfs where mounting is allowed (root writes anywhere else)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
    if not os.path.ismount(ro):
        ro.chmod(0o555)
    yield ro
    subprocess.run(["umount", "-l", str(ro)], capture_output=True)
    ro.chmod(0o755)


@pytest.mark.parametrize("option, name", [("--jsonl", "ev.jsonl"), ("--output", "out.mp4")])
def test_an_output_into_a_read_only_folder_exits_with_the_write_code(tmp_path, read_only, option, name):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0.png").write_bytes(b"")
    target = read_only / name
    res = CliRunner().invoke(run_main, ["--bundle", str(tmp_path / "no-bundle"), "--frames", str(frames),
                                        "--headless", option, str(target)])
    line = _one_line(res.output)
    assert res.exit_code == EXIT_WRITE, res.output
    assert f"cannot write {option} {str(target)!r}" in line and "is not writable" in line


def test_an_empty_frame_folder_is_a_usage_error_before_the_bundle_loads(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    # the bundle does not exist: a check after loading it would report that instead
    res = CliRunner().invoke(run_main, ["--bundle", str(tmp_path / "no-bundle"), "--frames", str(frames),
                                        "--headless"])
    line = _one_line(res.output)
    assert res.exit_code == EXIT_USAGE and "--frames" in line and "holds no images" in line


def test_a_disk_full_before_the_run_wrote_anything_does_not_suggest_resume(tmp_path):
    disk = SmallDisk(tmp_path, free=0)
    try:
        out = disk.path / "run"
        res = disk.run([sys.executable, "-m", "stpr.train.cli", "--out", str(out), *FAST_ARGS])
    finally:
        disk.close()
    line = _one_line(res.stderr)
    assert res.returncode == EXIT_WRITE, res.stderr[-3000:]
    assert "--resume" not in res.stderr and "nothing was saved, so there is nothing to resume" in line


def test_the_log_and_metrics_of_a_head_alone_run_show_the_head(tmp_path):
    out = tmp_path / "run"
    args = [a for a in FAST_ARGS if a != "head.mode=none"]
    args = [a for i, a in enumerate(args) if not (a == "--set" and args[i + 1].startswith("--"))]
    res = CliRunner().invoke(train_main, ["--out", str(out), *args, "--head", "alone"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    last, total = m["correct"][-1], m["total"][-1]
    assert m["acc_pooled"] == pytest.approx(100 * sum(last) / sum(total))  # the counts give the scored Acc
    assert m["stpr"]["correct"] != m["correct"]  # StPR's own (untrained) counts are kept apart
    log = (out / "train.log").read_text()
    logged = [line for line in log.splitlines() if "task 2 done" in line]
    assert len(logged) == 1 and "(analytic head, mode alone)" in logged[0]
    assert str([round(100 * c / t, 2) for c, t in zip(last, total)]) in logged[0]

