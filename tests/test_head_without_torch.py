"""The analytic head without torch: `stpr-train --head alone` on the packaged tower's ONNX file,
`stpr-export` of such a run, and the bundle on `stpr-run` and `stpr-learn`, each in a child
process where `import torch` fails. Its numbers are the PyTorch run's."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import FAST, write_frame_folders, write_video
from test_openset import AUROC_FLOOR

from stpr.export.calibrate import calibration_clips
from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.engine.recognizer import Recognizer
from stpr.runtime.engine.watch import verify_recognizer
from stpr.runtime.learn.learn_clips import rows_of_clips
from stpr.train import run as R
from stpr.train.analytic_fit_numpy import NumpyHead, choose_lambda
from stpr.train.config_load import load_config
from stpr.train.data.registry import build_splits
from stpr.train.data.synthetic import SyntheticActions
from stpr.train.head_setup import tower_of

TINY = {**FAST, "head.mode": "alone"}
NO_TORCH = "import sys; sys.modules['torch'] = None\n"


def without_torch(module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`module`'s click main in a child process where torch cannot be imported."""
    code = NO_TORCH + f"from {module} import main\nmain()"
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    if check:
        assert res.returncode == 0, res.stdout + res.stderr
    return res


def sets(overrides: dict) -> list[str]:
    return ["--config", "demo", "--device", "cpu"] + [a for k, v in overrides.items() if k != "device"
                                                      for a in ("--set", f"{k}={v}")]


def torch_weights(run_dir):
    last = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    return torch.load(last, weights_only=True)["learner"]["head"]["weights"].numpy()


def numpy_weights(run_dir):
    last = sorted((run_dir / "checkpoints").glob("*.npz"))[-1]
    with np.load(last, allow_pickle=False) as z:
        return z["weights"]


def assert_same_run(torch_dir, free_dir):
    a = json.loads((torch_dir / "metrics.json").read_text())["accuracy_matrix"]
    b = json.loads((free_dir / "metrics.json").read_text())["accuracy_matrix"]
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert all((x is None and y is None) or abs(x - y) <= 0.1 for x, y in zip(ra, rb)), (a, b)
    w0, w1 = torch_weights(torch_dir), numpy_weights(free_dir)
    assert w0.shape == w1.shape
    assert np.abs(w0 - w1).max() / np.abs(w0).max() < 1e-4


@pytest.mark.parametrize("order", ["auto", "seeded"])
def test_the_demo_without_torch_equals_the_pytorch_run(tmp_path, order):
    overrides = {**TINY, "data.class_order": order}
    R.run(load_config("demo", overrides), tmp_path / "torch")
    res = without_torch("stpr.train.cli", "--out", str(tmp_path / "free"), "--quiet", *sets(overrides))
    assert "without torch" in res.stdout
    assert not list((tmp_path / "free" / "checkpoints").glob("*.pt"))
    assert_same_run(tmp_path / "torch", tmp_path / "free")


def _folder_set(root, classes=("circle_moving_left", "circle_moving_right", "square_moving_up"), clips=6, frames=8):
    """ROOT/<class>/<clip>.avi from the synthetic renderer at 48 px (resized by the reader)."""
    data = SyntheticActions("train", clips_per_class=clips, image_size=48, seed=3, num_frames=frames)
    for name in classes:
        c = data.classes.index(name)
        (root / name).mkdir(parents=True)
        for j, i in enumerate([i for i, t in enumerate(data.targets) if t == c]):
            write_video(root / name / f"{j:02d}.avi", [data.raw_clip(i)])
    return root


def test_temporal_views_in_training_equal_the_pytorch_run_and_reach_the_bundle(tmp_path):
    """head.views 2 on clips of 2T frames: each training clip gives a row per view (its own
    first: the segment centres), read alike by the torch-free run and the PyTorch learner."""
    root = _folder_set(tmp_path / "data", frames=16)
    overrides = {**TINY, "data.dataset": "folder", "data.root": str(root), "data.protocol": "2+1x1",
                 "data.holdout": 0.34, "head.views": 2}
    R.run(load_config("demo", overrides), tmp_path / "torch")
    without_torch("stpr.train.cli", "--out", str(tmp_path / "free"), "--quiet", *sets(overrides))
    assert_same_run(tmp_path / "torch", tmp_path / "free")
    cfg = load_config("demo", overrides)
    train = build_splits(cfg.data, tower_of(cfg), cfg.seed).train_eval
    assert train.view_count(0, 2) == 2
    views = train.views(0, 2)
    assert len(views) == 2 and not np.array_equal(views[1], views[0])  # two offsets in each segment
    assert np.array_equal(train.views(0, 1)[0], train.clip(0))  # one view: the segment centres
    with np.load(sorted((tmp_path / "free" / "checkpoints").glob("*.npz"))[-1], allow_pickle=False) as z:
        assert z["counts"].sum() == 2 * len(train)  # two rows a clip
    without_torch("stpr.export.cli", str(tmp_path / "free"), "--out", str(tmp_path / "b"))
    b = load_bundle(tmp_path / "b")
    assert b.manifest["head"]["views"] == 2
    # the device reads the bundle's views (stpr-learn, the web app's uploads): a trained class's
    # column of C is the weighted sum of the device's rows of its training videos
    name = b.classes[0]
    paths = [p for p, y in train.samples if train.classes[y] == name]
    with Recognizer(b) as rec:
        rows = rows_of_clips(rec, paths)
    assert len(rows) == 2 * len(paths)
    cross = np.load(tmp_path / "b" / b.manifest["head"]["sums"]["cross"])[:, 0]
    w = b.manifest["head"]["sums"]["n_ref"] / len(rows)
    np.testing.assert_allclose(w * rows.astype(np.float64).sum(0), cross, atol=1e-4 * np.abs(cross).max())


def test_a_folder_set_without_torch_equals_the_pytorch_run(tmp_path):
    root = _folder_set(tmp_path / "data")
    overrides = {**TINY, "data.dataset": "folder", "data.root": str(root), "data.protocol": "2+1x1",
                 "data.holdout": 0.34}
    R.run(load_config("demo", overrides), tmp_path / "torch")
    without_torch("stpr.train.cli", "--out", str(tmp_path / "free"), "--quiet", *sets(overrides))
    assert_same_run(tmp_path / "torch", tmp_path / "free")


@pytest.fixture(scope="module")
def free_run(tmp_path_factory):
    """A torch-free run, resumed after its base task, and its bundle (written without torch)."""
    root = tmp_path_factory.mktemp("free")
    without_torch("stpr.train.cli", "--out", str(root / "run"), "--quiet", *sets(TINY))
    partial = root / "partial"
    partial.mkdir()
    (partial / "config.yaml").write_text((root / "run" / "config.yaml").read_text())
    (partial / "checkpoints").mkdir()
    first = root / "run" / "checkpoints" / "task_000.npz"
    (partial / "checkpoints" / first.name).write_bytes(first.read_bytes())
    without_torch("stpr.train.cli", "--resume", "--out", str(partial), "--quiet")
    without_torch("stpr.export.cli", str(root / "run"), "--out", str(root / "b0"))
    return root


def test_resume_without_torch_continues_to_the_same_head(free_run):
    full, resumed = (json.loads((free_run / d / "metrics.json").read_text()) for d in ("run", "partial"))
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert np.array_equal(numpy_weights(free_run / "run"), numpy_weights(free_run / "partial"))


def test_the_bundle_of_a_torch_free_run_is_head_only_and_serves_and_learns(free_run, tmp_path):
    b = load_bundle(free_run / "b0")
    m = b.manifest
    assert m["head_only"] is True and "experts" not in m and "backbone" not in m
    assert m["head"]["tower_file"] == "head_tower.onnx" and m["head"]["tower_io"]["pool"] == "none"
    assert np.array_equal(np.load(free_run / "b0" / "head_weights.npy"), numpy_weights(free_run / "run"))
    with Recognizer(b) as rec:  # what `stpr-run --watch` checks before it swaps a bundle in
        verify_recognizer(rec)
    test = SyntheticActions("test", clips_per_class=1, seed=5)
    clip = write_video(tmp_path / "clip.avi", [test.raw_clip(test.classes.index(m["classes"][0]))])
    res = without_torch("stpr.runtime.entry", "--bundle", str(free_run / "b0"), "--video", str(clip), "--clip")
    assert "analytic head (alone" in res.stdout + res.stderr
    write_frame_folders(tmp_path / "data", ["cross_moving_right", "cross_moving_left"], 5)  # never trained
    without_torch("stpr.runtime.cli.learn_cli", "--bundle", str(free_run / "b0"), "--out", str(tmp_path / "b1"),
                  "--data", str(tmp_path / "data"))
    b1 = load_bundle(tmp_path / "b1")
    assert b1.classes[-2:] == ["cross_moving_left", "cross_moving_right"] and b1.manifest["head_only"] is True
    # learning keeps `unknown`: the subspace is G's again, now with the learned clips in it
    assert b1.manifest["unknown"]["threshold"] == m["unknown"]["threshold"]
    assert b1.manifest["files"]["head_subspace.npy"] != m["files"]["head_subspace.npy"]


def test_the_torch_free_bundle_is_calibrated_to_say_unknown(free_run):
    """The head's open-set score and threshold, calibrated at export as the PyTorch export does:
    95 % of held-out known clips kept, never-trained classes ranked below them."""
    m = load_bundle(free_run / "b0").manifest
    report = json.loads((free_run / "b0" / "openset.json").read_text())
    assert m["unknown"]["score"] == report["score"] == "head_margin_mahalanobis"
    assert m["unknown"]["threshold"] == report["threshold"] and m["unknown"]["subspace"] == "head_subspace.npy"
    assert report["auroc"] > AUROC_FLOOR and report["unknown_clips"]["new_motion"] > 0
    # the device's own scores (stpr-run's Recognizer) on the calibration half keep 95 % of it
    cfg = load_config(free_run / "run" / "config.yaml")
    spec = load_bundle(free_run / "b0")
    clips = calibration_clips(cfg.data, spec, cfg.seed, m["classes"])
    assert len(clips.calib) == report["calibration_clips"]
    with Recognizer(spec) as rec:
        B, T = clips.calib.shape[:2]
        window = rec.frame_features(clips.calib.reshape(B * T, *clips.calib.shape[2:])).reshape(B, T, -1)
        fit = rec.classify(window)["unknown_score"]
    assert np.mean(fit >= m["unknown"]["threshold"]) >= report["target_tpr"]


def test_stpr_without_torch_is_refused_in_one_line_with_the_extra_it_needs(tmp_path):
    res = without_torch("stpr.train.cli", "--out", str(tmp_path / "r"), "--head", "none", "--quiet", check=False)
    lines = [s for s in res.stderr.splitlines() if s.strip()]
    assert res.returncode == 1 and len(lines) == 1 and "[train]" in lines[0], res.stderr
    assert not (tmp_path / "r").exists()
    res = without_torch("stpr.export.cli", str(tmp_path / "nothing"), "--out", str(tmp_path / "b"), check=False)
    assert res.returncode == 1 and "[export]" in res.stderr


def test_the_numpy_lambda_rule_is_the_pytorch_one():
    from stpr.train.analytic_fit import choose_lambda as torch_choose

    rng = np.random.default_rng(0)
    h = np.maximum(rng.standard_normal((60, 32)), 0).astype(np.float32)
    labels = np.repeat(np.arange(3), 20)
    w = np.ones(60)
    lam, rep = choose_lambda(h, labels, w, dim=32)
    lam_t, rep_t = torch_choose(torch.from_numpy(h).double(), torch.from_numpy(labels), torch.from_numpy(w), dim=32)
    assert rep["g"] == rep_t["g"] and abs(lam - lam_t) <= 1e-12 * lam_t
    assert np.allclose(rep["mse"], rep_t["mse"], rtol=1e-9)


def test_the_numpy_head_streams_to_the_pytorch_sums():
    from stpr.train.analytic_fit import AnalyticHead

    rng = np.random.default_rng(1)
    h = np.maximum(rng.standard_normal((40, 16)), 0).astype(np.float32)
    labels = np.array([0] * 10 + [1] * 20 + [2] * 10)
    ref = AnalyticHead(in_dim=4, dim=16, seed=0, ridge=0.5)
    ref.add_task(torch.from_numpy(h), torch.from_numpy(labels), 3)
    head = NumpyHead(in_dim=4, dim=16, seed=0, ridge=0.5)
    head.begin_task(labels, 3)
    for s in range(0, 40, 7):  # batches that cut across classes
        head.add_rows(h[s:s + 7], labels[s:s + 7])
    head.end_task()
    assert np.allclose(head.gram, ref.gram.numpy(), rtol=1e-12) and np.allclose(head.cross, ref.cross.numpy())
    assert np.abs(head.weights - ref.weights.numpy()).max() <= 1e-5 * np.abs(head.weights).max()


def test_crop_rows_follow_their_clip_and_leave_the_lambda_rule_alike_in_both_fits(tmp_path):
    """head.crops: each clip's crop rows carry its key and stay out of the lambda rule's split,
    in the PyTorch fit and its NumPy twin alike: the same g, lambda and holdout errors as the
    rule on the clips' own rows alone, tr(G) of every row."""
    from stpr.train.analytic_fit import AnalyticHead
    from stpr.train.analytic_fit import choose_lambda as torch_choose

    rng = np.random.default_rng(2)
    own = np.maximum(rng.standard_normal((48, 24)), 0).astype(np.float32)
    crops = (own[None] + 0.3 * np.maximum(rng.standard_normal((2, 48, 24)), 0)).astype(np.float32).reshape(96, 24)
    clip_labels, clip_keys = np.repeat(np.arange(3), 16), rng.integers(0, 2 ** 32, 48)
    h = np.concatenate([own, crops])
    labels, keys = np.tile(clip_labels, 3), np.tile(clip_keys, 3)
    primary = np.arange(len(h)) < 48
    perm = rng.permutation(len(h))  # crops interleaved with the clips, as batches give them
    h, labels, keys, primary = h[perm], labels[perm], keys[perm], primary[perm]

    ref = AnalyticHead(in_dim=4, dim=24, seed=0)
    ref.add_task(torch.from_numpy(h), torch.from_numpy(labels), 3, torch.from_numpy(keys), torch.from_numpy(primary))
    head = NumpyHead(in_dim=4, dim=24, seed=0)
    head.begin_task(labels, 3, spill=tmp_path / "spill.npy")
    for s in range(0, len(h), 13):
        head.add_rows(h[s:s + 13], labels[s:s + 13], keys[s:s + 13], primary[s:s + 13])
    head.end_task()
    assert head.lambda_report["g"] == ref.lambda_report["g"] and abs(head.lam - ref.lam) <= 1e-9 * ref.lam
    assert np.allclose(head.lambda_report["mse"], ref.lambda_report["mse"], rtol=1e-9)
    assert ref.lambda_report["fit_clips"] + ref.lambda_report["holdout_clips"] == 48  # the clips, not their crops
    assert head.lambda_report["holdout_clips"] == ref.lambda_report["holdout_clips"] == 12

    w = head.clip_weights(labels)
    alone, rep = choose_lambda(own, clip_labels, head.clip_weights(clip_labels), clip_keys, dim=24)
    assert rep["g"] == head.lambda_report["g"] and rep["mse"] == pytest.approx(head.lambda_report["mse"], rel=1e-9)
    trace = float((h.astype(np.float64) ** 2 * w[:, None]).sum())
    assert head.lam == pytest.approx(rep["g"] * trace / 24, rel=1e-12)  # tr(G) of the crops too
    lam_t, rep_t = torch_choose(torch.from_numpy(own).double(), torch.from_numpy(clip_labels),
                                torch.from_numpy(head.clip_weights(clip_labels)), torch.from_numpy(clip_keys), dim=24)
    assert rep_t["g"] == rep["g"] and lam_t == pytest.approx(alone, rel=1e-12)


def test_crops_without_torch_equal_the_pytorch_run_and_reach_the_bundle(tmp_path):
    """head.crops corners: the crop rows of every training clip, by the device's crop function,
    in the torch-free run as in the PyTorch learner (same accuracy matrix, W within 1e-4)."""
    overrides = {**TINY, "head.crops": "corners", "data.protocol": "4+4x1"}
    R.run(load_config("demo", overrides), tmp_path / "torch")
    without_torch("stpr.train.cli", "--out", str(tmp_path / "free"), "--quiet", *sets(overrides))
    assert_same_run(tmp_path / "torch", tmp_path / "free")
    with np.load(sorted((tmp_path / "free" / "checkpoints").glob("*.npz"))[-1], allow_pickle=False) as z:
        clips = len(SyntheticActions("train", clips_per_class=8, seed=0).targets) // 20 * 8  # 8 classes trained
        assert z["counts"].sum() == 5 * clips  # the frame and its four corners: five rows a clip
    without_torch("stpr.export.cli", str(tmp_path / "free"), "--out", str(tmp_path / "b"))
    assert load_bundle(tmp_path / "b").manifest["head"]["crops"] == "corners"  # stpr-learn reads crops too


@pytest.mark.parametrize("edit,words", [
    (lambda m: m["head"].update(mode="route-hard"), "head_only is true but head.mode"),
    (lambda m: m.update(experts=[]), "head_only is true but the manifest has StPR's experts"),
    (lambda m: m["head"]["tower_io"].update(pool="max"), "head.tower_io"),
    # not true: a head-alone StPR bundle's keys (its experts and backbone files may be left out: STPR_FILE_KEYS)
    (lambda m: m.update(head_only="yes"), "lacks routing, logit_scale, text_embeddings, anchors"),
])
def test_a_damaged_head_only_manifest_is_refused_naming_the_field(free_run, tmp_path, edit, words):
    import shutil

    from stpr.runtime.bundle.manifest import BundleError, seal_manifest

    shutil.copytree(free_run / "b0", tmp_path / "b")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    edit(m)
    m.pop("manifest_sha256")
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(seal_manifest(m)))
    with pytest.raises(BundleError, match=words.replace("(", r"\(")):
        load_bundle(tmp_path / "b")


def test_serve_teaches_a_head_only_bundle(free_run, tmp_path):
    """`stpr-run --serve` on the bundle of a torch-free run: status, and a class taught live."""
    from serve_helpers import Served

    test = SyntheticActions("test", clips_per_class=2, seed=4)
    c = test.classes.index("cross_moving_right")
    source = write_video(tmp_path / "src.avi", [test.raw_clip(i) for i, t in enumerate(test.targets) if t == c])
    with Served(["--bundle", free_run / "b0", "--video", source, "--loop"]) as s:
        status, body = s.get("/api/status")
        assert status == 200 and body["bundle"]["experts"] == 0
        assert {c["origin"] for c in body["bundle"]["classes"]} == {"trained"}
        status, job = s.post("/api/learn", {"name": "cross right", "windows": 4})
        assert status == 202, job
        assert s.wait_job(job["job"])["state"] == "done"
        classes = {c["name"]: c["origin"] for c in s.get("/api/status")[1]["bundle"]["classes"]}
        assert classes["cross right"] == "device"


def test_a_torch_free_export_without_readable_data_has_no_threshold(free_run, tmp_path, monkeypatch):
    from stpr.export import calibrate
    from stpr.export.head_only import export_head_run

    def unreadable(*a, **k):
        raise OSError("no dataset on this machine")

    monkeypatch.setattr(calibrate, "build_splits", unreadable)
    res = export_head_run(free_run / "run", tmp_path / "b")
    m = load_bundle(tmp_path / "b").manifest
    assert res["openset"] is None and "unknown" not in m and "openset.json" not in m["files"]
    assert load_bundle(tmp_path / "b").unknown is None  # a valid bundle that never says unknown
