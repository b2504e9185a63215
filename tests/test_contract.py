"""The contract module: one spelling of every mode and file name, and calibration arrays that round-trip."""
import numpy as np
import pytest

from stpr.runtime import contract


def test_td_calibration_packs_and_unpacks():
    rng = np.random.default_rng(0)
    K, D = 3, 5
    parts = {"center": rng.standard_normal((K, D)), "var": 0.5 + rng.random((K, D)),
             "score_mean": rng.standard_normal(K), "score_std": 0.5 + rng.random(K)}
    packed = contract.pack_td_calibration(**parts)
    assert packed.shape == (K, 2 * D + 2) and packed.dtype == np.float32
    got = contract.unpack_td_calibration(packed, num_experts=K, dim=D)
    for name, value in parts.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        contract.unpack_td_calibration(packed, num_experts=K + 1, dim=D)


def test_every_choice_is_the_contracts():
    from stpr.runtime.model.experts import EXPERT_VARIANTS
    from stpr.runtime.model.router import BUNDLE_ROUTING_MODES
    from stpr.train.cli import main as train_main
    from stpr.train.config_load import CHOICES

    assert CHOICES["method.routing"] is contract.ROUTING_MODES
    assert CHOICES["method.distill"] is contract.DISTILL_MODES
    assert CHOICES["head.mode"] is contract.HEAD_CHOICES and CHOICES["head.tower"] is contract.HEAD_TOWERS
    assert BUNDLE_ROUTING_MODES is contract.BUNDLE_ROUTING_MODES and EXPERT_VARIANTS is contract.PRECISIONS
    assert set(contract.BUNDLE_ROUTING_MODES) <= set(contract.ROUTING_MODES)
    assert set(contract.ROUTING_ANCHORS) == set(contract.BUNDLE_ROUTING_MODES)
    options = {p.name: p for p in train_main.params}
    assert tuple(options["routing"].type.choices) == contract.ROUTING_MODES
    assert tuple(options["head"].type.choices) == contract.HEAD_CHOICES
