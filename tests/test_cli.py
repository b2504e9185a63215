"""`stpr-train` from the command line: the table, the log, and clear errors."""
import pytest
from click.testing import CliRunner
from helpers import FAST, fast_config, start_run_dir

from stpr.train import run as R
from stpr.train.cli import main
from stpr.train.data import registry
from stpr.train.errors import StprError

FAST_ARGS = [a for k, v in FAST.items() if k != "device" for a in ("--set", f"{k}={v}")] + \
    ["--device", "cpu", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_run_prints_table_and_writes_log(tmp_path):
    out = tmp_path / "run"
    res = invoke("--out", str(out), *FAST_ARGS)
    assert res.exit_code == 0, res.output
    assert "Accuracy matrix" in res.output and "Acc (class-weighted)" in res.output and "BWF" in res.output
    assert f"Run directory: {out}" in res.output
    log = (out / "train.log").read_text()
    assert "task 2 done" in log
    again = invoke("--out", str(out), "--resume", "--quiet")
    assert again.exit_code == 0 and "Acc (class-weighted)" in again.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus"], "No such option '--bogus'"),
        (["--set", "optim.lrr=1"], "unknown config key 'optim.lrr'; valid keys:"),
        (["--protocol", "51+10x5"], "needs 101 classes but 'synthetic' has 20"),
        (["--dataset", "ucf999"], "unknown dataset 'ucf999'; valid: synthetic, ucf101, hmdb51, kinetics400, folder"),
        (["--epochs", "0"], "--epochs '0'"),
        (["--device", "cuda:7"], "no CUDA GPU is visible") if not __import__("torch").cuda.is_available()
        else (["--device", "tpu"], "not a device"),
        (["--resume"], "holds no run (no config.yaml); start it without --resume"),
        (["--model", "ViT-Q-99"], "unknown model 'ViT-Q-99'"),
        (["--dataset", "ucf101"], "--dataset ucf101 needs --data-root"),
        (["--split", "4"], "4 is not in the range 1<=x<=3"),
        (["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),  # a usage error, as --epochs 0
        (["--set", "optim.batch_size=0"], "optim.batch_size=0 (must be >= 1)"),
        (["--set", "optim.lr=-1"], "optim.lr=-1.0 (must be > 0)"),
        (["--set", "data.num_frames=0"], "data.num_frames=0 (must be >= 1)"),
        (["--set", "method.tau=0"], "method.tau=0.0 (must be > 0)"),
        (["--set", "optim.lr=.nan"], "optim.lr=nan (must be > 0)"),
        (["--set", "data.holdout=1"], "data.holdout=1.0 (must be > 0 and < 1)"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["--out", str(out), "--quiet", *args])
    assert res.exit_code != 0
    assert message in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists()  # nothing written for a run that never started


def test_resume_needs_out():
    res = CliRunner().invoke(main, ["--resume"])
    assert res.exit_code != 0 and "--resume needs --out DIR" in res.output


def test_resume_refuses_new_settings(tmp_path):
    out = tmp_path / "run"
    start_run_dir(out, fast_config())
    res = CliRunner().invoke(main, ["--out", str(out), "--resume", "--set", "optim.lr=1"])
    assert res.exit_code != 0 and "continues the saved config" in res.output


def test_openai_weights_offline_say_how_to_pass_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(main, ["--out", str(tmp_path / "r"), "--config", "paper", "--quiet", "--device", "cpu"])
    assert res.exit_code != 0
    assert "could not get OpenAI weights" in res.output and "--pretrained /path/to/ViT-B-16.pt" in res.output


def test_empty_class_is_refused_with_its_name(monkeypatch, tmp_path):
    real = registry.DATASETS["synthetic"]

    def without_class_3(cfg, pp, seed):
        splits = real(cfg, pp, seed)
        splits.train.targets = [t for t in splits.train.targets if t != 3]  # class 3 loses all its videos
        return splits

    monkeypatch.setitem(registry.DATASETS, "synthetic", without_class_3)
    with pytest.raises(StprError, match="'circle_moving_up' have no training videos"):
        R.run(fast_config(), tmp_path / "run")


def test_out_into_a_folder_of_other_files_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    res = CliRunner().invoke(main, ["--out", str(out), *FAST_ARGS])
    assert res.exit_code != 0 and "is not empty (notes.txt) and holds no run" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written beside it


@pytest.mark.parametrize("command, blocked, extra", [
    ("stpr.train.cli", "torch", "train"),
    ("stpr.export.cli", "onnx", "export"),
])
def test_missing_extra_is_one_line_naming_it(tmp_path, command, blocked, extra):
    import subprocess
    import sys

    code = (f"import sys; sys.modules[{blocked!r}] = None\n"  # as on an install without the extra
            f"from {command} import main\n"
            f"main([{str(tmp_path / 'run')!r}, '--out', {str(tmp_path / 'b')!r}] if 'export' in {command!r} "
            f"else ['--out', {str(tmp_path / 'run')!r}, '--head', 'none'])\n")  # the head alone needs no torch
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"needs the [{extra}] install extra (Python module {blocked!r} is missing)" in res.stderr
    assert f"pip install 'stpr[{extra}]'" in res.stderr and len(res.stderr.strip().splitlines()) == 1
