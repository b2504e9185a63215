"""The NumPy router agrees with the PyTorch router (any K, K = 1 included) to 1e-5."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from stpr.runtime import router as npr
from stpr.train.model.router import combine, routing_weights
from stpr.train.model.text import cosine_logits


@pytest.mark.parametrize("K", [1, 2, 5])
@pytest.mark.parametrize("mode", ["td", "avg", "adapter"])
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
    w = routing_weights(mode, fbar=fbar, z=z, class_to_expert=c2e, tau=0.1, anchors=anchors,
                        query=fbar if mode == "adapter" else None)
    logits = cosine_logits(combine(fbar, z, w), text, 100.0)
    out = npr.classify(feats.numpy(), z.numpy(), text.numpy(), c2e.numpy(), anchors.numpy(), mode, 0.1, 100.0)
    np.testing.assert_allclose(out["weights"], w.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["logits"], logits.numpy(), atol=1e-5 * 100, rtol=1e-5)
    assert (out["logits"].argmax(1) == logits.numpy().argmax(1)).all()


def test_bundle_cannot_route_with_clip_or_oracle():
    with pytest.raises(ValueError, match="cannot run from a bundle; valid: td, avg, adapter"):
        npr.routing_weights("clip", np.zeros((1, 4)), np.zeros((1, 1, 4)), np.zeros(1, int), 0.1, np.zeros((1, 4)))


def test_runtime_router_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import stpr.runtime.router; print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
