"""The analytic head in the bundle and on the device: parity, refusals, cost per step."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import damaged, fast_config, predictions, write_video

from stpr.export import export_run
from stpr.export.parity import torch_head_outputs
from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.bundle.manifest import BundleError
from stpr.runtime.engine.recognizer import Recognizer
from stpr.train import run as R
from stpr.train.data.synthetic import SyntheticActions
from stpr.train.restore import restore


@pytest.fixture(scope="module", params=[("alone", "frozen"), ("route-soft", "adapted")], ids=["alone", "route-soft"])
def head_bundle(request, tmp_path_factory):
    mode, tower = request.param
    root = tmp_path_factory.mktemp(f"head-{mode}")
    R.run(fast_config(**{"head.mode": mode, "head.tower": tower, "head.dim": 512}), root / "run")
    export_run(root / "run", root / "bundle", fp16=True)
    return root / "run", root / "bundle"


def test_bundle_head_equals_pytorch_head(head_bundle):
    run_dir, bundle_dir = head_bundle
    r = restore(run_dir)
    clips = torch.stack([SyntheticActions("test", clips_per_class=1, seed=3)[i][0] for i in range(12)])
    ref = torch_head_outputs(r, clips)
    b = load_bundle(bundle_dir)
    with Recognizer(b) as rec:
        B, T = clips.shape[:2]
        feats = rec.frame_features(clips.numpy().reshape(B * T, *clips.shape[2:])).reshape(B, T, -1)
        probs = rec.classify(feats)["probs"]
    assert np.abs(probs - ref["logits"]).max() < 1e-5
    parity = json.loads((bundle_dir / "parity.json").read_text())
    assert parity["fp32_head"]["top1_agreement"] == 1.0 and "fp16_head" in parity


def test_head_alone_runs_one_tower_and_no_experts(head_bundle):
    _, bundle_dir = head_bundle
    b = load_bundle(bundle_dir)
    with Recognizer(b) as rec:
        if b.head.mode == "alone":
            assert rec.experts is None and rec.towers == ["clip_backbone.onnx"]
        else:  # StPR's adapted tower and the head's (the adapters as the base task left them)
            assert rec.experts is not None and rec.towers == ["backbone.onnx", "head_backbone.onnx"]
        assert rec.feature_dim == b.dim * len(rec.towers)


def test_tampered_head_files_are_refused(head_bundle, tmp_path):
    _, bundle_dir = head_bundle
    bad = tmp_path / "weights"
    shutil.copytree(bundle_dir, bad)
    w = np.load(bad / "head_weights.npy")
    w[0, 0] += 1.0
    np.save(bad / "head_weights.npy", w)
    with pytest.raises(BundleError, match="head_weights.npy"):
        load_bundle(bad)
    seed = tmp_path / "seed"  # a resealed manifest whose projection seed was changed
    damaged(bundle_dir, seed, lambda m, d: m["head"]["projection"].update(seed=m["head"]["projection"]["seed"] + 1))
    with pytest.raises(BundleError, match="projection"):
        load_bundle(seed)
    mode = tmp_path / "mode"
    damaged(bundle_dir, mode, lambda m, d: m["head"].update(mode="vote"))
    with pytest.raises(BundleError, match="head.mode is 'vote'"):
        load_bundle(mode)


def test_clip_mode_with_torch_blocked_names_the_class(head_bundle, tmp_path):
    _, bundle_dir = head_bundle
    ds = SyntheticActions("test", clips_per_class=1, seed=11)
    i = 5
    video = write_video(tmp_path / "clip.avi", [ds.raw_clip(i)])
    code = ("import sys; sys.modules['torch'] = None\n"
            "from stpr.runtime.entry import main\n"
            f"sys.argv = ['stpr-run', '--bundle', {str(bundle_dir)!r}, '--video', {str(video)!r}, '--clip']\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "analytic head" in res.stderr
    top = [line.split()[-1] for line in res.stdout.splitlines() if line.strip() and line.strip()[0].isdigit()]
    assert top and top[0] in load_bundle(bundle_dir).classes


def test_head_unknown_score_is_calibrated_and_separates_never_trained_classes(head_bundle):
    _, bundle_dir = head_bundle
    report = json.loads((bundle_dir / "openset.json").read_text())
    assert report["score"] == "head_margin_mahalanobis"
    # fast 1-epoch runs: a score that ignores the clip would sit at 0.5
    assert report["auroc"] >= 0.7, report["candidates"]
    assert set(report["candidates"]) == {"head_max", "head_margin", "head_mahalanobis", "head_margin_mahalanobis"}
    b = load_bundle(bundle_dir)
    assert b.unknown["score"] == report["score"] and b.head.subspace is not None
    if b.head.mode != "alone":  # StPR trained too: its own candidates on the same clips, for comparison
        assert "margin_route" in report["stpr_candidates"]
    clips = torch.stack([SyntheticActions("test", clips_per_class=1, seed=4)[i][0] for i in range(6)]).numpy()
    with Recognizer(b) as rec:
        B, T = clips.shape[:2]
        out = rec.classify(rec.frame_features(clips.reshape(B * T, *clips.shape[2:])).reshape(B, T, -1))
    assert out["unknown_score"].shape == (6,) and np.isfinite(out["unknown_score"]).all()


def test_classes_added_by_name_rank_against_the_heads_classes(head_bundle, tmp_path):
    from stpr.runtime.engine.zero_shot import load_zero_shot

    _, bundle_dir = head_bundle
    b = load_bundle(bundle_dir)
    from stpr.runtime.bundle.class_overlay import write_overlay

    overlay = write_overlay(tmp_path / "extra.classes.json", b.manifest, ["ring moving up"])
    zs = load_zero_shot(b, overlay)
    clips = torch.stack([SyntheticActions("test", clips_per_class=1, seed=4)[i][0] for i in range(4)]).numpy()
    with Recognizer(b) as plain, Recognizer(b, zero_shot=zs) as rec:
        # a head on the frozen tower scores added names with the pass it already makes
        extra = [] if b.head.tower == "frozen" else ["clip_backbone.onnx"]
        assert rec.towers == plain.towers + extra
        B, T = clips.shape[:2]
        flat = clips.reshape(B * T, *clips.shape[2:])
        p0 = plain.classify(plain.frame_features(flat).reshape(B, T, -1))["probs"]
        p1 = rec.classify(rec.frame_features(flat).reshape(B, T, -1))["probs"]
    assert p1.shape == (4, len(b.classes) + 1) and np.allclose(p1.sum(1), 1.0)
    # the trained classes keep their order among themselves
    assert (p1[:, : len(b.classes)].argsort(1) == p0.argsort(1)).all()


STPR_FILES = ("backbone.onnx", "backbone.fp16.onnx", "experts.onnx", "experts.onnx.data", "experts.fp16.onnx",
              "expert_0.onnx", "expert_0.fp16.onnx")


def test_a_bundle_ships_only_what_its_mode_serves(head_bundle):
    _, bundle_dir = head_bundle
    m = json.loads((bundle_dir / "manifest.json").read_text())
    shipped = [f for f in STPR_FILES if f in m["files"]]
    if m["head"]["mode"] == "alone":  # the head alone runs no StPR file: none ships
        assert shipped == [] and not {"backbone", "experts", "backbone_fp16", "experts_fp16"} & set(m)
        assert not (bundle_dir / "backbone.onnx").exists()
        parity = json.loads((bundle_dir / "parity.json").read_text())
        assert {k for k, v in parity.items() if isinstance(v, dict) and "top1_agreement" in v} == \
            {"fp32_head", "fp16_head"}
    else:  # route-soft scores through StPR's experts: they ship
        assert shipped == list(STPR_FILES)


def _export_cli(run_dir, out, *args):
    from click.testing import CliRunner

    from stpr.export.cli import main as export_main

    return CliRunner().invoke(export_main, [str(run_dir), "--out", str(out), *args])


def test_head_alone_export_reports_its_size_and_the_heads_parity_only(head_bundle, tmp_path):
    run_dir, bundle_dir = head_bundle
    if json.loads((bundle_dir / "manifest.json").read_text())["head"]["mode"] != "alone":
        return  # the head-alone bundle's summary; route-soft ships StPR, whose lines test_export checks
    res = _export_cli(run_dir, tmp_path / "b")
    assert res.exit_code == 0, res.output
    size = sum(p.stat().st_size for p in (tmp_path / "b").iterdir())
    assert f"Bundle size: {size / 2**20:.2f} MiB in {len(list((tmp_path / 'b').iterdir()))} files" in res.output
    assert "StPR's backbone and experts left out; --stpr-files ships them" in res.output
    assert "Parity fp32 head: top-1 agreement 100.00%" in res.output
    assert "Parity fp32:" not in res.output and "Parity fp32_fused" not in res.output  # no StPR lines
    assert "providers in use" not in res.output and "parity: {" not in res.output  # no chatter, no raw JSON
    with_stpr = _export_cli(run_dir, tmp_path / "s", "--stpr-files", "--int8")
    assert with_stpr.exit_code == 0, with_stpr.output
    assert "Parity fp32:" in with_stpr.output and "Parity int8:" in with_stpr.output
    assert {"backbone.onnx", "experts.onnx", "experts.int8.onnx"} <= {p.name for p in (tmp_path / "s").iterdir()}
    assert size < sum(p.stat().st_size for p in (tmp_path / "s").iterdir())
    refused = _export_cli(run_dir, tmp_path / "i", "--int8")
    assert refused.exit_code == 1 and "a head-alone bundle ships no expert; add --stpr-files" in refused.output
    assert not (tmp_path / "i").exists()


def test_head_alone_on_the_adapted_tower_ships_its_tower_alone(tmp_path):
    R.run(fast_config(**{"head.mode": "alone", "head.tower": "adapted", "head.dim": 256}), tmp_path / "run")
    res = export_run(tmp_path / "run", tmp_path / "b")  # its parity check compares the tower with PyTorch's
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["head"]["tower_file"] == "head_backbone.onnx" and "backbone" not in m and "experts" not in m
    assert res.parity["fp32_head"]["top1_agreement"] == 1.0


def test_head_alone_events_carry_no_routing_and_int8_experts_are_said_ignored(head_bundle, tmp_path):
    from click.testing import CliRunner

    from stpr.runtime.cli.run_cli import main as run_main

    _, bundle_dir = head_bundle
    alone = json.loads((bundle_dir / "manifest.json").read_text())["head"]["mode"] == "alone"
    video = write_video(tmp_path / "v.avi", [SyntheticActions("test", clips_per_class=1, seed=3).raw_clip(0)] * 2)
    events = tmp_path / "ev.jsonl"
    args = ["--bundle", str(bundle_dir), "--video", str(video), "--headless", "--jsonl", str(events)]
    res = CliRunner().invoke(run_main, [*args, *(["--experts", "int8"] if alone else [])])
    assert res.exit_code == 0, res.output
    lines = predictions(events)  # the run's `start` event carries no scores either way
    assert lines and all(("routing" in e) != alone for e in lines)  # the head alone ran no expert
    said = "--experts int8 is ignored: the analytic head alone serves this bundle"
    assert res.output.count(said) == (1 if alone else 0)
    clip = CliRunner().invoke(run_main, ["--bundle", str(bundle_dir), "--video", str(video), "--clip"])
    assert clip.exit_code == 0 and "clip: 1 prediction from 8 frames decoded of the video's 16" in clip.output
