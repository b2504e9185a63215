"""Real-format data end to end, and DDP with 2 processes against 1 (CPU, gloo)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import train_one_and_two_processes

from stpr.train.cli import main as train_main

# 101 UCF-like class names, alphabetical like the real list (ApplyEyeMakeup ... YoYo).
UCF_CLASSES = sorted(f"Action{chr(65 + i // 26)}{chr(97 + i % 26)}Move" for i in range(101))


def _video(path: Path, rng: np.random.Generator, frames: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 8, (40, 32))  # not square: resize + crop
    for _ in range(frames):
        out.write(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8))
    out.release()


def make_ucf101(root: Path) -> Path:
    """UCF-101/<Class>/v_<Class>_gXX_cYY.avi and ucfTrainTestlist/ for split 1."""
    rng = np.random.default_rng(0)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(UCF_CLASSES)))
    train, test = [], []
    for i, c in enumerate(UCF_CLASSES):
        for g, target in ((8, train), (1, test)):
            rel = f"{c}/v_{c}_g{g:02d}_c01.avi"
            _video(root / "UCF-101" / rel, rng)
            target.append(f"{rel} {i + 1}\n" if target is train else f"{rel}\n")
    (lists / "trainlist01.txt").write_text("".join(train))
    (lists / "testlist01.txt").write_text("".join(test))
    return root


def test_ucf101_protocol_end_to_end(tmp_path):
    root = make_ucf101(tmp_path / "ucf")
    out = tmp_path / "run"
    res = CliRunner().invoke(train_main, [
        "--dataset", "ucf101", "--data-root", str(root), "--protocol", "51+10x5", "--config", "demo",
        "--model", "stpr-tiny",
        "--pretrained", "none", "--epochs", "1", "--batch-size", "16", "--seed", "1000", "--device", "cpu",
        "--out", str(out), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [len(t) for t in metrics["tasks"]] == [51, 10, 10, 10, 10, 10]
    # TCD order: RandomState(1000).permutation(101) starts 37, 97, 56, ...
    assert metrics["tasks"][0][:3] == [UCF_CLASSES[37], UCF_CLASSES[97], UCF_CLASSES[56]]
    assert len(metrics["accuracy_matrix"]) == 6 and metrics["total"][-1] == [51, 10, 10, 10, 10, 10]


@pytest.mark.slow
def test_ddp_two_processes_agree_with_one(tmp_path):
    # Long enough that the model learns (task 0 well above chance), so agreement means something.
    args = ["--set", "data.protocol=4+4x1", "--set", "data.clips_per_class_train=16",
            "--set", "data.clips_per_class_test=8", "--epochs", "20", "--batch-size", "8",
            "--set", "model.adapter_dropout=0.0", "--device", "cpu", "--quiet"]
    train_one_and_two_processes(tmp_path, args)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["total"] == m2["total"]  # evaluation shards add up to the whole test set
    a1 = np.array([[np.nan if v is None else v for v in r] for r in m1["accuracy_matrix"]])
    a2 = np.array([[np.nan if v is None else v for v in r] for r in m2["accuracy_matrix"]])
    # Same global batches and a gathered global-batch loss: only float summation order
    # differs, so at most one test clip (1/32 = 3.125 points) may flip.
    assert np.nanmax(np.abs(a1 - a2)) <= 3.125, (m1["accuracy_matrix"], m2["accuracy_matrix"])
    assert a1[0, 0] > 25.0  # the model learned: chance on task 0 is 25 %
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["task_000.pt", "task_001.pt"]
