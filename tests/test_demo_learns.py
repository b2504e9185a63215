"""The demo protocol learns, and its temporal-only pairs need the experts."""
import torch

from stpr.train import run as R
from stpr.train.config import load_config


def _pair_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy when choosing only between a class and its time-reversed twin.

    Demo classes come in (right, left), (down, up) pairs: global ids 2i and 2i + 1.
    """
    pair = labels // 2 * 2
    two = torch.stack([logits.gather(1, pair[:, None]), logits.gather(1, pair[:, None] + 1)], 1).squeeze(-1)
    return float(((two.argmax(1) + pair) == labels).float().mean())


def test_task0_far_above_chance_and_temporal_pairs_beat_frame_mean():
    cfg = load_config("demo", {"device": "cpu"})
    s = R.build(cfg)
    result = R.train_task(s, 0)
    acc = result.correct[0] / result.total[0]
    assert acc >= 0.75, f"task 0 accuracy {acc:.2f} (chance 0.25)"  # 4 classes: chance is 0.25
    model = s.learner.model.eval()
    logits, spatial, labels = [], [], []
    with torch.no_grad():
        for frames, y in R._loader(s, s.splits.test, 0, train=False):
            out = model(frames, routing=cfg.method.routing, tau=cfg.method.tau)
            logits.append(out["logits"]), spatial.append(out["spatial_logits"]), labels.append(y)
    logits, spatial, labels = torch.cat(logits), torch.cat(spatial), torch.cat(labels)
    full, frame_mean = _pair_accuracy(logits, labels), _pair_accuracy(spatial, labels)
    # Time-reversed twins have the same frames, so the frame mean is at chance (0.5) on them.
    assert frame_mean <= 0.7, frame_mean
    assert full >= 0.85 and full - frame_mean >= 0.25, (full, frame_mean)
