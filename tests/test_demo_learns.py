"""The demo learns each task, keeps what it learned, and its temporal-only pairs need the experts.

One shortened run of the demo (three tasks instead of five, the demo's own settings
otherwise), shared by the tests below.
"""
import pytest
import torch

from stpr.train import run as R
from stpr.train.config import routing_tau
from stpr.train.config_load import load_config

pytestmark = pytest.mark.slow


def _pair_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy when choosing only between a class and its time-reversed twin.

    Demo classes come in (right, left), (down, up) pairs: global ids 2i and 2i + 1.
    """
    pair = labels // 2 * 2
    two = torch.stack([logits.gather(1, pair[:, None]), logits.gather(1, pair[:, None] + 1)], 1).squeeze(-1)
    return float(((two.argmax(1) + pair) == labels).float().mean())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cfg = load_config("demo", {"device": "cpu", "data.protocol": "4+4x2", "head.mode": "none"})  # StPR's demo
    out = tmp_path_factory.mktemp("demo") / "run"
    metrics = R.run(cfg, out)
    return cfg, out, metrics


def test_every_task_is_learned(demo):
    _, _, metrics = demo
    A = metrics["accuracy_matrix"]
    for j in range(len(A)):
        assert A[j][j] >= 85.0, f"task {j} scored {A[j][j]:.1f} % right after it was learned (chance 25 %)"


def test_old_tasks_keep_their_accuracy(demo):
    """Retention: after the last task every old task keeps 85 % of what it had."""
    _, _, metrics = demo
    A = metrics["accuracy_matrix"]
    last = A[-1]
    for j in range(len(A) - 1):
        assert last[j] >= 0.85 * A[j][j], f"task {j}: {A[j][j]:.1f} % when learned, {last[j]:.1f} % at the end"
    assert metrics["bwf"] <= 10.0
    assert metrics["task_id_accuracy"] >= 80.0  # the router finds the task; chance is 33 %
    assert metrics["drift"] is not None and metrics["drift"] < 15.0  # FSSD holds old features near


def test_temporal_pairs_need_the_experts(demo):
    cfg, out, _ = demo
    s = R.build(cfg)
    from stpr.train.checkpoint import checkpoint_path, load_checkpoint

    s.learner.load_state_dict(load_checkpoint(checkpoint_path(out, 2))["learner"])
    model = s.learner.model.eval()
    logits, spatial, labels = [], [], []
    with torch.no_grad():
        for j in range(3):
            for frames, y in R._loader(s, s.splits.test, j, train=False):
                o = model(frames, routing=cfg.method.routing, tau=routing_tau(cfg.method))
                logits.append(o["logits"]), spatial.append(o["spatial_logits"]), labels.append(y)
    logits, spatial, labels = torch.cat(logits), torch.cat(spatial), torch.cat(labels)
    full, frame_mean = _pair_accuracy(logits, labels), _pair_accuracy(spatial, labels)
    # Time-reversed twins have the same frames, so the frame mean is at chance (0.5) on them.
    assert frame_mean <= 0.7, frame_mean
    assert full >= 0.85 and full - frame_mean >= 0.25, (full, frame_mean)
