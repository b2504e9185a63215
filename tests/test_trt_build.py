"""stpr.runtime.engine.trt_build: naming, staleness, the TRT 10/11 precision branch (on a fake
tensorrt module), and one real engine build where TensorRT is installed."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from stpr.runtime.engine import trt_build
from stpr.runtime.engine.trt_build import (
    EngineSpec,
    TensorRTUnavailable,
    build_engine,
    engine_is_stale,
    engine_name,
    ensure_engine,
    import_tensorrt,
    sha256_file,
    sidecar_path,
)

# --- pure logic -------------------------------------------------------------------


@pytest.mark.parametrize(
    "onnx, gpu, version, expected",
    [
        ("out/backbone.fp16.onnx", "NVIDIA Orin", "10.3.0", "backbone.fp16.nvidia-orin.trt10.3.0.engine"),
        ("head.onnx", "NVIDIA GeForce RTX 4090", "10.13.0.35",
         "head.nvidia-geforce-rtx-4090.trt10.13.0.35.engine"),
        ("b.onnx", "  Orin (nvgpu) ", "11.0.0", "b.orin-nvgpu.trt11.0.0.engine"),
        ("b.onnx", "NVIDIA Jetson AGX Orin Developer Kit", "10.3.0",
         "b.nvidia-jetson-agx-orin-developer-kit.trt10.3.0.engine"),
    ],
)
def test_engine_name_slugs_gpu(onnx: str, gpu: str, version: str, expected: str) -> None:
    assert engine_name(Path(onnx), gpu, version) == expected


def _fresh_pair(tmp_path: Path) -> tuple[Path, Path]:
    """An ONNX file and an engine newer than it with a matching sidecar."""
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx-bytes")
    engine = tmp_path / "m.gpu.trt10.3.0.engine"
    engine.write_bytes(b"engine")
    sidecar_path(engine).write_text(json.dumps({"onnx_sha256": sha256_file(onnx)}))
    t = onnx.stat().st_mtime
    os.utime(engine, (t + 10, t + 10))
    return onnx, engine


def test_engine_is_stale_cases(tmp_path: Path) -> None:
    onnx, engine = _fresh_pair(tmp_path)
    assert engine_is_stale(engine, onnx) is False  # fresh

    assert engine_is_stale(tmp_path / "missing.engine", onnx) is True

    t = onnx.stat().st_mtime
    os.utime(engine, (t - 10, t - 10))  # engine older than the ONNX
    assert engine_is_stale(engine, onnx) is True
    os.utime(engine, (t + 10, t + 10))

    sidecar_path(engine).write_text(json.dumps({"onnx_sha256": "0" * 64}))  # sha mismatch
    assert engine_is_stale(engine, onnx) is True
    sidecar_path(engine).write_text("{not json")  # unreadable sidecar
    assert engine_is_stale(engine, onnx) is True
    sidecar_path(engine).unlink()  # no sidecar: provenance unknown
    assert engine_is_stale(engine, onnx) is True


def test_changed_onnx_content_with_old_mtime_is_stale(tmp_path: Path) -> None:
    onnx, engine = _fresh_pair(tmp_path)
    t = onnx.stat().st_mtime
    onnx.write_bytes(b"re-exported")  # e.g. copied over with its mtime preserved
    os.utime(onnx, (t, t))
    assert engine_is_stale(engine, onnx) is True


def test_import_tensorrt_raises_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(TensorRTUnavailable) as err:
        import_tensorrt()
    msg = str(err.value)
    assert "sudo apt install python3-libnvinfer" in msg
    assert "pip install tensorrt --extra-index-url https://pypi.nvidia.com" in msg
    assert "stpr-run --backend trt" in msg


def test_module_imports_without_torch_or_tensorrt() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import stpr.runtime.engine.trt_build as m\n"
        "assert 'tensorrt' not in sys.modules, 'tensorrt imported eagerly'\n"
        "print(m.engine_name(m.Path('a.onnx'), 'X', '10.0'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "a.x.trt10.0.engine"


def test_gpu_name_falls_back_to_nvidia_smi_then_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for mod in ("cuda", "cuda.bindings"):  # no cuda-python
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setattr(trt_build, "JETSON_MODEL", tmp_path / "no-model")
    monkeypatch.setattr(trt_build.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(
        trt_build.subprocess, "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="NVIDIA H100 80GB HBM3\n"),
    )
    assert trt_build.gpu_name() == "NVIDIA H100 80GB HBM3"

    monkeypatch.setattr(trt_build.shutil, "which", lambda name: None)
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    monkeypatch.setattr(trt_build, "JETSON_MODEL", model)
    assert trt_build.gpu_name() == "NVIDIA Jetson Orin Nano Developer Kit"

    model.write_bytes(b"Raspberry Pi 5 Model B\x00")  # a device tree, but no NVIDIA GPU
    with pytest.raises(TensorRTUnavailable, match="no CUDA GPU"):
        trt_build.gpu_name()


# --- the precision branch, on a fake tensorrt ---------------------------------------


def fake_tensorrt(version: str, parse_errors: tuple[str, ...] = ()) -> types.ModuleType:
    """Just enough of the `tensorrt` API for build_engine, recording what it is asked.

    Like the real 11.x bindings, the 11 fake has no BuilderFlag.FP16, so touching it fails.
    """
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    rec: dict = {"flags": set(), "builds": 0}
    trt.rec = rec

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    class Input:
        name = "x"

    class Network:
        num_inputs = 1

        def get_input(self, i: int) -> Input:
            return Input()

    class Error:
        def __init__(self, desc: str) -> None:
            self._desc = desc

        def desc(self) -> str:
            return self._desc

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            rec["parsed"] = path
            self.num_errors = len(parse_errors)
            return not parse_errors

        def get_error(self, i: int) -> Error:
            return Error(parse_errors[i])

    class Cache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data + b"+tuned"

    class Profile:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            rec["profile"] = (name, lo, opt, hi)

    class Config:
        def set_memory_pool_limit(self, pool: int, size: int) -> None:
            rec["workspace"] = size

        def set_flag(self, flag: str) -> None:
            rec["flags"].add(flag)

        def add_optimization_profile(self, profile: Profile) -> int:
            return 0

        def create_timing_cache(self, data: bytes) -> Cache:
            return Cache(bytes(data))

        def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> bool:
            rec["cache_in"] = cache.data
            self.cache = cache
            return True

        def get_timing_cache(self) -> Cache:
            return self.cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int = 0) -> Network:
            rec["network_flags"] = flags
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            rec["builds"] += 1
            return b"SERIALIZED-ENGINE"

    trt.Logger, trt.OnnxParser, trt.Builder = Logger, OnnxParser, Builder
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1)
    major = int(version.split(".")[0])
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32", **({"FP16": "FP16"} if major <= 10 else {}))
    return trt


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "backbone.fp16.onnx"
    path.write_bytes(b"pretend onnx")
    return path


def _install(monkeypatch: pytest.MonkeyPatch, trt: types.ModuleType) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_build, "gpu_name", lambda: "NVIDIA Orin")


def _spec(onnx: Path, fp16: bool = True) -> EngineSpec:
    return EngineSpec(onnx, "x", (1, 3, 8), (4, 3, 8), (16, 3, 8), fp16=fp16)


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
def test_precision_branch_and_timing_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnx_file: Path, version: str
) -> None:
    trt = fake_tensorrt(version)
    _install(monkeypatch, trt)
    cache = tmp_path / "cache" / "timing.cache"
    cache.parent.mkdir()
    cache.write_bytes(b"old")

    engine = build_engine(_spec(onnx_file), tmp_path / "engines", timing_cache=cache, workspace_mib=64)

    rec = trt.rec
    if version.startswith("10"):
        assert rec["flags"] == {"FP16"}  # weak typing: FP16 kernels enabled by flag
        assert rec["network_flags"] == 0  # EXPLICIT_BATCH is ignored on 10 and not set
    else:
        assert rec["flags"] == set()  # FP16 flag removed in 11: never set
        assert rec["network_flags"] == 1 << 1  # STRONGLY_TYPED
    assert rec["profile"] == ("x", (1, 3, 8), (4, 3, 8), (16, 3, 8))
    assert rec["workspace"] == 64 << 20
    assert rec["parsed"] == str(onnx_file)
    assert rec["cache_in"] == b"old"  # the existing cache was loaded ...
    assert cache.read_bytes() == b"old+tuned"  # ... and written back after the build
    assert [p.name for p in cache.parent.iterdir()] == ["timing.cache"]  # no temp left

    assert engine == tmp_path / "engines" / f"backbone.fp16.nvidia-orin.trt{version}.engine"
    assert engine.read_bytes() == b"SERIALIZED-ENGINE"
    meta = json.loads(sidecar_path(engine).read_text())
    assert meta == {"onnx": onnx_file.name, "onnx_sha256": sha256_file(onnx_file),
                    "tensorrt": version, "gpu": "NVIDIA Orin", "fp16": True}
    assert engine_is_stale(engine, onnx_file) is False


def test_fp32_build_sets_no_fp16_flag_and_new_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnx_file: Path
) -> None:
    trt = fake_tensorrt("10.3.0")
    _install(monkeypatch, trt)
    cache = tmp_path / "timing.cache"  # does not exist yet: starts empty, then written
    build_engine(_spec(onnx_file, fp16=False), tmp_path, timing_cache=cache)
    assert trt.rec["flags"] == set()
    assert trt.rec["cache_in"] == b""
    assert cache.read_bytes() == b"+tuned"


def test_parser_errors_are_all_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnx_file: Path
) -> None:
    _install(monkeypatch, fake_tensorrt("10.3.0", parse_errors=("bad node 3", "unsupported op Foo")))
    with pytest.raises(RuntimeError) as err:
        build_engine(_spec(onnx_file), tmp_path)
    assert "bad node 3" in str(err.value) and "unsupported op Foo" in str(err.value)
    assert not list(tmp_path.glob("*.engine"))


def test_no_gpu_builder_failure_raises_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnx_file: Path
) -> None:
    trt = fake_tensorrt("10.3.0")

    def no_gpu(logger: object) -> None:
        raise TypeError("pybind11::init(): factory function returned nullptr")

    trt.Builder = no_gpu
    _install(monkeypatch, trt)
    with pytest.raises(TensorRTUnavailable, match="no CUDA GPU"):
        build_engine(_spec(onnx_file), tmp_path)


def test_ensure_engine_builds_once_then_reuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnx_file: Path
) -> None:
    trt = fake_tensorrt("10.3.0")
    _install(monkeypatch, trt)
    first = ensure_engine(_spec(onnx_file), tmp_path / "engines")
    second = ensure_engine(_spec(onnx_file), tmp_path / "engines")
    assert first == second and trt.rec["builds"] == 1
    onnx_file.write_bytes(b"re-exported onnx")  # new content (and mtime): rebuild
    os.utime(onnx_file, (first.stat().st_mtime + 5,) * 2)
    ensure_engine(_spec(onnx_file), tmp_path / "engines")
    assert trt.rec["builds"] == 2


# --- a real build ------------------------------------------------------------------


@pytest.mark.trt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt is not installed")
def test_real_engine_build(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(8, 4).eval()
    onnx = tmp_path / "linear.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(model, (torch.randn(2, 8),), str(onnx), input_names=["x"], output_names=["y"],
                      dynamic_shapes={"input": {0: batch}}, dynamo=True, external_data=False)
    spec = EngineSpec(onnx, "x", (1, 8), (4, 8), (16, 8), fp16=False)
    cache = tmp_path / "timing.cache"
    try:
        engine = ensure_engine(spec, tmp_path / "engines", timing_cache=cache)
    except TensorRTUnavailable as exc:  # TensorRT imports, but there is no GPU
        pytest.skip(str(exc))
    assert engine.exists() and engine.stat().st_size > 0
    assert cache.exists() and not engine_is_stale(engine, onnx)
    trt = import_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    assert runtime.deserialize_cuda_engine(engine.read_bytes()) is not None
