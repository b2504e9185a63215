"""stpr-learn: classes learned on the device, exactly as the training side would solve them, torch-free."""
import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import fast_config, resealed_copy, write_frame_folders, write_video
from test_hot_swap import _read, _stream_publishing

from stpr.export import export_run
from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.bundle.manifest import BundleError, sha256_file, verify_bundle
from stpr.runtime.bundle.publish import publish
from stpr.runtime.cli.learn_cli import main as learn_main
from stpr.runtime.engine.recognizer import Recognizer
from stpr.runtime.learn.learn_bundle import head_bundle, learn
from stpr.runtime.model.head_sums import LEARNED_EXPERT
from stpr.runtime.model.preprocess import preprocess
from stpr.train import run as R
from stpr.train.analytic_fit import AnalyticHead
from stpr.train.data.synthetic import SyntheticActions
from stpr.train.restore import restore

NEW = ["cross_moving_right", "cross_moving_left"]  # classes the run never trained (4+4x2 trains 12 of 20)


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A head-alone run and its bundle, the never-trained classes' clips as frame folders
    (`data/<class>/<clip>/`), and a bundle that learned them from 6 clips each."""
    root = tmp_path_factory.mktemp("learn")
    R.run(fast_config(**{"head.mode": "alone", "head.dim": 512}), root / "run")
    export_run(root / "run", root / "b0")
    export_run(root / "run", root / "b0_stpr", stpr_files=True)  # StPR's files too: a head can be stripped off
    write_frame_folders(root / "data", NEW, 6)
    res = CliRunner().invoke(learn_main, ["--bundle", str(root / "b0"), "--out", str(root / "b1"),
                                          "--data", str(root / "data")])
    assert res.exit_code == 0, res.output
    return root


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _probs(bundle, clips):
    b = load_bundle(bundle)
    with Recognizer(b) as rec:
        return np.concatenate([rec.classify(rec.frame_features(np.stack(
            [preprocess(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), b.size, b.mean, b.std) for f in clip]))[None])["probs"]
            for clip in clips])


def _test_clips(n=12):
    test = SyntheticActions("test", clips_per_class=1, seed=5)
    return [test.raw_clip(i) for i in range(n)]


def test_device_solve_equals_the_training_side_solve(learned):
    m = json.loads((learned / "b1" / "manifest.json").read_text())
    assert m["classes"][-2:] == sorted(NEW) and m["dims"]["C"] == 14
    assert m["class_to_expert"][-2:] == [LEARNED_EXPERT] * 2
    assert m["head"]["learned"] == {"rows": "head_learned_rows.npy", "classes": sorted(NEW), "clips": [6, 6]}
    rows = np.load(learned / "b1" / "head_learned_rows.npy", allow_pickle=False)
    # the device's rows are the training tower's features of the same clips
    train = SyntheticActions("train", clips_per_class=8, seed=0)
    r = restore(learned / "run")
    idx = [i for i, t in enumerate(train.targets) if train.classes[t] == sorted(NEW)[0]][:6]
    with torch.no_grad():
        x = torch.stack([train[i][0] for i in idx])
        ref = r.learner.head.features(r.learner.model.frame_features(x, adapters=False).float()).numpy()
    np.testing.assert_allclose(rows[:6], ref, atol=1e-4)
    # and the solve is training's: the sums plus one new task of these rows
    head = AnalyticHead.from_state(r.learner.head.state_dict())
    head.add_task(torch.from_numpy(rows), torch.tensor([12] * 6 + [13] * 6), 14)
    w = np.load(learned / "b1" / "head_weights.npy", allow_pickle=False)
    assert np.abs(w - head.weights.numpy()).max() <= 1e-5 * np.abs(head.weights.numpy()).max()
    assert m["lineage"][-1]["added"] == {n: 6 for n in sorted(NEW)}
    parity = json.loads((learned / "b1" / "parity.json").read_text())["learned"]
    assert parity["sums_reproduce_shipped_weights"]["max_rel_diff"] <= 1e-4


def test_add_then_remove_returns_the_original_predictions(learned, tmp_path):
    before = _snapshot(learned / "b1")
    report = learn(learned / "b1", tmp_path / "b2", {}, sorted(NEW))
    assert report.removed == sorted(NEW) and _snapshot(learned / "b1") == before  # never edited in place
    clips = _test_clips()
    p0, p2 = _probs(learned / "b0", clips), _probs(tmp_path / "b2", clips)
    np.testing.assert_allclose(p2, p0, atol=1e-5)
    assert load_bundle(tmp_path / "b2").classes == load_bundle(learned / "b0").classes
    assert "learned" not in json.loads((tmp_path / "b2" / "manifest.json").read_text())["head"]


def test_more_examples_of_a_learned_class_equal_learning_them_at_once(learned, tmp_path):
    _, sums = head_bundle(learned / "b1")
    c = load_bundle(learned / "b1").classes.index(NEW[0])
    rows = sums.rows[c]
    learn(learned / "b0", tmp_path / "a", {NEW[0]: rows[:4]}, [])
    learn(tmp_path / "a", tmp_path / "b", {NEW[0]: rows[4:]}, [])  # --add to an existing (learned) class
    learn(learned / "b0", tmp_path / "c", {NEW[0]: rows}, [])
    wb = np.load(tmp_path / "b" / "head_weights.npy")
    wc = np.load(tmp_path / "c" / "head_weights.npy")
    np.testing.assert_allclose(wb, wc, atol=1e-5 * np.abs(wc).max())


def test_removing_a_trained_class_leaves_the_others_scores_as_they_were(learned, tmp_path):
    b0 = load_bundle(learned / "b0")
    learn(learned / "b0", tmp_path / "less", {}, [b0.classes[0]])
    w0 = np.load(learned / "b0" / "head_weights.npy")
    w = np.load(tmp_path / "less" / "head_weights.npy")
    np.testing.assert_allclose(w, w0[:, 1:], atol=1e-6 * np.abs(w0).max())  # columns of one solve


def test_learned_classes_are_recognised(learned):
    test = SyntheticActions("test", clips_per_class=4, seed=0)
    clips = [(test.raw_clip(i), test.classes[t]) for i, t in enumerate(test.targets) if test.classes[t] in NEW]
    names = load_bundle(learned / "b1").classes
    pred = _probs(learned / "b1", [c for c, _ in clips]).argmax(1)
    assert np.mean([names[p] == y for p, (_, y) in zip(pred, clips)]) >= 0.5  # chance is 1/14


def _strip(src, dst, edit):
    """A copy of bundle `src` with its manifest edited by `edit` and resealed: a valid bundle otherwise."""
    resealed_copy(src, dst, edit)
    verify_bundle(dst)
    return dst


def _bad_inputs(root, tmp):
    """(name, arguments, words the one-line error must hold) for each refusal."""
    (tmp / "junk.mp4").write_bytes(os.urandom(4096))
    short = write_video(tmp / "short.avi", [SyntheticActions("test", clips_per_class=1, num_frames=3)
                                            .raw_clip(0)])
    clips = sorted(str(p) for p in (root / "data" / NEW[0]).iterdir())
    dup = tmp / "dup"
    for name in ("wave_hello", "Wave-Hello"):
        (dup / name).mkdir(parents=True)
        (dup / name / "clip").symlink_to(root / "data" / NEW[0] / "00")
    no_head = _strip(root / "b0_stpr", tmp / "nohead", lambda m: [m.pop("head"), m.pop("unknown", None)])
    no_sums = _strip(root / "b0", tmp / "nosums", lambda m: m["head"].pop("sums"))
    b0 = str(root / "b0")
    return [
        ("no frame", ["--bundle", b0, "--add", "x", str(tmp / "junk.mp4"), *clips], "junk.mp4"),
        ("too short", ["--bundle", b0, "--add", "x", str(short), *clips], "fewer than the T=8"),
        ("too few clips", ["--bundle", b0, "--add", "x", *clips[:3]], "at least 4"),
        ("empty name", ["--bundle", b0, "--add", "  ", *clips], "empty"),
        ("duplicate name", ["--bundle", b0, "--data", str(dup)], "give each class once"),
        ("name of a class", ["--bundle", b0, "--add", "Circle Moving Right", *clips], "circle_moving_right"),
        ("unknown removal", ["--bundle", b0, "--remove", "nope"], "no such class"),
        ("no head", ["--bundle", str(no_head), "--add", "x", *clips], "no analytic head"),
        ("no sums", ["--bundle", str(no_sums), "--add", "x", *clips], "no head sums"),
    ]


def test_bad_input_gets_one_line_and_nothing_is_written(learned, tmp_path):
    before = _snapshot(learned / "b0")
    for name, args, words in _bad_inputs(learned, tmp_path):
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        res = CliRunner().invoke(learn_main, [*args, "--out", str(out)])
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 1, (name, res.output)
        assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], (name, res.output)
        assert not out.exists(), name
    assert _snapshot(learned / "b0") == before
    assert not [p for p in learned.iterdir() if p.name.startswith(".tmp-")]


KILLED = """
import os, signal, sys
sys.modules["torch"] = None
import stpr.runtime.learn.learn_bundle as L
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)  # the power goes off mid-write
L.save_sums = die
from stpr.runtime.cli.learn_cli import main
main()
"""

TORCHLESS = "import sys; sys.modules['torch'] = None\nfrom stpr.runtime.cli.learn_cli import main\nmain()"


def test_a_run_killed_mid_way_leaves_the_old_bundle_serving(learned, tmp_path):
    before = _snapshot(learned / "b0")
    args = ["--bundle", str(learned / "b0"), "--out", str(tmp_path / "new"), "--data", str(learned / "data")]
    proc = subprocess.run([sys.executable, "-c", KILLED, *args], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert _snapshot(learned / "b0") == before
    load_bundle(learned / "b0")
    # the next run (torch blocked, as on a device) succeeds and clears what the killed one left
    proc = subprocess.run([sys.executable, "-c", TORCHLESS, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert load_bundle(tmp_path / "new").classes[-2:] == sorted(NEW)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_watch_picks_up_a_bundle_published_by_stpr_learn_without_a_gap(learned, tmp_path, monkeypatch):
    link = publish(learned / "b0", tmp_path / "current")
    test = SyntheticActions("test", clips_per_class=4, seed=0)
    video = write_video(tmp_path / "v.avi", [test.raw_clip(i) for i in (0, 4, 8, 12)])

    def learn_and_publish(_new, link):
        res = CliRunner().invoke(learn_main, ["--bundle", str(learned / "b0"), "--out", str(tmp_path / "b1"),
                                              "--data", str(learned / "data"), "--publish", str(link)])
        assert res.exit_code == 0, res.output

    events = tmp_path / "ev.jsonl"
    res = _stream_publishing(monkeypatch, link, None, video, events, publish_with=learn_and_publish)
    assert res.exit_code == 0, res.output
    predictions, swaps = _read(events)
    assert [e["frame"] for e in predictions] == list(range(7, 32))  # one per step, no gap
    assert len(swaps) == 1 and swaps[0]["classes"] == 14 and swaps[0]["bundle"].endswith("b1")


def test_learn_refuses_to_edit_a_bundle_in_place_or_overwrite_one(learned, tmp_path):
    with pytest.raises(ValueError, match="never edited in place"):
        learn(learned / "b1", learned / "b1", {}, [NEW[0]])
    with pytest.raises(BundleError, match="--force"):
        learn(learned / "b1", learned / "b0", {}, [NEW[0]])


def test_class_learned_on_the_device_is_refused_outside_the_head_alone(learned, tmp_path):
    def route(m):
        m["head"]["mode"] = "route-soft"
        # a route mode needs StPR's files, which a head-alone bundle does not ship: named, the field
        # checks run and report the learned class too
        m["backbone"], m["experts"] = "backbone.onnx", [f"expert_{k}.onnx" for k in range(m["dims"]["K"])]

    with pytest.raises(BundleError, match="class learned on the device|expert indices"):
        _strip(learned / "b1", tmp_path / "routed", route)


def test_live_session_records_learns_and_swaps_in_the_new_class(learned, tmp_path, monkeypatch, caplog):
    import logging

    from stpr.runtime.cli import run_cli, run_source
    from stpr.runtime.io.overlay import draw_overlay

    train = SyntheticActions("train", clips_per_class=8, seed=0)
    c = train.classes.index(NEW[0])
    video = write_video(tmp_path / "v.avi", [train.raw_clip(i) for i, t in enumerate(train.targets) if t == c])
    original = run_source.stream

    def stream(rec, frames, **kw):  # hold the stream after the 4th window until the new bundle is offered
        def gen():
            for index, frame in frames:
                yield index, frame
                if index == 40:
                    while not kw["watcher"].has_offer and kw["learner"].state != "failed":
                        pass
        return original(rec, gen(), **kw)

    monkeypatch.setattr(run_source, "stream", stream)
    monkeypatch.setattr(logging.getLogger("stpr"), "propagate", True)  # a CLI test before may have cut it
    caplog.set_level(logging.INFO, logger="stpr")
    events, out = tmp_path / "ev.jsonl", tmp_path / "learned"
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(learned / "b0"), "--video", str(video), "--headless",
                                            "--learn", "wave", "--learn-after", "0", "--learn-windows", "4",
                                            "--jsonl", str(events), "--learn-out", str(out)])
    assert res.exit_code == 0, res.output
    predictions, swaps = _read(events)
    assert [e["frame"] for e in predictions] == list(range(7, 64))  # no gap while learning or swapping
    states = [(e["frame"], e["learning"]["state"], e["learning"]["recorded"]) for e in predictions]
    assert states[0] == (7, "recording", 1) and (31, "learning", 4) in states  # every T = 8 frames, 4 windows
    assert len(swaps) == 1 and swaps[0]["classes"] == 13 and swaps[0]["bundle"] == str(out)
    assert all(len(e["top"]) == 3 for e in predictions) and predictions[-1]["learning"]["state"] == "done"
    said = {r.getMessage().split(" ")[0]: r.levelname for r in caplog.records if r.name.startswith("stpr.runtime")}
    # what went well is information, not a warning
    assert said["recording"] == said["learned"] == said["swapped"] == "INFO", said
    m = json.loads((out / "manifest.json").read_text())
    assert m["classes"][-1] == "wave" and m["head"]["learned"]["clips"] == [4]
    frame = np.zeros((240, 320, 3), np.uint8)
    def red(img):
        b, g, r = (img[..., i].astype(int) for i in range(3))
        return int(((r > 150) & (g < 60) & (b < 60)).sum())

    assert red(draw_overlay(frame, predictions[0], 10.0)) > 20  # the red REC line
    waiting = {**predictions[0], "learning": {**predictions[0]["learning"], "state": "waiting"}}
    assert red(draw_overlay(frame, waiting, 10.0)) == 0


def test_live_session_refusals(learned, tmp_path):
    from stpr.runtime.cli import run_cli

    video = write_video(tmp_path / "v.avi", [SyntheticActions("test", clips_per_class=1).raw_clip(0)])
    base = ["--bundle", str(learned / "b0"), "--video", str(video), "--learn", "wave"]
    for extra, words in ((["--headless"], "--learn-after"), (["--headless", "--learn-after", "0", "--clip"], "--clip"),
                         (["--headless", "--learn-after", "0", "--learn-windows", "2"], "at least 4")):
        res = CliRunner().invoke(run_cli.main, [*base, *extra])
        assert res.exit_code == 2 and words in res.output, res.output


def test_float32_sums_are_refused_where_rounding_moves_the_solve():
    from stpr.export.head_only import check_stored_sums as _check_stored_sums
    from stpr.runtime.model.head_sums import HeadSums
    from stpr.train.errors import StprError

    rng = np.random.default_rng(0)
    h = rng.standard_normal((40, 256))  # 40 clips in 256 dimensions: G is singular
    gram, cross = h.T @ h, h.T @ np.eye(4)[rng.integers(0, 4, 40)]

    def sums(lam):
        return HeadSums(gram=gram, cross=cross, counts=np.full(4, 10.0), n_ref=10.0, lam=lam, balance="weight",
                        dtype="float32")

    _check_stored_sums(sums(1.0))  # a lambda well above float32's rounding of G: kept
    with pytest.raises(StprError, match="use --head-sums float64"):
        _check_stored_sums(sums(1e-9))


@pytest.mark.parametrize("balance", ["weight", "none"])
def test_device_sums_follow_the_training_balance_rule_on_uneven_classes(balance):
    from stpr.runtime.model.head_sums import HeadSums

    rng = np.random.default_rng(1)
    M = 64
    head = AnalyticHead(in_dim=8, dim=M, seed=0, balance=balance, ridge=0.5)
    counts = [12, 5, 9]  # an uneven base task
    h = torch.from_numpy(rng.random((sum(counts), M)))
    head.add_task(h, torch.tensor(np.repeat(np.arange(3), counts)), 3)
    sums = HeadSums(gram=head.gram.numpy().copy(), cross=head.cross.numpy().copy(), counts=head.counts.numpy().copy(),
                    n_ref=head.n_ref,
                    lam=head.lam, balance=balance, dtype="float64")
    new = rng.random((4, M)).astype(np.float32)
    sums.add_rows(sums.add_class(), new)
    head.add_task(torch.from_numpy(new.astype(np.float64)), torch.tensor([3] * 4), 4)
    np.testing.assert_allclose(sums.solve(), head.weights.numpy(), atol=1e-5 * float(head.weights.abs().max()))
    if balance == "weight":  # 4 clips against n_ref = 26 / 3: each weighs n_ref / 4, the class as much as any
        assert sums.row_weight(3) == pytest.approx(head.n_ref / 4)


def test_live_session_runs_with_torch_absent(learned, tmp_path):
    train = SyntheticActions("train", clips_per_class=8, seed=0)
    c = train.classes.index(NEW[1])
    video = write_video(tmp_path / "v.avi", [train.raw_clip(i) for i, t in enumerate(train.targets) if t == c])
    code = ("import sys; sys.modules['torch'] = None\nfrom stpr.runtime.cli.run_cli import main\nmain()")
    args = ["--bundle", str(learned / "b0"), "--video", str(video), "--headless", "--learn", "wave",
            "--learn-after", "0", "--learn-windows", "4", "--learn-out", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_bundle(tmp_path / "out").classes[-1] == "wave"  # written before stpr-run exited


def test_the_exported_td_calibration_is_what_the_runtime_unpacks(learned):
    m = restore(learned / "run").learner.model
    cal = load_bundle(learned / "b0").calibration  # routing td: packed by the export, unpacked by the contract
    for name, ref in (("center", m.td_center), ("var", m.td_var), ("score_mean", m.td_score_mean),
                      ("score_std", m.td_score_std)):
        np.testing.assert_allclose(cal[name], ref.numpy(), rtol=1e-6, atol=1e-6)


def test_any_field_naming_a_bundle_file_must_list_it(learned, tmp_path):
    """A new bundle file needs no check of its own: its field is checked by its ending."""
    import shutil

    def named(m, listed):
        m.setdefault("extra", {})["thing"] = "extra_thing.npy"
        if listed:
            m["files"]["extra_thing.npy"] = sha256_file(learned / "b0" / "head_weights.npy")

    with pytest.raises(BundleError, match=r"extra\.thing names 'extra_thing.npy', which is not listed"):
        _strip(learned / "b0", tmp_path / "unlisted", lambda m: named(m, False))
    shutil.copytree(learned / "b0", tmp_path / "src")
    shutil.copy(learned / "b0" / "head_weights.npy", tmp_path / "src" / "extra_thing.npy")
    _strip(tmp_path / "src", tmp_path / "listed", lambda m: named(m, True))  # verify_bundle accepts it


def test_view_indices_give_distinct_samplings_only():
    from stpr.runtime.contract import HEAD_CROPS
    from stpr.runtime.model.sampling import CROPS, centre_indices, view_indices

    assert tuple(CROPS) == HEAD_CROPS  # what head.crops and --crops accept is what the function knows

    assert [v.tolist() for v in view_indices(8, 8, 3)] == [list(range(8))]  # a clip of T frames has one view
    two = view_indices(16, 8, 2)
    assert [v.tolist() for v in two] == [list(range(0, 16, 2)), list(range(1, 16, 2))]
    assert np.array_equal(view_indices(37, 8, 1)[0], centre_indices(37, 8))


def test_views_and_crops_give_one_row_per_sampling_of_each_clip(learned, tmp_path):
    from stpr.runtime.learn.learn_clips import CROPS, clip_rows, crop_view, rows_of_clips

    clip = SyntheticActions("train", clips_per_class=1, num_frames=16, seed=0).raw_clip(0)
    folder = tmp_path / "clip16"
    folder.mkdir()
    for f, frame in enumerate(clip):
        cv2.imwrite(str(folder / f"{f:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    video = write_video(tmp_path / "clip16.avi", [clip])
    b = load_bundle(learned / "b0")
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in clip]
    with Recognizer(b) as rec:
        rows = rows_of_clips(rec, [folder], views=2)
        assert rows.shape[0] == 2
        np.testing.assert_allclose(rows[0], clip_rows(rec, bgr[0::2])[0], atol=1e-6)
        np.testing.assert_allclose(rows[1], clip_rows(rec, bgr[1::2])[0], atol=1e-6)
        assert rows_of_clips(rec, [video], views=2).shape[0] == 2  # a video file reads the same views
        cropped = rows_of_clips(rec, [folder], crops="corners")
        assert cropped.shape[0] == len(CROPS["corners"])
        np.testing.assert_allclose(cropped[0], rows_of_clips(rec, [folder])[0], atol=1e-6)
        x = np.stack([preprocess(f, b.size, b.mean, b.std) for f in bgr[1::2]])
        corner = window_rows_of(rec, crop_view(x, CROPS["corners"][1]))
        np.testing.assert_allclose(cropped[1], corner, atol=1e-6)
        assert not np.allclose(cropped[1], cropped[0])


def window_rows_of(rec, x):
    from stpr.runtime.learn.learn_clips import window_rows

    return window_rows(rec, rec.frame_features(x)[None])[0]


def test_training_crops_are_the_device_crops_and_stpr_learn_follows_the_bundle(tmp_path):
    from stpr.runtime.learn.learn_clips import rows_of_clips

    R.run(fast_config(**{"head.mode": "alone", "head.dim": 256, "head.crops": "corners"}), tmp_path / "run")
    export_run(tmp_path / "run", tmp_path / "b0")
    m = json.loads((tmp_path / "b0" / "manifest.json").read_text())
    assert m["head"]["crops"] == "corners"
    assert m["head"]["sums"]["counts"] == [8 * 5] * 12  # 8 clips per class, each with its 4 corners
    # a trained class's column of C is the weighted sum of the device's rows of its clips, crops included
    train = SyntheticActions("train", clips_per_class=8, seed=0)
    name = m["classes"][0]
    data = tmp_path / "data" / "again"
    for j, i in enumerate([i for i, t in enumerate(train.targets) if train.classes[t] == name]):
        (data / f"{j:02d}").mkdir(parents=True)
        for f, frame in enumerate(train.raw_clip(i)):
            cv2.imwrite(str(data / f"{j:02d}" / f"{f:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    b = load_bundle(tmp_path / "b0")
    with Recognizer(b) as rec:
        rows = rows_of_clips(rec, sorted(data.iterdir()), crops="corners")
    cross = np.load(tmp_path / "b0" / "head_cross.npy")[:, 0]
    w = m["head"]["sums"]["n_ref"] / 40
    np.testing.assert_allclose(w * rows.astype(np.float64).sum(0), cross, atol=1e-4 * np.abs(cross).max())
    # stpr-learn reads the bundle's crops unless told otherwise
    res = CliRunner().invoke(learn_main, ["--bundle", str(tmp_path / "b0"), "--out", str(tmp_path / "b1"),
                                          "--data", str(tmp_path / "data")])
    assert res.exit_code == 0, res.output
    learned = json.loads((tmp_path / "b1" / "manifest.json").read_text())["head"]["learned"]
    assert learned["classes"] == ["again"] and learned["clips"] == [8 * 5]


@pytest.mark.parametrize("name", ["wave\nhello", "wave hello \U0001F44B", "wave " * 40])
def test_learn_refuses_the_names_stpr_classes_refuses_with_the_same_words(learned, tmp_path, name):
    from stpr.runtime.cli.classes_cli import main as classes_main

    clips = sorted(str(p) for p in (learned / "data" / NEW[0]).iterdir())
    by_name = CliRunner().invoke(classes_main, ["add", str(learned / "b0"), name, "--classes",
                                                str(tmp_path / "added.json")])
    res = CliRunner().invoke(learn_main, ["--bundle", str(learned / "b0"), "--out", str(tmp_path / "b"),
                                          "--add", name, *clips])
    assert by_name.exit_code == 1 and res.exit_code == 1, (by_name.output, res.output)
    errors = [line for line in res.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0] in by_name.output  # one rule, one wording
    assert not (tmp_path / "b").exists()


def test_a_clip_given_several_times_counts_once(learned, tmp_path):
    clip = learned / "data" / NEW[0] / "00"
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in clip.iterdir():  # the same frames under another path are the same clip too
        (copy / f.name).write_bytes(f.read_bytes())
    res = CliRunner().invoke(learn_main, ["--bundle", str(learned / "b0"), "--out", str(tmp_path / "b"),
                                          "--add", "wave hello", str(clip), str(clip), str(clip), str(copy)])
    assert res.exit_code == 1 and "'wave hello': 4 clips given, 1 distinct" in res.output
    assert "has 1 clip(s); a new class needs at least 4" in res.output
    assert not (tmp_path / "b").exists()


def test_a_full_disk_names_the_new_bundle_not_a_file_of_the_old_one(learned, small_disk):
    out = small_disk.path / "b1"
    res = small_disk.run([sys.executable, "-m", "stpr.runtime.cli.learn_cli", "--bundle", str(learned / "b0"),
                          "--out", str(out), "--data", str(learned / "data")])
    assert res.returncode == 4, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert f"cannot write the bundle {str(out)!r}" in errors[0] and small_disk.errno_text in errors[0]
    assert str(learned / "b0") not in errors[0]
    assert small_disk.leftovers() == []


DEVICE_COMMANDS = ("stpr-run", "stpr-learn", "stpr-classes")


def _doc_commands(text: str) -> list[str]:
    """The device command lines of a document's bash blocks, minus those that need a camera or
    a stream (`--camera`, `rtsp://`), other devices' bundles (`--merge`: test_learn_merge.py
    runs it) or stand for more options (`...`)."""
    import re

    lines = [line.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    return [line for line in lines if line.startswith(DEVICE_COMMANDS)
            and not any(w in line for w in ("--camera", "rtsp://", "--merge", "..."))]


def test_the_documented_device_commands_run_as_written(learned, tmp_path):
    """README.md's and runtime.md's device commands, verbatim, each document's in a fresh
    folder on a head-alone bundle named as they name it (`bundles/demo`); the training and
    export lines take minutes and are run by the suite's own stpr-train and stpr-export tests."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = _doc_commands((repo / "README.md").read_text())
    runtime = _doc_commands((repo / "docs" / "runtime.md").read_text().split("### Add an action by name")[1])
    assert sum(c.startswith("stpr-learn") for c in readme) >= 2 and any("stpr-classes add" in c for c in readme)
    assert any("stpr-classes add" in c for c in runtime)
    # the demo trains all 20 of its classes: a name added to `bundles/demo` must be none of them
    # (the test bundle here trains 12, so running the command alone would not show it)
    import shlex

    from stpr.runtime.text.text_clean import clean_class_name

    trained = {clean_class_name(c) for c in SyntheticActions("test", clips_per_class=1).classes}
    added = [shlex.split(c, comments=True)[3] for c in readme + runtime if c.startswith("stpr-classes add")]
    assert added and not [n for n in added if clean_class_name(n) in trained], added
    for name, commands in (("readme", readme), ("runtime", runtime)):
        _run_as_written(learned, tmp_path / name, commands)


def _run_as_written(learned, cwd, commands):
    import glob
    import shlex
    import shutil
    from pathlib import Path

    (cwd / "bundles").mkdir(parents=True)
    shutil.copytree(learned / "b0", cwd / "bundles" / "demo")
    (cwd / "clips").mkdir()
    for folder in sorted((learned / "data" / NEW[0]).iterdir()):
        frames = [cv2.imread(str(f)) for f in sorted(folder.iterdir())]
        out = cv2.VideoWriter(str(cwd / "clips" / f"{folder.name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 8,
                              frames[0].shape[1::-1])
        for f in frames * 2:
            out.write(f)
        out.release()
    for name in ("clip.mp4", "clip.avi"):
        shutil.copy(next((cwd / "clips").iterdir()), cwd / name)
    bin_dir = Path(sys.executable).parent
    for line in commands:
        args = [t for a in shlex.split(line, comments=True)
                for t in (sorted(glob.glob(a, root_dir=cwd)) if "*" in a else [a])]
        exe = bin_dir / args[0] if (bin_dir / args[0]).exists() else shutil.which(args[0])
        res = subprocess.run([str(exe), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, (line, res.stdout[-2000:], res.stderr[-3000:])


def test_learn_over_a_link_with_force_leaves_no_old_link_behind(learned, tmp_path):
    import shutil

    shutil.copytree(learned / "b0", tmp_path / "b0")
    link = tmp_path / "current"
    publish(tmp_path / "b0", link)
    res = CliRunner().invoke(learn_main, ["--bundle", str(learned / "b1"), "--out", str(link), "--force",
                                          "--remove", NEW[0]])
    assert res.exit_code == 0, res.output
    assert not link.is_symlink() and (link / "manifest.json").is_file()  # the link became the new bundle
    assert NEW[0] not in json.loads((link / "manifest.json").read_text())["classes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0", "current"]  # no .old-current-*, no temp folder
    assert (tmp_path / "b0" / "manifest.json").is_file()  # the bundle the link named stays
