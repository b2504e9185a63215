"""TSN sampling and the built-in synthetic action dataset."""
import numpy as np
import pytest
import torch

from stpr.train.data.sampling import tsn_indices
from stpr.train.data.synthetic import CLIP_MEAN, CLIP_STD, DEFAULT_MOTIONS, FAMILIES, SHAPES, SyntheticActions

# ---------------------------------------------------------------- tsn_indices

@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("n", [1, 8, 13])
def test_tsn_identity_when_frames_equal_segments(n, train):
    idx = tsn_indices(n, n, train=train, rng=np.random.default_rng(0))
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, np.arange(n))


def test_tsn_test_mode_takes_segment_centres():
    np.testing.assert_array_equal(tsn_indices(16, 8, train=False), [1, 3, 5, 7, 9, 11, 13, 15])
    np.testing.assert_array_equal(tsn_indices(10, 4, train=False), [1, 3, 6, 8])
    np.testing.assert_array_equal(tsn_indices(100, 1, train=False), [50])


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("n,t", [(1, 8), (3, 8), (5, 8), (7, 16)])
def test_tsn_short_video_repeats_frames(n, t, train):
    rng = np.random.default_rng(1)
    for _ in range(20):
        idx = tsn_indices(n, t, train=train, rng=rng)
        assert idx.shape == (t,) and idx.dtype == np.int64
        assert np.all(np.diff(idx) >= 0)
        assert idx.min() >= 0 and idx.max() < n
        if not train:  # centres step by n / t < 1, so every frame is used, some repeated
            assert len(np.unique(idx)) == n
    np.testing.assert_array_equal(tsn_indices(3, 6, train=False), [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("n,t", [(16, 8), (100, 8), (37, 5), (9, 8)])
def test_tsn_train_mode_stays_in_segment_and_varies(n, t):
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(200):
        idx = tsn_indices(n, t, train=True, rng=rng)
        assert idx.shape == (t,) and idx.dtype == np.int64
        seg = np.arange(t)
        assert np.all(idx >= np.floor(seg * n / t))
        assert np.all(idx < (seg + 1) * n / t)
        seen.add(tuple(idx))
    assert len(seen) > 1  # random offsets, not the centres every time


def test_tsn_train_mode_is_reproducible_from_rng():
    a = tsn_indices(300, 8, train=True, rng=np.random.default_rng(7))
    b = tsn_indices(300, 8, train=True, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_tsn_errors():
    with pytest.raises(ValueError, match="num_video_frames.*0"):
        tsn_indices(0, 8, train=False)
    with pytest.raises(ValueError, match="num_segments.*-2"):
        tsn_indices(10, -2, train=False)
    with pytest.raises(ValueError, match="rng"):
        tsn_indices(10, 4, train=True)


# ---------------------------------------------------------------- SyntheticActions

def test_dataset_length_classes_and_labels():
    ds = SyntheticActions("train", clips_per_class=3)
    assert len(ds.classes) == 20 == len(SHAPES) * len(DEFAULT_MOTIONS)
    assert ds.classes[:4] == ["circle_moving_right", "circle_moving_left", "circle_moving_down", "circle_moving_up"]
    assert ds.classes[5] == "square_moving_left" and ds.classes[-1] == "ring_moving_up"
    assert len(ds) == 60 == len(ds.targets)
    assert ds.targets == [i // 3 for i in range(60)]
    assert [ds[i][1] for i in (0, 2, 3, 59)] == [0, 0, 1, 19]
    assert len(SyntheticActions("train")) == 20 * 48
    assert len(SyntheticActions("test")) == 20 * 16


def test_subset_of_shapes_and_motions():
    ds = SyntheticActions("test", clips_per_class=2, shapes=("ring", "cross"), motions=("moving_up", "growing"))
    assert ds.classes == ["ring_moving_up", "ring_growing", "cross_moving_up", "cross_growing"]
    assert len(ds) == 8 and max(ds.targets) == 3


def test_clips_are_deterministic_and_splits_differ():
    a = SyntheticActions("train", clips_per_class=2, seed=3)
    b = SyntheticActions("train", clips_per_class=2, seed=3)
    np.testing.assert_array_equal(a.raw_clip(5), a.raw_clip(5))
    np.testing.assert_array_equal(a.raw_clip(5), b.raw_clip(5))  # independent of read order
    assert not np.array_equal(a.raw_clip(5), a.raw_clip(4))
    test = SyntheticActions("test", clips_per_class=2, seed=3)
    assert not np.array_equal(a.raw_clip(5), test.raw_clip(5))
    other_seed = SyntheticActions("train", clips_per_class=2, seed=4)
    assert not np.array_equal(a.raw_clip(5), other_seed.raw_clip(5))


def test_raw_clip_and_tensor_format():
    ds = SyntheticActions("train", num_frames=6, image_size=40, clips_per_class=1)
    raw = ds.raw_clip(7)
    assert raw.dtype == np.uint8 and raw.shape == (6, 40, 40, 3)
    x, y = ds[7]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (6, 3, 40, 40)
    assert isinstance(y, int) and y == 7
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    back = torch.round((x * std + mean) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(back, raw)


def test_custom_normalisation():
    ds = SyntheticActions("train", clips_per_class=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x, _ = ds[0]
    expected = torch.from_numpy(ds.raw_clip(0)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    torch.testing.assert_close(x, expected)


def test_shape_moves_and_background_is_dark():
    ds = SyntheticActions("train", clips_per_class=1)
    for i in range(len(ds)):
        clip = ds.raw_clip(i).astype(np.float32)
        bright = clip.max(axis=-1) > 140  # the shape; the background is < 70 + noise
        assert 0.02 < bright.mean() < 0.2
        ys, xs = np.nonzero(bright[0])
        ye, xe = np.nonzero(bright[-1])
        shift = np.array([xe.mean() - xs.mean(), ye.mean() - ys.mean()])
        direction = ds.classes[i].rsplit("_", 1)[1]
        sign, axis = {"left": (-1, 0), "right": (1, 0), "up": (-1, 1), "down": (1, 1)}[direction]
        assert sign * shift[axis] > 0.3 * 32  # travels about half the image side
        assert abs(shift[1 - axis]) < 1.0  # straight line along the axis


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pair", FAMILIES)
def test_opposite_motions_are_exact_time_reversals(shape, pair):
    ds = SyntheticActions("train", num_frames=8, image_size=32)
    fwd, back = pair
    a = ds._render(shape, fwd, np.random.default_rng(123))
    b = ds._render(shape, back, np.random.default_rng(123))
    np.testing.assert_array_equal(a, b[::-1])
    assert not np.array_equal(a, b)  # the frame order really differs
    # A frame average cannot tell the pair apart: the multiset of frames is identical.
    np.testing.assert_allclose(a.mean(axis=0, dtype=np.float64), b.mean(axis=0, dtype=np.float64))


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="valid: train, test"):
        SyntheticActions("val")
    with pytest.raises(ValueError, match="hexagon.*circle"):
        SyntheticActions("train", shapes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="sideways.*moving_right"):
        SyntheticActions("train", motions=("sideways",))
    with pytest.raises(ValueError, match="clips_per_class"):
        SyntheticActions("train", clips_per_class=0)
    ds = SyntheticActions("train", clips_per_class=1)
    with pytest.raises(ValueError, match="hexagon"):
        ds._render("hexagon", "moving_left", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown motion 'left'"):
        ds._render("circle", "left", np.random.default_rng(0))
    with pytest.raises(IndexError):
        ds.raw_clip(len(ds))


def test_image_size_224():
    ds = SyntheticActions("test", num_frames=8, image_size=224, clips_per_class=1)
    assert ds.raw_clip(3).shape == (8, 224, 224, 3)
    x, _ = ds[3]
    assert x.shape == (8, 3, 224, 224) and torch.isfinite(x).all()


def test_growing_shape_gets_bigger_in_place():
    ds = SyntheticActions("train", clips_per_class=1, shapes=("square",), motions=("growing", "shrinking"))
    grow = ds.raw_clip(0).max(axis=-1) > 140
    area = grow.reshape(grow.shape[0], -1).sum(1)
    assert all(np.diff(area) >= 0) and area[-1] > 4 * area[0]
    shrink = ds.raw_clip(1).max(axis=-1) > 140
    assert shrink.reshape(shrink.shape[0], -1).sum(1)[0] > shrink.reshape(shrink.shape[0], -1).sum(1)[-1]
