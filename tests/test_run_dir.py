"""The run directory: contents, checkpoints, resume, kills during a save."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import fast_config, start_run_dir

from stpr.train import run as R
from stpr.train.checkpoint import checkpoint_path, finished_tasks, load_checkpoint
from stpr.train.errors import StprError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted fast run, shared by the tests that compare against it."""
    out = tmp_path_factory.mktemp("ref") / "run"
    metrics = R.run(fast_config(), out)
    return out, metrics


def test_run_directory_contents(reference):
    out, metrics = reference
    assert (out / "config.yaml").is_file()
    assert finished_tasks(out) == [0, 1, 2]
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy_matrix", "acc", "acc_pooled", "bwf", "classes", "tasks"):
        assert key in saved
    assert saved == json.loads(json.dumps(metrics))
    assert len(saved["accuracy_matrix"]) == 3 and saved["accuracy_matrix"][0][1] is None
    assert len(saved["classes"]) == 12 and [len(t) for t in saved["tasks"]] == [4, 4, 4]
    assert len(saved["routing_weights"]) == 3 and len(saved["routing_weights"][0]) == 3
    for name in ("accuracy_over_tasks", "accuracy_matrix", "routing_weights"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.rglob(".tmp-*")]


def test_checkpoint_holds_no_frozen_clip_and_round_trips(reference):
    out, metrics = reference
    ckpt = load_checkpoint(checkpoint_path(out, 2))
    names = set(ckpt["learner"]["adapters"]) | {k for e in ckpt["learner"]["experts"] for k in e}
    assert not any("visual" in n or "conv1" in n for n in names)
    assert ckpt["classes"] == metrics["classes"] and ckpt["task"] == 2
    # A fresh learner loaded from it scores the test set exactly as the run did.
    s = R.build(fast_config())
    s.learner.load_state_dict(ckpt["learner"])
    res = s.learner.evaluate([R._loader(s, s.splits.test, j, train=False) for j in range(3)])
    assert res.correct == metrics["correct"][-1]


def test_resume_after_stop_between_tasks_matches_uninterrupted(reference, tmp_path):
    _, ref_metrics = reference
    out = tmp_path / "run"

    def stop_in_task_2(it, desc, total):
        if desc.startswith("task 3/3"):
            raise KeyboardInterrupt
        return it

    with pytest.raises(KeyboardInterrupt):
        R.run(fast_config(), out, progress=stop_in_task_2)
    assert finished_tasks(out) == [0, 1]
    assert len(json.loads((out / "metrics.json").read_text())["accuracy_matrix"]) == 2
    metrics = R.run(None, out, resume=True)
    assert metrics["accuracy_matrix"] == ref_metrics["accuracy_matrix"]
    assert metrics["correct"] == ref_metrics["correct"]


KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, pathlib, signal, sys
    from stpr.train import run as R
    sys.path.insert(0, {tests!r})
    from helpers import fast_config
    real_write = pathlib.Path.write_bytes
    def dying_write(self, data):  # checkpoints are serialised in memory, then written to a temp file
        if self.name.startswith(".tmp-task_001.pt"):  # the second checkpoint: write half of it, then die
            real_write(self, bytes(data)[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(self, data)
    pathlib.Path.write_bytes = dying_write
    R.run(fast_config(), {out!r})
    """
)


def test_kill_during_save_keeps_previous_checkpoint_and_resumes(reference, tmp_path):
    _, ref_metrics = reference
    out = tmp_path / "run"
    code = KILL_DURING_SAVE.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert finished_tasks(out) == [0]  # the half-written task 1 never took the real name
    assert load_checkpoint(checkpoint_path(out, 0))["task"] == 0
    metrics = R.run(None, out, resume=True)
    assert metrics["accuracy_matrix"] == ref_metrics["accuracy_matrix"]


def test_corrupt_checkpoint_is_a_clear_error(reference, tmp_path):
    out, _ = reference
    bad = tmp_path / "task_000.pt"
    bad.write_bytes(checkpoint_path(out, 0).read_bytes()[:1000])
    with pytest.raises(StprError, match="unreadable.*delete it to resume from the task before"):
        load_checkpoint(bad)
    other = tmp_path / "not_ours.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(StprError, match="not an stpr checkpoint"):
        load_checkpoint(other)


def test_checkpoint_from_another_model_is_refused(reference, tmp_path):
    out, _ = reference
    run = tmp_path / "run"
    start_run_dir(run, fast_config(**{"model.pretrained": "none"}))  # random CLIP weights, not the packaged ones
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "task_000.pt").write_bytes(checkpoint_path(out, 0).read_bytes())
    with pytest.raises(StprError, match="trained on other stpr-tiny weights"):
        R.run(None, run, resume=True)
    from stpr.train.checkpoint import check_same_model

    ckpt = load_checkpoint(checkpoint_path(out, 0))
    with pytest.raises(StprError, match="trained on model 'stpr-tiny', not 'ViT-B-16'"):
        check_same_model(ckpt, "ViT-B-16", ckpt["backbone_fingerprint"], Path("x.pt"))


def test_existing_run_is_not_overwritten(reference):
    out, _ = reference
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(StprError, match="already holds a run; pass --resume"):
        R.run(fast_config(), out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resume_of_a_finished_run_recomputes_nothing(reference):
    out, ref_metrics = reference
    assert R.run(None, out, resume=True)["accuracy_matrix"] == ref_metrics["accuracy_matrix"]
