"""Open-set rejection: stpr-run says `unknown` for classes it never trained, with the
threshold the export calibrated, in the jsonl, --clip and the overlay; bad input is refused."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import fast_config, predictions, write_video
from test_bundle_fields import damaged

from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.cli import run_cli
from stpr.runtime.io.overlay import draw_overlay
from stpr.runtime.model.openset import auroc, check_threshold, fpr_at, threshold_at_tpr

# Measured on this fixture (4+4x3, 32 clips a class, 15 + 10 epochs; docs/results.md "Open
# set"): AUROC 0.70-0.71 on fresh clips. A random score sits at 0.5 +- 0.03 here.
AUROC_FLOOR = 0.62
FRESH_SEED = 7  # clips neither trained on nor used to calibrate (the export renders seed 0)

# Runs the device path with torch blocked: clips (uint8 RGB) in, one open-set score per clip out.
SCORE_CLIPS = """
import sys, json
sys.modules['torch'] = None  # any `import torch` now fails
import numpy as np
from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.model.preprocess import preprocess
from stpr.runtime.engine.recognizer import Recognizer
b = load_bundle(sys.argv[1])
out = {}
with Recognizer(b) as rec:
    for name in ("known", "unknown"):
        clips = np.load(sys.argv[2] + f"/{name}.npy", allow_pickle=False)
        out[name] = [float(rec.classify(rec.frame_features(np.stack(
            [preprocess(f[..., ::-1], b.size, b.mean, b.std) for f in clip]))[None])["unknown_score"][0])
            for clip in clips]
out["threshold"] = rec.unknown_threshold
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A longer-trained demo (about 25 s) whose protocol leaves whole motions and a shape
    (ring) untrained, and its bundle."""
    from stpr.export import export_run
    from stpr.train import run as R

    root = tmp_path_factory.mktemp("openset")
    cfg = fast_config(**{"data.protocol": "4+4x3", "data.clips_per_class_train": 32, "data.clips_per_class_test": 8,
                         "optim.batch_size": 16, "optim.epochs_base": 15, "optim.epochs_incremental": 10})
    R.run(cfg, root / "run")
    export_run(root / "run", root / "bundle")
    return root / "bundle"


def _fresh_clips(classes: list[str], known: bool, per_class: int) -> np.ndarray:
    from stpr.train.data.synthetic import MOTIONS, SHAPES, SyntheticActions

    every = SyntheticActions("test", clips_per_class=per_class, seed=FRESH_SEED, shapes=SHAPES, motions=MOTIONS)
    return np.stack([every.raw_clip(i) for i, t in enumerate(every.targets)
                     if (every.classes[t] in classes) == known])


@pytest.mark.slow
def test_unknown_score_separates_never_trained_classes(trained, tmp_path):
    b = load_bundle(trained)
    np.save(tmp_path / "known.npy", _fresh_clips(b.classes, True, 6), allow_pickle=False)
    np.save(tmp_path / "unknown.npy", _fresh_clips(b.classes, False, 3), allow_pickle=False)
    res = subprocess.run([sys.executable, "-c", SCORE_CLIPS, str(trained), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.splitlines()[-1])
    known, unknown = np.array(got["known"]), np.array(got["unknown"])
    assert len(known) == 16 * 6 and len(unknown) == 34 * 3  # 16 trained classes; 50 - 16 never trained
    assert auroc(known, unknown) > AUROC_FLOOR
    # the floor is a real check: a score that knows nothing fails it
    rng = np.random.default_rng(0)
    assert auroc(rng.normal(size=known.size), rng.normal(size=unknown.size)) < AUROC_FLOOR
    # the export's threshold (95 % TPR on its calibration half) holds on fresh known clips
    # and rejects more unknown clips than known ones
    assert got["threshold"] == b.unknown["threshold"]
    tpr = float((known >= got["threshold"]).mean())
    assert tpr >= 0.85 and fpr_at(unknown, got["threshold"]) < tpr
    report = json.loads((trained / "openset.json").read_text())
    assert report["auroc"] > AUROC_FLOOR and report["unknown_clips"] == {"new_motion": 96, "new_shape": 40}
    assert b.manifest["files"]["openset.json"]  # hashed like every bundle file


def test_auroc_and_threshold_at_tpr():
    assert auroc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auroc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5  # ties count half
    known = np.arange(100.0)
    t = threshold_at_tpr(known, 0.95)
    assert (known >= t).mean() >= 0.95 and (known >= t + 1).mean() < 0.95


def _clip(demo, tmp_path, *extra: str):
    root, run, bundle, test = demo
    video = write_video(tmp_path / "c.avi", [test.raw_clip(0)])
    events = tmp_path / "c.jsonl"
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(bundle), "--video", str(video), "--clip", "--headless",
                                            "--jsonl", str(events), *extra])
    return res, (predictions(events)[-1] if events.exists() and predictions(events) else None)  # the log appends


def test_clip_reports_unknown_beside_top(demo, tmp_path):
    res, event = _clip(demo, tmp_path)
    assert res.exit_code == 0, res.output
    keys = list(event)
    assert keys.index("unknown") == keys.index("top") + 1 and isinstance(event["unknown"], bool)
    calibrated = load_bundle(demo[2]).unknown["threshold"]
    assert event["unknown"] == (event["unknown_score"] < calibrated)
    res, event = _clip(demo, tmp_path, "--unknown-threshold", "1e6")  # nothing fits that well
    assert res.exit_code == 0 and event["unknown"] is True
    assert "unknown  (open-set score" in res.output and "nearest known classes" in res.output
    res, event = _clip(demo, tmp_path, "--unknown-threshold", "-1e6")
    assert res.exit_code == 0 and event["unknown"] is False and "unknown  (" not in res.output


def test_streaming_events_say_unknown(demo, tmp_path):
    root, run, bundle, test = demo
    video = write_video(tmp_path / "v.avi", [test.raw_clip(0), test.raw_clip(4)])
    events = tmp_path / "ev.jsonl"
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(bundle), "--video", str(video), "--headless", "--smooth",
                                            "2", "--jsonl", str(events), "--unknown-threshold", "1e6"])
    assert res.exit_code == 0, res.output
    lines = predictions(events)
    assert len(lines) == 9 and all(e["unknown"] is True for e in lines)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_threshold_is_refused(demo, tmp_path, value):
    res, event = _clip(demo, tmp_path, "--unknown-threshold", value)
    assert res.exit_code == 2 and "--unknown-threshold" in res.output and "not a finite number" in res.output
    assert event is None


def test_threshold_outside_a_bounded_score_is_refused():
    with pytest.raises(ValueError, match=r"'max_cosine' score lies in \[-1.0, 1.0\]"):
        check_threshold(1.5, "--unknown-threshold", "max_cosine")
    assert check_threshold(0.5, "--unknown-threshold", "max_cosine") == 0.5


def test_bundle_without_calibration_runs_but_refuses_a_threshold(demo, tmp_path):
    damaged(demo[2], tmp_path / "b", lambda m, d: m.pop("unknown"))
    root, run, bundle, test = demo
    video = write_video(tmp_path / "c.avi", [test.raw_clip(0)])
    args = ["--bundle", str(tmp_path / "b"), "--video", str(video), "--clip", "--headless"]
    res = CliRunner().invoke(run_cli.main, [*args, "--jsonl", str(tmp_path / "e.jsonl")])
    assert res.exit_code == 0 and "no calibrated unknown score" in res.output
    assert "unknown" not in predictions(tmp_path / "e.jsonl")[0]  # no claim it cannot back
    res = CliRunner().invoke(run_cli.main, [*args, "--unknown-threshold", "0.5"])
    assert res.exit_code == 1 and "has no calibrated unknown score" in res.output and "re-export" in res.output


def test_overlay_shows_unknown():
    frame = np.zeros((120, 160, 3), np.uint8)
    event = {"top": [["circle_moving_left", 0.9]], "routing": {"expert_0": 1.0}}
    orange = np.array([0, 140, 255])  # the overlay's unknown colour (BGR)

    def has_orange(img: np.ndarray) -> bool:
        return bool((np.abs(img.astype(int) - orange).sum(-1) < 60).any())

    assert has_orange(draw_overlay(frame, {**event, "unknown": True}, 10.0))
    assert not has_orange(draw_overlay(frame, {**event, "unknown": False}, 10.0))


def test_export_without_readable_data_has_no_threshold(demo, tmp_path, monkeypatch):
    from stpr.export import calibrate, export_run

    def unreadable(*a, **k):
        raise OSError("no dataset on this machine")

    monkeypatch.setattr(calibrate, "build_splits", unreadable)
    res = export_run(demo[1], tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "unknown" not in m and "openset.json" not in m["files"] and res.openset == {}
    assert load_bundle(tmp_path / "b").unknown is None  # a valid bundle that never says unknown
