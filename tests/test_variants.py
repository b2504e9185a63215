"""Every routing and distillation variant runs through the learner (paper Tables 4-5)."""
import pytest
import torch
from helpers import fast_config

from stpr.train import run as R


@pytest.fixture(scope="module")
def two_tasks():
    s = R.build(fast_config())
    for k in (0, 1):
        R.train_task(s, k)
    return s


@pytest.mark.parametrize("routing", ["td", "avg", "clip", "adapter", "oracle"])
def test_every_routing_mode_evaluates(two_tasks, routing):
    s = two_tasks
    s.learner.cfg.method.routing = routing
    try:
        res = s.learner.evaluate([R._loader(s, s.splits.test, j, train=False) for j in range(2)])
    finally:
        s.learner.cfg.method.routing = "td"
    assert res.total == [16, 16]
    for row in res.routing:
        assert sum(row) == pytest.approx(1.0, abs=1e-5)
    if routing == "oracle":  # all weight on the true task's expert
        assert res.routing == [[1.0, 0.0], [0.0, 1.0]]
    if routing == "avg":
        assert res.routing == [[0.5, 0.5], [0.5, 0.5]]


@pytest.mark.parametrize("distill", ["fssd", "uniform", "none"])
def test_distillation_variants(distill):
    s = R.build(fast_config(**{"method.distill": distill}))
    R.train_task(s, 0)
    learner = s.learner
    learner.begin_task(1, [s.splits.classes[c] for c in s.tasks[1]], steps=1)
    frames, labels = next(iter(R._loader(s, s.splits.train, 1, train=True)))
    learner.model.eval()  # no adapter dropout: teacher and student see the same tower
    losses = learner.losses(frames, labels)
    assert ("fssd" in losses) == (distill != "none")
    weight = learner.distill_weight()
    if distill == "uniform":
        assert torch.equal(weight, torch.ones_like(weight))
    if distill == "fssd":  # per-class importance, normalised to mean 1, then averaged
        assert weight.mean().item() == pytest.approx(1.0, abs=1e-4) and weight.std() > 0
    if distill != "none":  # the teacher starts equal to the student: no drift yet
        assert losses["fssd"].item() < 1e-10


def test_batch_text_candidates_rank_only_present_classes():
    s = R.build(fast_config(**{"method.text_candidates": "batch"}))
    s.learner.begin_task(0, [s.splits.classes[c] for c in s.tasks[0]], steps=1)
    labels = torch.tensor([2, 2, 3])
    text, targets = s.learner._text_candidates(labels)
    assert text.shape[0] == 2 and targets.tolist() == [0, 0, 1]
