"""The analytic head: exact incremental ridge, lambda from the base task, class balance,
NumPy/PyTorch twins, checkpoints, DDP, and retention on the motion-centric layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import fast_config, train_one_and_two_processes

from stpr.runtime.model import analytic as NA
from stpr.train import run as R
from stpr.train.analytic_fit import LAMBDA_GRID, AnalyticHead, choose_lambda, holdout_mask
from stpr.train.checkpoint import checkpoint_path, load_checkpoint
from stpr.train.model import analytic as TA


def _features(n_per_class: list[int], dim: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of len(n_per_class) classes, each a noisy copy of its class's centre (M = dim)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(len(n_per_class), dim, generator=g)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    h = torch.relu(centres[labels] + 0.6 * torch.randn(len(labels), dim, generator=g))
    return h, labels


def _joint_ridge(h: torch.Tensor, labels: torch.Tensor, w: torch.Tensor, lam: float, C: int) -> torch.Tensor:
    y = torch.nn.functional.one_hot(labels, C).double()
    hw = h.double() * w.unsqueeze(1)
    return torch.linalg.solve(hw.T @ h.double() + lam * torch.eye(h.shape[1], dtype=torch.float64), hw.T @ y)


@pytest.mark.parametrize("balance", ["weight", "none"])
def test_incremental_solve_equals_one_joint_ridge_fit_in_any_class_order(balance):
    h, labels = _features([10, 14, 9, 12, 11, 8], seed=1)
    tasks = [[0, 1], [2, 3, 4], [5]]
    order = [5, 2, 0, 4, 1, 3]  # a shuffled class order: global id i is class order[i]
    relabel = torch.tensor([order.index(c) for c in range(6)])
    g_labels = relabel[labels]
    head = AnalyticHead(in_dim=8, dim=h.shape[1], seed=0, balance=balance, ridge=0.3)
    seen = 0
    for t in tasks:
        ids = [order[seen + i] for i in range(len(t))]  # this task's classes in the shuffled order
        mask = torch.isin(labels, torch.tensor(ids))
        seen += len(t)
        head.add_task(h[mask], g_labels[mask], seen)
    counts = torch.bincount(g_labels, minlength=6).double()
    n_ref = counts[:2].mean()  # the base task's mean clips per class
    w = n_ref / counts[g_labels] if balance == "weight" else torch.ones(len(h), dtype=torch.float64)
    joint = _joint_ridge(h, g_labels, w, 0.3, 6)
    assert torch.allclose(head.weights.double(), joint, atol=1e-6), (head.weights.double() - joint).abs().max()


def test_lambda_comes_from_the_base_task_alone_by_holdout_mse():
    h, labels = _features([16, 16, 16, 16], seed=2)
    w = torch.ones(len(h), dtype=torch.float64)
    lam, report = choose_lambda(h, labels, w, dim=h.shape[1])
    # the rule by hand: fit on the 75 %, lowest weighted MSE on the 25 %, lambda = g * tr(G) / M
    hold = holdout_mask(h, labels)
    assert hold.sum() == 16 and all((hold & (labels == c)).sum() == 4 for c in range(4))  # stratified 75/25
    y = torch.nn.functional.one_hot(labels, 4).double()
    hd, fit = h.double(), ~hold
    scale = float((hd[fit] ** 2).sum()) / h.shape[1]
    mses = []
    for g in LAMBDA_GRID:
        W = torch.linalg.solve(hd[fit].T @ hd[fit] + g * scale * torch.eye(h.shape[1], dtype=torch.float64),
                               hd[fit].T @ y[fit])
        mses.append(float(((hd[hold] @ W - y[hold]) ** 2).sum(1).mean()))
    assert np.allclose(report["mse"], mses, rtol=1e-6)
    assert report["g"] == LAMBDA_GRID[int(np.argmin(mses))]
    assert lam == pytest.approx(report["g"] * float((hd ** 2).sum()) / h.shape[1])
    # fixed once chosen: later tasks never move it
    head = AnalyticHead(in_dim=8, dim=h.shape[1], seed=0)
    head.add_task(h, labels, 4)
    first = head.lam
    h2, l2 = _features([16, 16], seed=3)
    head.add_task(h2, l2 + 4, 6)
    assert head.lam == first == pytest.approx(lam)


def test_holdout_split_does_not_depend_on_the_order_clips_arrive_in():
    h, labels = _features([9, 13, 7], seed=4)
    perm = torch.randperm(len(h), generator=torch.Generator().manual_seed(0))
    a = holdout_mask(h, labels)
    b = holdout_mask(h[perm], labels[perm])
    assert torch.equal(a[perm], b)


def test_class_weights_lift_the_recall_of_rarer_classes():
    # classes 0-3 with 40 clips, 4-7 with 5: plain ridge under-predicts the rare ones
    n = [40] * 4 + [5] * 4
    h, labels = _features(n, dim=32, seed=5)
    test_h, test_l = _features([50] * 8, dim=32, seed=5)  # same centres (same seed), fresh noise below
    test_h = torch.relu(test_h + 0.3 * torch.randn(test_h.shape, generator=torch.Generator().manual_seed(9)))
    recall = {}
    for balance in ("none", "weight"):
        head = AnalyticHead(in_dim=8, dim=32, seed=0, balance=balance, ridge=5.0)
        head.add_task(h, labels, 8)
        pred = (test_h @ head.weights).argmax(1)
        recall[balance] = float((pred[test_l >= 4] == test_l[test_l >= 4]).float().mean())
    assert recall["weight"] > recall["none"] + 0.05, recall


def _window(b: int = 5, t: int = 4, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, t, d)).astype(np.float32)


def test_projection_is_regenerated_exactly_from_its_seed():
    p = NA.projection_matrix(7, 24, 16)
    assert np.array_equal(p, NA.projection_matrix(7, 24, 16))
    assert NA.projection_sha256(p) == NA.projection_sha256(TA.projection(seed=7, in_dim=24, out_dim=16).numpy())
    assert NA.projection_sha256(p) != NA.projection_sha256(NA.projection_matrix(8, 24, 16))


def test_head_features_keep_the_frame_order():
    w = _window()
    p = NA.projection_matrix(0, 24, 32)
    assert not np.allclose(NA.expand(w, p), NA.expand(w[:, ::-1], p))  # time-reversed clip: other features
    assert np.allclose(NA.expand(w, p), NA.expand(3.0 * w, p), atol=1e-6)  # the tower's scale drops out


@pytest.mark.parametrize("mode", NA.HEAD_MODES)
def test_numpy_and_pytorch_modes_agree(mode):
    rng = np.random.default_rng(1)
    B, K, C, D = 6, 3, 7, 6
    c2e = np.array([0, 0, 1, 1, 1, 2, 2])
    window, z = _window(B, 4, D, 2), rng.normal(size=(B, K, D)).astype(np.float32)
    text = rng.normal(size=(C, D)).astype(np.float32)
    p = NA.projection_matrix(3, 4 * D, 20)
    W = rng.normal(size=(20, C)).astype(np.float32)
    stpr_logits = rng.normal(size=(B, C)).astype(np.float32)
    scores = NA.head_scores(window, p, W)
    ts = TA.head_scores(torch.from_numpy(window), torch.from_numpy(p), torch.from_numpy(W))
    assert np.allclose(scores, ts.numpy(), atol=1e-5)
    own = NA.own_expert_logits(fbar=window.mean(1), z=z, text=text, class_to_expert=c2e, logit_scale=10.0)
    town = TA.own_expert_logits(fbar=torch.from_numpy(window).mean(1), z=torch.from_numpy(z),
                                text=torch.from_numpy(text), class_to_expert=torch.from_numpy(c2e), logit_scale=10.0)
    assert np.allclose(own, town.numpy(), atol=1e-5)
    got = NA.mode_probabilities(mode, scores=scores, class_to_expert=c2e, num_tasks=K, tau=0.1, own_logits=own,
                                stpr_logits=stpr_logits, fuse_weight=0.3)
    want = TA.mode_probabilities(mode, scores=ts, class_to_expert=torch.from_numpy(c2e), num_tasks=K, tau=0.1,
                                 own_logits=town, stpr_logits=torch.from_numpy(stpr_logits), fuse_weight=0.3)
    assert np.allclose(got, want.numpy(), atol=1e-5)
    assert np.allclose(got.sum(1), 1.0)


def test_route_hard_keeps_only_the_heads_task():
    scores = np.array([[0.1, 0.9, 0.0, 0.2]], np.float32)  # top class 1: task 0
    c2e = np.array([0, 0, 1, 1])
    own = np.array([[1.0, 0.0, 9.0, 9.0]], np.float32)  # task 1's classes look better to StPR
    p = NA.mode_probabilities("route-hard", scores=scores, class_to_expert=c2e, num_tasks=2, tau=0.1, own_logits=own)
    assert p[0, 2:].sum() == 0 and p[0].argmax() == 0  # within task 0, its expert prefers class 0


def test_head_alone_keeps_old_tasks_on_the_motion_centric_layout(tmp_path):
    """Seeded order: later tasks reuse earlier shapes with other motions (where StPR forgets)."""
    cfg = fast_config(**{"data.protocol": "4+4x4", "data.class_order": "seeded", "head.mode": "alone",
                         "data.clips_per_class_train": 24, "data.clips_per_class_test": 8})
    m = R.run(cfg, tmp_path / "run")
    A = np.array([[np.nan if v is None else v for v in row] for row in m["accuracy_matrix"]])
    K = A.shape[0]
    for j in range(K - 1):  # every old task keeps at least 85 % of what it had
        assert A[K - 1, j] >= 0.85 * A[j, j], A
    assert m["acc"] >= 85.0 and m["bwf"] <= 10.0, (m["acc"], m["bwf"])
    assert m["head"] == "alone" and set(m["modes"]) == {"alone"}
    ck = load_checkpoint(checkpoint_path(tmp_path / "run", K - 1))
    assert ck["learner"]["head"]["weights"].shape == (cfg.head.dim, 20)


def test_resumed_run_gives_the_same_head(tmp_path):
    cfg = fast_config(**{"head.mode": "alone", "head.dim": 256})
    full = R.run(cfg, tmp_path / "a")
    R.run(fast_config(**{"head.mode": "alone", "head.dim": 256}), tmp_path / "b")
    (tmp_path / "b" / "checkpoints" / "task_002.pt").unlink()  # as if stopped before the last task
    resumed = R.run(None, tmp_path / "b", resume=True)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    wa = load_checkpoint(checkpoint_path(tmp_path / "a", 2))["learner"]["head"]
    wb = load_checkpoint(checkpoint_path(tmp_path / "b", 2))["learner"]["head"]
    assert torch.equal(wa["gram"], wb["gram"]) and torch.equal(wa["weights"], wb["weights"])


def test_text_collision_warns_once_naming_the_classes(tmp_path, caplog, monkeypatch):
    from stpr.train.data import synthetic

    cfg = fast_config(**{"head.mode": "alone", "data.protocol": "4x1"})
    caplog.set_level("WARNING", logger="stpr")
    R.run(cfg, tmp_path / "demo")  # the demo's names: nothing to say
    assert not [r for r in caplog.records if "near-identical" in r.getMessage()]
    # two classes whose names are the same words to the tiny tower ("digit 0" / "digit 3")
    real = synthetic.SyntheticActions.__init__

    def renamed(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        real(self, *a, **kw)
        self.classes = ["digit 0 moving left", "digit 3 moving left"] + list(self.classes[2:])

    monkeypatch.setattr(synthetic.SyntheticActions, "__init__", renamed)
    R.run(fast_config(**{"head.mode": "alone", "data.protocol": "4x1"}), tmp_path / "digits")
    hits = [r.getMessage() for r in caplog.records if "near-identical" in r.getMessage()]
    assert len(hits) == 1, hits
    assert "'digit 0 moving left' ~ 'digit 3 moving left'" in hits[0] and "--head alone" in hits[0]


@pytest.mark.slow
def test_ddp_two_processes_give_the_same_sums_and_solve(tmp_path):
    args = ["--head", "alone", "--set", "data.protocol=4+4x1", "--set", "data.clips_per_class_train=9",
            "--set", "data.clips_per_class_test=4", "--set", "head.dim=256", "--device", "cpu", "--quiet"]
    train_one_and_two_processes(tmp_path, args)
    h1 = load_checkpoint(checkpoint_path(tmp_path / "one", 1))["learner"]["head"]
    h2 = load_checkpoint(checkpoint_path(tmp_path / "two", 1))["learner"]["head"]
    # 9 clips a class over 2 ranks: uneven shards, so the gather and the counts are exercised
    assert torch.equal(h1["counts"], h2["counts"]) and h1["lam"] == pytest.approx(h2["lam"], rel=1e-9)
    for key in ("gram", "cross"):
        assert torch.allclose(h1[key], h2[key], rtol=1e-9, atol=1e-9), key
    assert torch.allclose(h1["weights"], h2["weights"], atol=1e-5)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m1["accuracy_matrix"] == m2["accuracy_matrix"]


def test_leverage_from_the_full_subspace_is_the_exact_mahalanobis_distance():
    from stpr.runtime.model.openset import head_leverage

    rng = np.random.default_rng(0)
    H = np.maximum(rng.normal(size=(50, 12)), 0)
    G, lam = H.T @ H, 0.5
    e, V = np.linalg.eigh(G)
    h = np.maximum(rng.normal(size=(4, 12)), 0)
    exact = np.einsum("bi,ij,bj->b", h, np.linalg.inv(G + lam * np.eye(12)), h)
    full = np.vstack([V, 1.0 / (e + lam)])
    assert np.allclose(head_leverage(h, full, 0.0), exact)
    top = np.vstack([V[:, -6:], 1.0 / (e[-6:] + lam)])  # the top half and one mean eigenvalue for the rest
    approx = head_leverage(h, top, 1.0 / (e[:-6].mean() + lam))
    assert np.corrcoef(approx, exact)[0, 1] > 0.9


def test_head_alone_reads_the_frozen_tower_from_the_one_pass_it_makes():
    """With no gradient step the adapters' up projection is still zero: the adapted pass is
    CLIP's frozen tower exactly, so the head alone needs no second pass."""
    s = R.build(fast_config(**{"head.mode": "alone", "head.tower": "frozen", "head.dim": 64}))
    m = s.learner.model.eval()
    frames = torch.stack([s.splits.test[i][0] for i in range(3)])
    with torch.no_grad():
        feats = m.frame_features(frames)
        assert torch.equal(s.learner.head_window(frames, feats), m.frame_features(frames, adapters=False).float())
