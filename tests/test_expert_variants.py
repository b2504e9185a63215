"""Fused experts graph and the fp16 / int8 expert variants: export, parity gate, stpr-run --experts."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import fast_config, predictions
from test_runtime import write_video

from stpr.export import export_run, parity
from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.cli import run_cli
from stpr.runtime.engine.recognizer import Recognizer
from stpr.train import run as R
from stpr.train.data.synthetic import SyntheticActions
from stpr.train.errors import StprError


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    # Three epochs, not the demo's one: one-epoch models leave held-out clips with a 0.02
    # logit margin, which int8's ~0.1 logit error flips (the gate then rightly refuses).
    root = tmp_path_factory.mktemp("variants")
    R.run(fast_config(**{"optim.epochs_base": 3, "optim.epochs_incremental": 3}), root / "run")
    res = export_run(root / "run", root / "bundle", fp16=True, int8=True)
    return root, res


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_fused_graph_gives_every_expert_in_one_call(variants):
    root, res = variants
    out = res.bundle
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["experts"] == ["expert_0.onnx", "expert_1.onnx", "expert_2.onnx"]  # per-expert files kept
    assert (manifest["experts_fused"], manifest["experts_fused_fp16"], manifest["experts_fused_int8"]) == (
        "experts.onnx", "experts.fp16.onnx", "experts.int8.onnx")
    for name in ("experts.onnx", "experts.fp16.onnx", "experts.int8.onnx"):
        assert name in manifest["files"]
    model = onnx.load(str(out / "experts.onnx"))
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["B", 3, 64]  # (B, K, D), batch dynamic
    x = np.random.default_rng(0).standard_normal((3, 8, 64)).astype(np.float32)  # (B, T, D)
    fused = _session(out / "experts.onnx").run(None, {"features": x})[0]
    each = np.stack([_session(out / f).run(None, {"features": x})[0] for f in manifest["experts"]], axis=1)
    assert fused.shape == (3, 3, 64) and np.abs(fused - each).max() < 1e-5


def test_every_variant_passes_the_parity_gate(variants):
    root, res = variants
    report = json.loads((res.bundle / "parity.json").read_text())
    assert report["passed"] and report["thresholds"]["int8_min_top1_agreement"] == 0.99
    assert report["fp32_fused"]["top1_agreement"] == 1.0 and report["fp32_fused"]["logit_max_abs_diff"] < 1e-3
    for name in ("fp16", "fp16_fused", "int8"):
        assert report[name]["top1_agreement"] >= 0.99, name
    size = lambda name: (res.bundle / name).stat().st_size  # noqa: E731
    fp32 = size("experts.onnx") + size("experts.onnx.data")
    assert size("experts.int8.onnx") < 0.5 * fp32  # int8 weights: a quarter of the MatMul bytes, plus norms, biases


def test_expert_weights_are_stored_once(variants):
    """The per-expert files point at the fused graph's weight file instead of repeating it."""
    root, res = variants
    out = res.bundle
    data = (out / "experts.onnx.data").stat().st_size
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "experts.onnx.data").stat().st_mode & 0o777 == 0o666 & ~umask  # readable as open() makes it
    assert sum((out / f"expert_{k}.onnx").stat().st_size for k in range(3)) < 0.1 * data
    for name, data in (("expert_1.onnx", "experts.onnx.data"), ("expert_1.fp16.onnx", "experts.fp16.onnx.data")):
        model = onnx.load(str(out / name), load_external_data=False)
        assert {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"} == {data}


def test_failing_int8_parity_writes_nothing(variants, tmp_path, monkeypatch):
    root, _ = variants
    monkeypatch.setattr(parity, "INT8_MIN_AGREEMENT", 1.01)  # impossible to meet
    with pytest.raises(StprError, match="failed its parity check: int8 top-1 agreement"):
        export_run(root / "run", tmp_path / "b", int8=True, task=0)
    assert not (tmp_path / "b").exists()


def test_runtime_uses_the_fused_graph_with_the_same_scores(variants):
    root, res = variants
    b = load_bundle(res.bundle)
    window = np.random.default_rng(1).standard_normal((2, 8, 64)).astype(np.float32)
    with Recognizer(b) as fused, Recognizer(b, fused=False) as each:
        assert fused.experts.fused and len(fused.experts) == 1 and len(each.experts) == 3
        a, e = fused.classify(window), each.classify(window)
    assert np.abs(a["probs"] - e["probs"]).max() < 1e-5 and a["weights"].shape == (2, 3)


def test_stpr_run_experts_flag_picks_the_variant(variants, tmp_path):
    root, res = variants
    test = SyntheticActions("test", clips_per_class=4, seed=0)
    video = write_video(tmp_path / "v.avi", [test.raw_clip(i) for i in (0, 4, 8)])  # 24 frames
    tops = {}
    for variant in ("fp32", "int8", "fp16"):
        events = tmp_path / f"{variant}.jsonl"
        out = CliRunner().invoke(run_cli.main, ["--bundle", str(res.bundle), "--video", str(video), "--headless",
                                                "--experts", variant, "--jsonl", str(events)])
        assert out.exit_code == 0, out.output
        assert f"({variant}, fused)" in out.output
        lines = predictions(events)
        assert len(lines) == 24 - 8 + 1 and all(len(e["routing"]) == 3 for e in lines)
        tops[variant] = [e["top"][0][0] for e in lines]
    for variant in ("int8", "fp16"):
        agree = np.mean([a == b for a, b in zip(tops["fp32"], tops[variant])])
        assert agree >= 0.9, f"{variant} agrees with fp32 on {agree:.0%} of the steps"


def test_missing_variant_says_how_to_export_it(variants, tmp_path):
    root, _ = variants
    plain = export_run(root / "run", tmp_path / "plain", task=0).bundle
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(plain), "--camera", "0", "--headless", "--experts", "int8"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "has no int8 experts" in res.output and "--int8" in res.output
    res = CliRunner().invoke(run_cli.main, ["--bundle", str(variants[1].bundle), "--camera", "0", "--headless",
                                            "--experts", "int8", "--backend", "trt"])
    assert res.exit_code != 0 and "with --backend trt use --experts fp16" in res.output


def test_tensorrt_path_builds_and_serves_the_fused_fp16_graph(variants, tmp_path, monkeypatch):
    """Engines are built for the fused fp16 graph too, and --backend trt --fp16 serves it
    (checked without TensorRT: the runner is lazy until entered, the build is recorded)."""
    from stpr.export.result import ExportResult
    from stpr.export.variant_files import write_engines
    from stpr.runtime.engine import trt_build

    root, res = variants
    b = load_bundle(res.bundle)
    rec = Recognizer(b, backend="trt", fp16=True)
    spec = rec.experts.runners[0].spec
    assert rec.experts.fused and spec.onnx_path.name == "experts.fp16.onnx" and spec.fp16
    assert (spec.input_name, spec.max_shape) == ("features", (8, 8, 64))
    built = []

    def fake_build(spec, engine_dir, cache):
        built.append(spec.onnx_path.name)
        return res.bundle / spec.onnx_path.name  # a path inside the bundle, as a real engine would be

    monkeypatch.setattr(trt_build, "build_engine", fake_build)
    engines = write_engines(res.bundle, b.manifest, ExportResult(bundle=res.bundle))["engines"]
    assert "experts.fp16.onnx" in built and set(engines) == set(built)
    assert len(built) == 1 + 3 + 1  # backbone, each expert, the fused graph
