"""stpr-learn --merge: bundles learned on separate devices from one base become the head of all their clips."""
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import fast_config, resealed_copy

from stpr.export import export_run
from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.bundle.manifest import sha256_file
from stpr.runtime.cli.learn_cli import main as learn_main
from stpr.runtime.engine.recognizer import Recognizer
from stpr.runtime.learn.learn_bundle import learn
from stpr.runtime.learn.learn_clips import clip_rows
from stpr.runtime.learn.learn_merge import merge, write_delta
from stpr.train import run as R
from stpr.train.data.synthetic import SyntheticActions

NEW = ["cross_moving_right", "cross_moving_left"]  # classes the run never trained (4+4x2 trains 12 of 20)
TORCHLESS = "import sys; sys.modules['torch'] = None\nfrom stpr.runtime.cli.learn_cli import main\nmain()"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A base bundle, real head rows of two never-trained classes and one trained class, and
    three devices' bundles learned from the base (the third in two steps):
    d1: new0 x4 + trained x2;  d2: new0 x4 + new1 x4;  d3: new1 x4, then new1 x2 more."""
    root = tmp_path_factory.mktemp("fleet")
    R.run(fast_config(**{"head.mode": "alone", "head.dim": 512}), root / "run")
    export_run(root / "run", root / "b0")
    b0 = load_bundle(root / "b0")
    trained = b0.classes[0]
    train = SyntheticActions("train", clips_per_class=10, seed=0)
    rows = {}
    with Recognizer(b0) as rec:
        for name in [*NEW, trained]:
            c = train.classes.index(name)
            clips = [train.raw_clip(i) for i, t in enumerate(train.targets) if t == c]
            rows[name] = np.concatenate([clip_rows(rec, [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in clip])
                                         for clip in clips])
    new0, new1 = rows[NEW[0]], rows[NEW[1]]
    learn(root / "b0", root / "d1", {NEW[0]: new0[:4], trained: rows[trained][:2]}, [])
    learn(root / "b0", root / "d2", {NEW[0]: new0[4:8], NEW[1]: new1[:4]}, [])
    learn(root / "b0", root / "d3a", {NEW[1]: new1[4:8]}, [])
    learn(root / "d3a", root / "d3", {NEW[1]: new1[8:10]}, [], min_clips=1)
    # what one device would have learned from every clip of the three
    learn(root / "b0", root / "one", {trained: rows[trained][:2], NEW[0]: new0[:8], NEW[1]: new1[:10]}, [])
    return root, rows, trained


def _weights(bundle):
    """class name -> its column of W (float64)."""
    m = json.loads((bundle / "manifest.json").read_text())
    w = np.load(bundle / m["head"]["weights"], allow_pickle=False).astype(np.float64)
    return {c: w[:, i] for i, c in enumerate(m["classes"])}


def _rows(bundle):
    """The learned rows a bundle holds, in its order."""
    m = json.loads((bundle / "manifest.json").read_text())
    return np.load(bundle / m["head"]["learned"]["rows"], allow_pickle=False)


def _assert_same_head(a, b, tol=1e-6):
    wa, wb = _weights(a), _weights(b)
    assert sorted(wa) == sorted(wb)
    scale = max(np.abs(v).max() for v in wb.values())
    gap = max(np.abs(wa[c] - wb[c]).max() for c in wb) / scale
    assert gap <= tol, gap


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(*args):
    res = CliRunner().invoke(learn_main, [str(a) for a in args])
    return res, [line for line in res.output.splitlines() if line.strip()]


def test_merge_equals_learning_every_clip_in_one_place_in_any_order(fleet, tmp_path):
    root, _, trained = fleet
    for i, order in enumerate([("d1", "d2", "d3"), ("d3", "d1", "d2"), ("d2", "d3", "d1")]):
        res, _ = _cli("--bundle", root / "b0", "--out", tmp_path / f"m{i}", "--merge", *[root / d for d in order])
        assert res.exit_code == 0, res.output
        _assert_same_head(tmp_path / f"m{i}", root / "one")
    m = json.loads((tmp_path / "m0" / "manifest.json").read_text())
    # a class learned on two devices is one class with both devices' clips; a trained class keeps its place
    assert m["head"]["learned"]["classes"] == [trained, *sorted(NEW)]
    pooled = {trained: 2, NEW[0]: 8, NEW[1]: 10}
    assert m["head"]["learned"]["clips"] == [pooled[c] for c in m["head"]["learned"]["classes"]]
    assert m["classes"] == load_bundle(root / "b0").classes + sorted(NEW)
    entry = m["lineage"][-1]
    assert entry["from_manifest_sha256"] == json.loads((root / "b0" / "manifest.json").read_text())["manifest_sha256"]
    assert sorted(sum(e["added"].values()) for e in entry["merged"]) == [6, 6, 8]
    # the inputs' order does not change a byte of the head
    assert _snapshot(tmp_path / "m0")["head_weights.npy"] == _snapshot(tmp_path / "m1")["head_weights.npy"]
    load_bundle(tmp_path / "m0")


def test_head_deltas_alone_merge_to_the_same_bundle_without_torch(fleet, tmp_path):
    root, _, _ = fleet
    for d in ("d1", "d2", "d3"):
        res, lines = _cli("--bundle", root / d, "--out", tmp_path / f"ship_{d}", "--delta")
        assert res.exit_code == 0, res.output
        files = sorted(p.name for p in (tmp_path / f"ship_{d}").iterdir())
        assert files == ["head_learned_rows.npy", "manifest.json"]  # no tower, no sums: a few hundred kB at most
        assert (tmp_path / f"ship_{d}" / "manifest.json").read_bytes() == (root / d / "manifest.json").read_bytes()
    args = ["--bundle", root / "b0", "--out", tmp_path / "merged", "--merge",
            *[tmp_path / f"ship_{d}" for d in ("d2", "d1", "d3")]]
    proc = subprocess.run([sys.executable, "-c", TORCHLESS, *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    _assert_same_head(tmp_path / "merged", root / "one")
    # the merged bundle's own delta rebuilds it from the base: the round trip back to every device
    write_delta(tmp_path / "merged", tmp_path / "ship_merged")
    merge(root / "b0", tmp_path / "again", [tmp_path / "ship_merged"], [])
    # the pooled rows come back bit for bit; W is a float solve of them, equal to its rounding
    # (BLAS may sum in another order on another machine or alignment, so not bit for bit)
    assert np.array_equal(_rows(tmp_path / "again"), _rows(tmp_path / "merged"))
    _assert_same_head(tmp_path / "again", tmp_path / "merged", tol=1e-6)


def test_removal_after_a_merge_is_exact_for_device_learned_classes(fleet, tmp_path):
    root, rows, trained = fleet
    merge(root / "b0", tmp_path / "merged", [root / "d1", root / "d2", root / "d3"], [])
    learn(tmp_path / "merged", tmp_path / "less", {}, [NEW[0]])
    learn(root / "b0", tmp_path / "never", {trained: rows[trained][:2], NEW[1]: rows[NEW[1]][:10]}, [])
    _assert_same_head(tmp_path / "less", tmp_path / "never")
    # --remove in the merge itself gives the same
    merge(root / "b0", tmp_path / "merged_less", [root / "d1", root / "d2", root / "d3"], [NEW[0]])
    _assert_same_head(tmp_path / "merged_less", tmp_path / "never")


def _bad_merges(root, tmp):
    """(name, arguments after --out, words the one-line error must hold) for each refusal."""
    run = root / "run"
    rows = np.load(root / "d1" / "head_learned_rows.npy")[:4]
    export_run(run, tmp / "b0_again")  # the same run exported again: its ONNX files hash differently
    learn(tmp / "b0_again", tmp / "re_exported", {NEW[0]: rows}, [])
    # a base with the very same files and sums but another manifest: only its lineage tells
    resealed_copy(root / "b0", tmp / "b0_twin", lambda m: m["source"].__setitem__("run_dir", "/elsewhere"))
    learn(tmp / "b0_twin", tmp / "other_base", {NEW[0]: rows}, [])
    shutil.copytree(root / "d1", tmp / "d1_copy")
    tampered = shutil.copytree(root / "d2", tmp / "tampered")
    rows = np.load(tampered / "head_learned_rows.npy")
    np.save(tampered / "head_learned_rows.npy", rows * 1.01)
    learn(root / "d1", tmp / "d1_more", {NEW[1]: np.load(root / "d2" / "head_learned_rows.npy")[4:8] * 2}, [])
    lam = resealed_copy(root / "d1", tmp / "lam", lambda m: m["head"].__setitem__("lambda", m["head"]["lambda"] * 10))
    proj = resealed_copy(root / "d1", tmp / "proj", lambda m: m["head"]["projection"].__setitem__("seed", 7))
    tower = resealed_copy(root / "d1", tmp / "tower",
                    lambda m: m["files"].__setitem__(m["head"]["tower_file"], "0" * 64))
    b0, d1, d2 = root / "b0", root / "d1", root / "d2"
    return [
        ("the same bundle twice", [b0, "--merge", d1, d2, d1], "twice"),
        ("a copy of one", [b0, "--merge", d1, tmp / "d1_copy"], "twice"),
        ("another base", [b0, "--merge", d1, tmp / "other_base"], "another base"),
        ("another export", [b0, "--merge", d1, tmp / "re_exported"], "head tower differs"),
        ("another lambda", [b0, "--merge", d2, lam], "lambda"),
        ("another projection", [b0, "--merge", d2, proj], "projection"),
        ("another tower", [b0, "--merge", d2, tower], "tower"),
        ("tampered rows", [b0, "--merge", d1, tampered], "sha256"),
        ("one inside another", [b0, "--merge", d1, tmp / "d1_more"], "same learned clip"),
        ("learned nothing", [b0, "--merge", d1, b0], "learned no class"),
        ("with --add", [b0, "--merge", d1, d2, "--add", "x"], "merge first"),
        ("no bundles", [b0, "--merge"], "needs the bundles"),
    ]


def test_bad_merges_get_one_line_and_nothing_already_written_is_lost(fleet, tmp_path):
    root, _, _ = fleet
    before = {d: _snapshot(root / d) for d in ("b0", "d1", "d2")}
    for name, args, words in _bad_merges(root, tmp_path):
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        res, lines = _cli("--bundle", args[0], "--out", out, *args[1:])
        assert res.exit_code == 1, (name, res.output)
        assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], (name, res.output)
        assert not out.exists(), name
    # a bundle already in --out stays as it was, without --force
    kept = shutil.copytree(root / "d2", tmp_path / "kept")
    res, lines = _cli("--bundle", root / "b0", "--out", kept, "--merge", root / "d1", root / "d3")
    assert res.exit_code == 1 and "--force" in lines[0] and _snapshot(kept) == _snapshot(root / "d2")
    assert {d: _snapshot(root / d) for d in ("b0", "d1", "d2")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
