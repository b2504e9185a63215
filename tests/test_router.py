"""TD-MoE routing against hand-worked examples (METHOD.md sec. 4)."""
import math

import pytest
import torch

from stpr.train.model.router import combine, expert_scores, routing_weights

S2 = 1 / math.sqrt(2)
# Expert 0 owns class 0, expert 1 owns classes 1 and 2.
ANCHORS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [S2, S2]])
C2E = torch.tensor([0, 1, 1])


def test_scores_are_max_cosine_over_each_experts_classes():
    # d_0 = (1, 0): cos with mu_0 = 1.  d_1 = (1, 0): cos with mu_1 = 0, mu_2 = 0.7071 -> max 0.7071.
    d = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])
    s = expert_scores(d, ANCHORS, C2E, 2)
    assert torch.allclose(s, torch.tensor([[1.0, S2]]), atol=1e-6)


def test_td_weights_and_combination_hand_worked():
    fbar = torch.tensor([[1.0, 1.0]])
    z = torch.tensor([[[2.0, 1.0], [2.0, 1.0]]])  # d_e = z_e - fbar = (1, 0) for both
    w = routing_weights("td", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1, anchors=ANCHORS)
    # softmax([1, 0.7071] / 0.1): w_0 = 1 / (1 + exp(-2.9289)) = 0.94925
    assert w[0, 0].item() == pytest.approx(1 / (1 + math.exp(-(1 - S2) / 0.1)), abs=1e-6)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    v = combine(fbar, z, w)
    assert torch.allclose(v, torch.tensor([[3.0, 2.0]]), atol=1e-6)  # fbar + (w_0 + w_1) * (2, 1)


def test_tied_scores_split_the_weight_evenly():
    fbar = torch.zeros(1, 2)
    z = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # s_0 = cos((1,0), mu_0) = 1, s_1 = cos((0,2), mu_1) = 1
    w = routing_weights("td", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1, anchors=ANCHORS)
    assert torch.allclose(w, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(combine(fbar, z, w), torch.tensor([[0.5, 1.0]]))


def test_one_expert_gets_all_the_weight_and_one_class_per_task_works():
    z = torch.randn(4, 1, 3)
    w = routing_weights("td", fbar=torch.randn(4, 3), z=z, class_to_expert=torch.tensor([0]), tau=0.1,
                        anchors=torch.randn(1, 3))
    assert torch.equal(w, torch.ones(4, 1))


def test_variants_avg_oracle_adapter_and_errors():
    fbar, z = torch.tensor([[1.0, 0.0]]), torch.randn(1, 2, 2)
    assert torch.allclose(routing_weights("avg", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1), torch.full((1, 2), 0.5))
    oracle = routing_weights("oracle", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1, task_ids=torch.tensor([1]))
    assert oracle.tolist() == [[0.0, 1.0]]
    # adapter routing compares fbar itself with the prototypes: (1,0) matches class 0 -> expert 0.
    w = routing_weights("adapter", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1, anchors=ANCHORS, query=fbar)
    assert w[0, 0] > 0.9
    with pytest.raises(ValueError, match="needs anchors"):
        routing_weights("td", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1)
    with pytest.raises(ValueError, match="unknown routing 'bogus'"):
        routing_weights("bogus", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1, anchors=ANCHORS)
