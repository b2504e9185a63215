"""The NumPy router agrees with the PyTorch router (any K, K = 1 included) to 1e-5."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from stpr.runtime.contract import unpack_td_calibration
from stpr.runtime.model import router as npr
from stpr.train.model.router import combine, routing_weights
from stpr.train.model.text import cosine_logits


@pytest.mark.parametrize("K", [1, 2, 5])
@pytest.mark.parametrize("mode", ["td", "td-raw", "avg", "adapter"])
def test_numpy_router_matches_torch(K, mode):
    g = torch.Generator().manual_seed(K)
    B, T, D, per = 6, 8, 16, 3
    C = K * per
    feats = torch.randn(B, T, D, generator=g)
    z = torch.randn(B, K, D, generator=g)
    text = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=-1)
    anchors = torch.randn(C, D, generator=g)
    c2e = torch.arange(K).repeat_interleave(per)
    fbar = feats.mean(1)
    # calibrated td: centres, channel spreads, own-score means and spreads as a bundle's
    # (K, 2D + 2) array holds them
    packed = torch.cat([torch.randn(K, D, generator=g), 0.5 + torch.rand(K, D, generator=g),
                        torch.rand(K, 1, generator=g) - 2.0, 0.3 + torch.rand(K, 1, generator=g)], 1)
    cal = {"center": packed[:, :D], "var": packed[:, D:2 * D], "score_mean": packed[:, -2], "score_std": packed[:, -1]}
    tau = 1.0 if mode == "td" else 0.1
    w = routing_weights(mode, fbar=fbar, z=z, class_to_expert=c2e, tau=tau, anchors=anchors,
                        query=fbar if mode == "adapter" else None, calibration=cal)
    logits = cosine_logits(combine(fbar, z, w), text, 100.0)
    np_cal = unpack_td_calibration(packed.numpy(), num_experts=K, dim=D)
    out = npr.classify(feats.numpy(), z.numpy(), text.numpy(), c2e.numpy(), anchors.numpy(), mode, tau, 100.0,
                       np_cal)
    np.testing.assert_allclose(out["weights"], w.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["logits"], logits.numpy(), atol=1e-5 * 100, rtol=1e-5)
    assert (out["logits"].argmax(1) == logits.numpy().argmax(1)).all()


def test_bundle_cannot_route_with_clip_or_oracle():
    with pytest.raises(ValueError, match="cannot run from a bundle; valid: td, td-raw, avg, adapter"):
        npr.routing_weights("clip", fbar=np.zeros((1, 4)), z=np.zeros((1, 1, 4)), class_to_expert=np.zeros(1, int),
                            tau=0.1, anchors=np.zeros((1, 4)))


def test_bad_calibration_array_is_refused():
    with pytest.raises(ValueError, match=r"expected \(2, 10\)"):
        unpack_td_calibration(np.zeros((2, 6)), num_experts=2, dim=4)
    with pytest.raises(ValueError, match="spread <= 0"):
        unpack_td_calibration(np.ones((2, 10)) * [1, 1, 1, 1, 1, 1, 0, 1, 1, 1], num_experts=2, dim=4)
    bad = np.ones((2, 10))
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        unpack_td_calibration(bad, num_experts=2, dim=4)


def test_runtime_router_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import stpr.runtime.model.router; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


SHARED = ("td_distance_scores", "expert_scores", "routing_scores", "routing_weights", "weights_from_scores", "combine")


@pytest.mark.parametrize("mode", ["td", "td-raw", "avg", "adapter"])
def test_pre_softmax_scores_of_the_twins_agree(mode):
    from stpr.train.model import router as tr

    g = torch.Generator().manual_seed(7)
    B, K, D, per = 5, 3, 12, 2
    fbar, z = torch.randn(B, D, generator=g), torch.randn(B, K, D, generator=g)
    c2e = torch.arange(K).repeat_interleave(per)
    anchors = torch.randn(K * per, D, generator=g)
    cal = {"center": torch.randn(K, D, generator=g), "var": 0.5 + torch.rand(K, D, generator=g),
           "score_mean": torch.randn(K, generator=g), "score_std": 0.5 + torch.rand(K, generator=g)}
    kw = dict(class_to_expert=c2e, anchors=anchors, calibration=cal)
    ref = tr.routing_scores(mode, fbar=fbar, z=z, **kw)
    got = npr.routing_scores(mode, fbar=fbar.numpy(), z=z.numpy(),
                             **{k: (v.numpy() if isinstance(v, torch.Tensor) else {n: t.numpy() for n, t in v.items()})
                                for k, v in kw.items()})
    if mode == "avg":
        assert ref is None and got is None
    else:
        assert got.shape == (B, K)
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-5, rtol=1e-5)


def test_twins_define_the_same_functions_in_the_same_order_with_keyword_only_arguments():
    import inspect

    from stpr.train.model import router as tr

    def shared(module):
        names = [n for n, f in vars(module).items() if inspect.isfunction(f) and f.__module__ == module.__name__]
        return [n for n in names if n in SHARED]

    assert shared(tr) == shared(npr) == list(SHARED)
    for name in SHARED:
        a, b = inspect.signature(getattr(tr, name)), inspect.signature(getattr(npr, name))
        kinds = [(p.name, p.kind) for p in a.parameters.values() if p.name not in ("task_ids",)]
        assert kinds == [(p.name, p.kind) for p in b.parameters.values()], name
        if name != "combine":  # (fbar, z, w) is the paper's Eq. 12, positional on both sides
            assert all(p.kind == p.KEYWORD_ONLY for p in list(b.parameters.values())[1:]), name
