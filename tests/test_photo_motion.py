"""scripts/data/make_photo_motion.py: layout the folder reader takes, motion over time, time-reversed pairs, refusal."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import load_script

pytest.importorskip("skimage.data", reason="scikit-image (which ships the photos) is not installed")


@pytest.fixture(scope="module")
def script():
    return load_script("data/make_photo_motion")


def _clip(folder: Path) -> np.ndarray:
    return np.stack([cv2.imread(str(f)) for f in sorted(folder.glob("*.png"))]).astype(np.float32)


def test_layout_motion_and_refusal(script, tmp_path, capsys):
    out = tmp_path / "photos"
    script.main(["--out", str(out), "--images", "coffee,chelsea", "--motions", "left,right",
                 "--clips-per-class", "3", "--frames", "6", "--size", "32", "--seed", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert (summary["classes"], summary["clips"], summary["frames"]) == (4, 12, 72)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no temporary folder left beside it

    from stpr.train.data.folder import list_class_samples

    samples = list_class_samples(out)
    assert sorted(samples) == ["chelsea_moving_left", "chelsea_moving_right",
                               "coffee_moving_left", "coffee_moving_right"]
    for clips in samples.values():
        assert [c.name for c in clips] == ["clip_000", "clip_001", "clip_002"]
        for c in clips:
            frames = _clip(c)
            assert frames.shape == (6, 32, 32, 3)
            # The picture moves: consecutive frames differ well beyond the noise.
            assert min(np.abs(frames[k + 1] - frames[k]).mean() for k in range(5)) > 2.0

    with pytest.raises(SystemExit) as e:  # a non-empty --out is refused, untouched
        script.main(["--out", str(out), "--images", "coffee", "--clips-per-class", "1"])
    assert "not an empty folder" in str(e.value)
    assert len(list_class_samples(out)) == 4


def test_left_is_right_reversed(script):
    photo = script.PHOTOS["coffee"]()
    left = script.render_clip(photo, "left", np.random.default_rng(7), 8, 32).astype(np.float32)
    right = script.render_clip(photo, "right", np.random.default_rng(7), 8, 32).astype(np.float32)
    # Same draws: the same frames in opposite order, so their frame means coincide ...
    np.testing.assert_array_equal(left, right[::-1])
    assert np.abs(left.mean(0) - right.mean(0)).max() < 1e-3
    # ... while the clips themselves start (and end) in different places.
    assert np.abs(left[0] - right[0]).mean() > 5.0
    # Content moves left: frame 0 shifted left by the per-frame step matches frame 1 better than unshifted.
    a, b = left[0].mean(-1), left[1].mean(-1)
    err = {s: np.abs(a[:, s:] - b[:, : 32 - s]).mean() for s in range(4)}
    assert min(err, key=err.get) > 0
