"""Contrastive loss (Eqs. 13-15) and FSSD (Eqs. 3-7) against hand-worked values."""
import math

import pytest
import torch

from stpr.train.fssd import ClassFrameStats, FSSDWeights, channel_importance, fssd_loss
from stpr.train.losses import contrastive_loss

E = torch.eye(2)


def test_contrastive_two_orthogonal_pairs():
    # S = [[1, 0], [0, 1]] with scale 1; every row and column: -log(e / (e + 1)) = log(1 + 1/e).
    loss = contrastive_loss(E, E, torch.tensor([0, 1]), logit_scale=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_contrastive_ties_give_log_of_candidates():
    # Every similarity equal: v2t = log C = log 2; one text with 2 positives among 2 videos -> log 2.
    v = torch.ones(2, 2)
    t = torch.ones(2, 2)
    loss = contrastive_loss(v, t, torch.tensor([0, 0]), logit_scale=100.0)
    # v2t: -log(1/2); t2v: text 0 has both videos as positives: -(log 1/2 + log 1/2) / 2 = log 2.
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)


def test_contrastive_one_class_task():
    # One candidate text: v2t is log softmax over one column = 0; t2v over 3 equal videos = log 3.
    v = torch.tensor([[1.0, 0.0]] * 3)
    loss = contrastive_loss(v, torch.tensor([[1.0, 0.0]]), torch.tensor([0, 0, 0]), logit_scale=10.0)
    assert loss.item() == pytest.approx(math.log(3) / 2, abs=1e-5)


def test_contrastive_texts_without_positives_do_not_count_in_t2v():
    # Text 1 has no video in the batch; t2v is text 0's term only: one video -> log softmax over 1 = 0.
    v = torch.tensor([[1.0, 0.0]])
    loss = contrastive_loss(v, E, torch.tensor([0]), logit_scale=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)) / 2, abs=1e-6)


def test_class_frame_stats_mean_and_variance():
    stats = ClassFrameStats(num_classes=2, dim=2)
    stats.update(torch.tensor([[[1.0, 2.0], [3.0, 2.0]]]), torch.tensor([0]))  # class 0: 2 frames
    stats.update(torch.tensor([[[5.0, 5.0], [5.0, 5.0]]]), torch.tensor([1]))
    mean, var = stats.mean_var()
    assert mean.tolist() == [[2.0, 2.0], [5.0, 5.0]]
    assert var.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="no frames seen for class rows \\[2\\]"):
        _partial()


def _partial():
    s = ClassFrameStats(3, 2)
    s.update(torch.ones(1, 1, 2), torch.tensor([0]))
    s.update(torch.ones(1, 1, 2), torch.tensor([1]))
    s.mean_var()


def test_importance_hand_worked_and_running_mean():
    mean = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    var = torch.tensor([[1.0, 3.0], [0.25, 1.0]], dtype=torch.float64)
    text = torch.tensor([[1.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    omega = channel_importance(mean, var, text, eps=0.0)
    # class 0: [1/1, 2/3] / (5/6) = [1.2, 0.8]; class 1: [1/0.25, 0] / 2 = [2, 0]
    assert torch.allclose(omega, torch.tensor([[1.2, 0.8], [2.0, 0.0]], dtype=torch.float64))
    w = FSSDWeights(2)
    w.add(omega)
    assert torch.allclose(w.weight, torch.tensor([1.6, 0.4], dtype=torch.float64))
    w.add(torch.ones(1, 2))  # a later task of one class: (2 * [1.6, 0.4] + [1, 1]) / 3
    assert torch.allclose(w.weight, torch.tensor([1.4, 0.6], dtype=torch.float64)) and w.num_classes == 3


def test_importance_all_zero_row_is_uniform():
    omega = channel_importance(torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 3))
    assert torch.equal(omega, torch.ones(1, 3))


def test_fssd_loss_hand_worked():
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    teacher = torch.zeros(1, 2, 2)
    # frame 0: 1.6 * 1 = 1.6; frame 1: 0.4 * 4 = 1.6; a sum over channels (Eq. 3); mean 1.6
    assert fssd_loss(student, teacher, torch.tensor([1.6, 0.4])).item() == pytest.approx(1.6)
    assert fssd_loss(teacher, teacher, torch.ones(2)).item() == 0.0
