"""stpr-export: bundle contents, parity, ViT-B-16 dynamic batch, bad input."""
import errno
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from helpers import fast_config, start_run_dir

from stpr.export import export_run, head_files, parity, text_export, variant_files
from stpr.export.cli import main as export_main
from stpr.export.onnx_export import export_backbone
from stpr.runtime.bundle.manifest import BundleError, verify_bundle
from stpr.train import run as R
from stpr.train.errors import StprError
from stpr.train.model.backbone import AdaptedVisionTower
from stpr.train.model.clip_tower import load_clip

MANIFEST_KEYS = ("schema_version", "classes", "class_to_expert", "experts", "routing", "logit_scale",
                 "preprocess", "tools", "source", "files")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    R.run(fast_config(), out)
    return out


@pytest.fixture(scope="module")
def demo_bundle(demo_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    return export_run(demo_run, out, fp16=True)


def test_bundle_files_manifest_and_hashes(demo_bundle):
    out = demo_bundle.bundle
    manifest = verify_bundle(out)  # every file present with its sha256
    for key in MANIFEST_KEYS:
        assert key in manifest, key
    assert manifest["experts"] == ["expert_0.onnx", "expert_1.onnx", "expert_2.onnx"]
    assert manifest["experts_fp16"] == ["expert_0.fp16.onnx", "expert_1.fp16.onnx", "expert_2.fp16.onnx"]
    assert len(manifest["classes"]) == 12 and manifest["class_to_expert"] == [0] * 4 + [1] * 4 + [2] * 4
    assert manifest["routing"]["mode"] == "td" and manifest["preprocess"]["frames"] == 8
    assert manifest["tools"]["torch"] and manifest["source"]["task"] == 2
    assert np.load(out / "text_embeddings.npy", allow_pickle=False).shape == (12, 64)
    assert np.load(out / "anchors.npy", allow_pickle=False).shape == (12, 64)
    assert set(demo_bundle.files) >= {"backbone.onnx", "manifest.json", "parity.json"}
    assert not list(out.parent.glob(".tmp-*"))


def test_onnx_files_pass_checker_with_metadata_and_dynamic_batch(demo_bundle):
    out = demo_bundle.bundle
    for name in ("backbone.onnx", "expert_1.onnx", "backbone.fp16.onnx"):
        model = onnx.load(str(out / name))
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        assert json.loads(meta["classes"]) == json.loads((out / "manifest.json").read_text())["classes"]
        assert model.opset_import[0].version >= 17
        assert any(n.op_type == "LayerNormalization" for n in model.graph.node)
        dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim0.dim_param, f"{name}: batch dim is fixed"
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O


def test_parity_thresholds_fp32_and_fp16(demo_bundle):
    report = json.loads((demo_bundle.bundle / "parity.json").read_text())
    assert report["passed"] and report["source"] == "held-out clips of 'synthetic'"
    assert report["fp32"]["top1_agreement"] == 1.0 and report["fp32"]["feature_max_abs_diff"] <= 1e-3
    assert report["fp16"]["top1_agreement"] >= 0.99  # the fp16 twin ran in onnxruntime on CPU


def test_export_an_earlier_task(demo_run, tmp_path):
    res = export_run(demo_run, tmp_path / "b0", task=0)
    manifest = verify_bundle(res.bundle)
    assert manifest["experts"] == ["expert_0.onnx"] and len(manifest["classes"]) == 4
    assert manifest["source"]["task"] == 0 and "experts_fp16" not in manifest


@pytest.mark.slow
def test_vit_b16_backbone_exports_with_dynamic_batch(tmp_path):
    clip, pp = load_clip("ViT-B-16", "none", seed=0)
    tower = AdaptedVisionTower(clip.visual).eval()
    for a in tower.adapters:  # non-zero adapters, so they are really in the graph
        torch.nn.init.normal_(a.up.weight, std=0.02)
    path = export_backbone(tower, tmp_path / "backbone.onnx", pp.size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 8):
        x = torch.randn(n, 3, pp.size, pp.size)
        got = session.run(None, {"frames": x.numpy()})[0]
        with torch.no_grad():
            ref = tower(x).numpy()
        assert got.shape == (n, 512)
        assert np.abs(got - ref).max() < 1e-3


@pytest.mark.trt
def test_engine_build_and_compare(demo_run, tmp_path):
    trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU for TensorRT")
    res = export_run(demo_run, tmp_path / "b", fp16=True, engine=True)
    manifest = verify_bundle(res.bundle)
    assert manifest["engines"] and all((res.bundle / p).is_file() for p in manifest["engines"].values())
    # Run the backbone engine on 8 frames (torch CUDA tensors as I/O buffers) and
    # compare with onnxruntime on the fp32 ONNX.
    engine_file = res.bundle / manifest["engines"]["backbone.fp16.onnx"]
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_file.read_bytes())
    context = engine.create_execution_context()
    size = manifest["preprocess"]["size"]
    x = torch.randn(8, 3, size, size)
    context.set_input_shape("frames", tuple(x.shape))
    inp = x.cuda().contiguous()
    out = torch.empty(tuple(context.get_tensor_shape("features")), device="cuda")
    context.set_tensor_address("frames", inp.data_ptr())
    context.set_tensor_address("features", out.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    ref = ort.InferenceSession(str(res.bundle / "backbone.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"frames": x.numpy()})[0]
    assert np.abs(out.cpu().numpy() - ref).max() < 2e-2  # fp16 engine vs fp32 reference


def test_engine_without_tensorrt_says_what_to_install(demo_run, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    with pytest.raises(StprError, match="stpr-run --backend trt"):
        export_run(demo_run, tmp_path / "b", fp16=True, engine=True)
    with pytest.raises(StprError, match="pass --fp16 with it"):
        export_run(demo_run, tmp_path / "b", engine=True)
    assert not (tmp_path / "b").exists()


def test_run_without_finished_task_or_checkpoint(tmp_path, demo_run):
    run = tmp_path / "run"
    start_run_dir(run, fast_config())
    with pytest.raises(StprError, match="has no finished task yet"):
        export_run(run, tmp_path / "b")
    with pytest.raises(StprError, match="task 7 is not finished"):
        export_run(demo_run, tmp_path / "b", task=7)
    with pytest.raises(StprError, match="does not exist"):
        export_run(tmp_path / "nowhere", tmp_path / "b")


def test_corrupt_checkpoint(tmp_path, demo_run):
    run = tmp_path / "run"
    start_run_dir(run, fast_config())
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "task_000.pt").write_bytes((demo_run / "checkpoints" / "task_000.pt").read_bytes()[:500])
    with pytest.raises(StprError, match="unreadable"):
        export_run(run, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_existing_bundle_is_refused_unless_force(demo_run, tmp_path):
    out = tmp_path / "b"
    export_run(demo_run, out, task=0)
    before = (out / "manifest.json").read_text()
    with pytest.raises(StprError, match="already holds a bundle .* pass --force"):
        export_run(demo_run, out, task=1)
    assert (out / "manifest.json").read_text() == before
    export_run(demo_run, out, task=1, force=True)
    assert verify_bundle(out)["source"]["task"] == 1
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(StprError, match="is not a bundle"):
        export_run(demo_run, other, force=True)
    assert (other / "mine.txt").read_text() == "keep me"


def test_disk_full_mid_export_leaves_no_bundle(demo_run, tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    for module in (text_export, head_files, variant_files):  # every step that writes an fp16 twin
        monkeypatch.setattr(module, "to_fp16", full)
    with pytest.raises(OSError, match="No space left"):
        export_run(demo_run, tmp_path / "b", fp16=True)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".tmp-*"))


def test_failed_parity_writes_nothing(demo_run, tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "FP32_MAX_FEATURE_DIFF", 0.0)  # impossible to meet
    with pytest.raises(StprError, match="failed its parity check: fp32 feature max abs diff"):
        export_run(demo_run, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_altered_bundle_file_is_detected(demo_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo_bundle.bundle, copy)
    (copy / "anchors.npy").write_bytes(b"x" + (copy / "anchors.npy").read_bytes()[1:])
    with pytest.raises(BundleError, match="'anchors.npy' does not match its sha256"):
        verify_bundle(copy)


def test_cli_prints_files_and_parity(demo_run, tmp_path):
    res = CliRunner().invoke(export_main, [str(demo_run), "--out", str(tmp_path / "b"), "--task", "0"])
    assert res.exit_code == 0, res.output
    assert "backbone.onnx" in res.output and "Parity fp32: top-1 agreement 100.00%" in res.output
    bad = CliRunner().invoke(export_main, [str(demo_run), "--out", str(tmp_path / "b"), "--opset", "13"])
    assert bad.exit_code == 2 and "LayerNormalization needs opset >= 17" in bad.output  # a bad command line


def test_bundle_router_matches_pytorch_with_its_calibration(demo_run, demo_bundle):
    """The calibrated td router as the device runs it (bundle arrays, NumPy) against the
    trained model's PyTorch router, on the same features: weights and logits to 1e-5."""
    from stpr.runtime.bundle.load import load_bundle
    from stpr.runtime.model.router import classify
    from stpr.train.restore import restore

    r = restore(demo_run, None)
    m = r.learner.model.eval()
    b = load_bundle(demo_bundle.bundle)
    assert b.routing == "td" and b.calibration is not None
    feats = torch.randn(6, 8, m.dim, generator=torch.Generator().manual_seed(0))  # (B, T, D)
    with torch.no_grad():
        ref = m.classify_features(feats, "td", r.cfg.method.td_tau)
        z = m.expert_outputs(feats)
    out = classify(feats.numpy(), z.numpy(), b.text_embeddings, b.class_to_expert, b.anchors, b.routing, b.tau,
                   b.logit_scale, b.calibration)
    np.testing.assert_allclose(out["weights"], ref["weights"].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["logits"], ref["logits"].numpy(), atol=1e-5 * m.logit_scale, rtol=1e-5)
    # and the weights are not trivially uniform: the calibration is doing something
    assert float(np.abs(out["weights"] - 1.0 / z.shape[1]).max()) > 0.05


def test_parity_counts_a_tie_within_float_noise_as_agreement():
    from stpr.export.parity import top1_agreement

    ref = np.array([[5.0, 5.0, 1.0], [3.0, 1.0, 0.0]])  # row 0: two classes tie exactly (coinciding texts)
    noise = np.array([[-1e-6, 1e-6, 0.0], [0.0, 0.0, 0.0]])
    assert top1_agreement(ref, ref + noise) == 1.0  # the tie broke the other way: not a disagreement
    assert top1_agreement(ref, np.array([[5.0, 5.0, 1.0], [1.0, 3.0, 0.0]])) == 0.5  # a real flip is one
