"""The adapted tower, experts and parameter budgets (docs/method.md; paper App. C)."""
import pytest
import torch

from stpr.train.errors import StprError
from stpr.train.model.backbone import AdaptedVisionTower
from stpr.train.model.clip_tower import load_clip
from stpr.train.model.expert import TemporalExpert
from stpr.train.model.stpr import StPRModel


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def vit_b16():
    model, pp = load_clip("ViT-B-16", "none", seed=0)  # random init, no download
    return model, pp


def test_zero_init_adapters_give_clip_features_tiny(tiny_clip):
    clip, pp = tiny_clip
    tower = AdaptedVisionTower(clip.visual).eval()
    x = torch.randn(4, 3, pp.size, pp.size)
    with torch.no_grad():
        assert torch.allclose(tower(x), clip.encode_image(x), atol=1e-5, rtol=0)


def test_zero_init_adapters_give_clip_features_vit_b16(vit_b16):
    clip, pp = vit_b16
    tower = AdaptedVisionTower(clip.visual).eval()
    x = torch.randn(1, 3, pp.size, pp.size)
    with torch.no_grad():
        ours, theirs = tower(x), clip.encode_image(x)
    assert ours.shape == (1, 512)
    assert (ours - theirs).abs().max() < 1e-5


def test_trained_adapters_change_features_and_can_be_bypassed(tiny_clip):
    clip, pp = tiny_clip
    tower = AdaptedVisionTower(clip.visual).eval()
    for a in tower.adapters:
        torch.nn.init.normal_(a.up.weight, std=0.5)
    x = torch.randn(2, 3, pp.size, pp.size)
    with torch.no_grad():
        clip_feats = clip.encode_image(x)
        assert (tower(x) - clip_feats).abs().max() > 1e-3
        assert torch.allclose(tower(x, adapters=False), clip_feats, atol=1e-5)


def test_parameter_counts_match_paper_vit_b16(vit_b16):
    clip, _ = vit_b16
    tower = AdaptedVisionTower(clip.visual)
    adapters = _count(tower.adapters)
    expert = _count(TemporalExpert(512, num_frames=8))
    assert abs(adapters - 1.17e6) / 1.17e6 <= 0.03, adapters
    assert abs(expert - 9.45e6) / 9.45e6 <= 0.01, expert
    # The frozen tower is the ~86 M of the paper's table and none of it trains.
    assert 85e6 < _count(clip.visual) < 87.5e6


def test_expert_shapes_and_frame_count_check():
    e = TemporalExpert(16, num_frames=4, layers=1, heads=2)
    assert e(torch.randn(3, 4, 16)).shape == (3, 16)
    with pytest.raises(ValueError, match="expects 4 frames"):
        e(torch.randn(3, 5, 16))


def test_model_grows_per_task_and_warm_starts(tiny_clip):
    clip, pp = tiny_clip
    m = StPRModel(clip.visual, num_frames=4, expert_layers=1)
    m.add_task(torch.randn(2, m.dim))
    m.add_task(torch.randn(3, m.dim), init_from_previous=True)
    assert m.num_experts == 2 and m.num_classes == 5
    assert m.class_to_expert.tolist() == [0, 0, 1, 1, 1]
    for p0, p1 in zip(m.experts[0].parameters(), m.experts[1].parameters()):
        assert torch.equal(p0, p1) and p0 is not p1
    out = m(torch.randn(2, 4, 3, pp.size, pp.size), routing="avg")
    assert out["logits"].shape == (2, 5) and out["weights"].shape == (2, 2)


def test_unknown_model_and_missing_weights_file_are_clear_errors(tmp_path):
    with pytest.raises(StprError, match="unknown model 'ViT-Q-99'"):
        load_clip("ViT-Q-99", "none")
    refused = r"neither 'none', 'openai', a packaged tag \('synthetic-shapes'\) nor an existing file"
    with pytest.raises(StprError, match=refused):
        load_clip("stpr-tiny", str(tmp_path / "nope.pt"))
    with pytest.raises(StprError, match="has no 'openai' weights"):
        load_clip("stpr-tiny", "openai")


def test_local_weights_file_loads(tiny_clip, tmp_path):
    clip, _ = tiny_clip
    path = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), path)
    loaded, _ = load_clip("stpr-tiny", str(path))
    assert torch.equal(loaded.visual.proj, clip.visual.proj)


def test_random_init_is_seeded(tiny_clip):
    clip, _ = tiny_clip
    again, _ = load_clip("stpr-tiny", "none", seed=0)
    other, _ = load_clip("stpr-tiny", "none", seed=1)
    assert torch.equal(again.visual.proj, clip.visual.proj)
    assert not torch.equal(other.visual.proj, clip.visual.proj)


def test_a_checkpoint_from_before_the_rename_still_loads_td_raw_anchors():
    """Checkpoints written before `StPRModel.anchors` became `td_raw_anchors` store them
    under "anchors"; they load into the renamed buffer."""
    from helpers import fast_config

    from stpr.train import run as R

    s = R.build(fast_config())
    s.learner.begin_task(0, [s.splits.classes[c] for c in s.tasks[0]], steps=1)
    s.learner.model.td_raw_anchors.normal_()
    state = s.learner.state_dict()
    old = {("anchors" if k == "td_raw_anchors" else k): v for k, v in state.items()}
    fresh = R.build(fast_config()).learner
    fresh.load_state_dict(old)
    assert torch.equal(fresh.model.td_raw_anchors, state["td_raw_anchors"])
