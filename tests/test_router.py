"""TD-MoE routing against hand-worked examples (docs/method.md, "Routing between experts")."""
import math

import pytest
import torch

from stpr.train.model.router import combine, expert_scores, routing_weights, td_class_means, td_distance_scores

S2 = 1 / math.sqrt(2)
# Expert 0 owns class 0, expert 1 owns classes 1 and 2.
ANCHORS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [S2, S2]])
C2E = torch.tensor([0, 1, 1])


def test_scores_are_max_cosine_over_each_experts_classes():
    # d_0 = (1, 0): cos with mu_0 = 1.  d_1 = (1, 0): cos with mu_1 = 0, mu_2 = 0.7071 -> max 0.7071.
    d = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])
    s = expert_scores(d, anchors=ANCHORS, class_to_expert=C2E, num_experts=2)
    assert torch.allclose(s, torch.tensor([[1.0, S2]]), atol=1e-6)


def test_td_weights_and_combination_hand_worked():
    fbar = torch.tensor([[1.0, 1.0]])
    z = torch.tensor([[[2.0, 1.0], [2.0, 1.0]]])  # d_e = z_e - fbar = (1, 0) for both
    w = routing_weights("td-raw", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1, anchors=ANCHORS)
    # softmax([1, 0.7071] / 0.1): w_0 = 1 / (1 + exp(-2.9289)) = 0.94925
    assert w[0, 0].item() == pytest.approx(1 / (1 + math.exp(-(1 - S2) / 0.1)), abs=1e-6)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    v = combine(fbar, z, w)
    assert torch.allclose(v, torch.tensor([[3.0, 2.0]]), atol=1e-6)  # fbar + (w_0 + w_1) * (2, 1)


def test_tied_scores_split_the_weight_evenly():
    fbar = torch.zeros(1, 2)
    z = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # s_0 = cos((1,0), mu_0) = 1, s_1 = cos((0,2), mu_1) = 1
    w = routing_weights("td-raw", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1, anchors=ANCHORS)
    assert torch.allclose(w, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(combine(fbar, z, w), torch.tensor([[0.5, 1.0]]))


def test_one_expert_gets_all_the_weight_and_one_class_per_task_works():
    z = torch.randn(4, 1, 3)
    w = routing_weights("td-raw", fbar=torch.randn(4, 3), z=z, class_to_expert=torch.tensor([0]), tau=0.1,
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
    with pytest.raises(ValueError, match="needs the per-expert calibration"):
        routing_weights("td", fbar=fbar, z=z, class_to_expert=C2E, tau=1.0, anchors=ANCHORS)
    with pytest.raises(ValueError, match="unknown routing 'bogus'"):
        routing_weights("bogus", fbar=fbar, z=z, class_to_expert=C2E, tau=0.1, anchors=ANCHORS)


# ---------------------------------------------------------------- calibrated td
# Expert 0 owns class 0, expert 1 owns class 1 (one class each).
C2E_2 = torch.tensor([0, 1])


def test_calibrated_td_picks_the_expert_raw_cosines_miss_hand_worked():
    # Expert 0's residual carries a large input-independent part (10, 0), which its raw
    # anchor shares: every input scores ~1 against it. Calibrated, the centre is removed
    # and its class sits at (0, 1) with unit spread. Expert 1 has no constant part; its
    # class sits at (1, 0). A video of task 1 gives d_0 = (10, -1), d_1 = (1, 0.5).
    raw_anchors = torch.nn.functional.normalize(torch.tensor([[10.0, 1.0], [1.0, 0.0]]), dim=-1)
    fbar = torch.zeros(1, 2)
    z = torch.tensor([[[10.0, -1.0], [1.0, 0.5]]])
    raw = routing_weights("td-raw", fbar=fbar, z=z, class_to_expert=C2E_2, tau=0.1, anchors=raw_anchors)
    # raw scores: cos((10,-1),(10,1)) = 99/101 = 0.980 > cos((1,.5),(1,0)) = 0.894: the wrong expert
    assert raw.argmax().item() == 0
    cal = {"center": torch.tensor([[10.0, 0.0], [0.0, 0.0]]), "var": torch.ones(2, 2),
           "score_mean": torch.tensor([0.0, 0.0]), "score_std": torch.tensor([1.0, 1.0])}
    means = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    w = routing_weights("td", fbar=fbar, z=z, class_to_expert=C2E_2, tau=1.0, anchors=means, calibration=cal)
    # centred: expert 0 sees (0, -1), distance to (0, 1) = (0 + 4) / 2 = 2; expert 1 sees
    # (1, 0.5), distance to (1, 0) = (0 + 0.25) / 2 = 0.125. Scores -2 and -0.125.
    assert w[0, 1].item() == pytest.approx(1 / (1 + math.exp(-(2 - 0.125))), abs=1e-6)


def test_standardising_makes_scores_comparable_hand_worked():
    # Both experts see their residual at distance 0.5 from their class mean. Expert 0
    # usually sees its own videos at distance 0.1 (+-0.1): 0.5 is 4 spreads off its usual;
    # expert 1 usually sees them at 1.0 (+-0.5): 0.5 is closer than usual (+1 spread).
    means = torch.zeros(2, 1)
    z = torch.tensor([[[math.sqrt(0.5)], [math.sqrt(0.5)]]])
    fbar = torch.zeros(1, 1)
    same = {"center": torch.zeros(2, 1), "var": torch.ones(2, 1), "score_mean": torch.zeros(2),
            "score_std": torch.ones(2)}
    w_same = routing_weights("td", fbar=fbar, z=z, class_to_expert=C2E_2, tau=1.0, anchors=means, calibration=same)
    assert torch.allclose(w_same, torch.tensor([[0.5, 0.5]]))  # unstandardised: a tie
    cal = {**same, "score_mean": torch.tensor([-0.1, -1.0]), "score_std": torch.tensor([0.1, 0.5])}
    w = routing_weights("td", fbar=fbar, z=z, class_to_expert=C2E_2, tau=1.0, anchors=means, calibration=cal)
    # z-scores: (-0.5 + 0.1) / 0.1 = -4 and (-0.5 + 1) / 0.5 = +1
    assert w[0, 1].item() == pytest.approx(1 / (1 + math.exp(-5.0)), abs=1e-5)


def test_channel_spread_weights_the_distance_hand_worked():
    # One class at the origin; the residual is 2 along a channel that varies a lot within
    # the class (var 4) for expert 0, along a tight one (var 0.25) for expert 1.
    d = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])  # (B, K, D)
    var = torch.tensor([[4.0, 0.25], [4.0, 0.25]])
    s = td_distance_scores(d, means=torch.zeros(2, 2), class_to_expert=C2E_2, var=var)
    assert torch.allclose(s, torch.tensor([[-(4 / 4) / 2, -(4 / 0.25) / 2]]))


def test_class_means_from_sums_hand_worked():
    # Two classes, two videos each, around a shared centre.
    d = torch.tensor([[5.0, 4.0], [5.0, 4.0], [4.0, 6.0], [4.0, 6.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    sums = torch.zeros(2, 2, dtype=torch.float64).index_add_(0, labels, d)
    center, means = td_class_means(sums, torch.tensor([2.0, 2.0], dtype=torch.float64))
    assert torch.allclose(center, torch.tensor([4.5, 5.0], dtype=torch.float64))
    assert torch.allclose(means, torch.tensor([[0.5, -1.0], [-0.5, 1.0]], dtype=torch.float64))
