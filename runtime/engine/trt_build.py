"""Build TensorRT engines from the exported ONNX files, on the device that runs them.

Engines are specific to the GPU and the TensorRT version that built them, so they are
never shipped: `stpr-run --backend trt` calls `ensure_engine` on first start and reuses
the cached engine afterwards. Torch-free; `tensorrt` is imported only inside functions,
so this module imports (and its pure logic is testable) where TensorRT is absent.

TensorRT 10 vs 11 (NVIDIA's "Migrating from TensorRT 10.x to 11.x" guide):
  * 10.x builds weakly typed networks by default; reduced precision is enabled with
    `BuilderFlag.FP16`. `NetworkDefinitionCreationFlag.EXPLICIT_BATCH` is deprecated
    and ignored (networks are always explicit batch).
  * 11.x removed the weak-typing flags (`BuilderFlag.FP16`, `INT8`, ...) and
    `Builder.platform_has_fast_fp16`: every network is strongly typed, so precision
    comes from the tensor types in the ONNX itself (the fp16 twin from stpr.export).
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..atomic import atomic_write_bytes
from ..bundle.manifest import sha256_file
from ..errors import TensorRTUnavailable  # noqa: F401 (also imported from here)

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "TensorRT is not installed: on Jetson it comes with JetPack "
    "(`sudo apt install python3-libnvinfer`); on x86 install it from NVIDIA's index "
    "(`pip install tensorrt --extra-index-url https://pypi.nvidia.com`). "
    "`stpr-run --backend trt` builds engines on the device itself."
)

NO_GPU_HINT = (
    "no CUDA GPU found: TensorRT engines are built on the NVIDIA GPU that runs them "
    "(`stpr-run --backend trt` does this on the device)"
)
JETSON_MODEL = Path("/proc/device-tree/model")


def import_tensorrt() -> ModuleType:
    """Import `tensorrt` on demand, turning ImportError into an actionable message."""
    try:
        import tensorrt
    except ImportError as exc:  # also when sys.modules['tensorrt'] is None
        raise TensorRTUnavailable(INSTALL_HINT) from exc
    return tensorrt


def trt_major(trt: ModuleType) -> int:
    """The major version of a `tensorrt` module ('10.3.0' -> 10)."""
    return int(str(trt.__version__).split(".")[0])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def engine_name(onnx_path: Path, gpu_name: str, trt_version: str) -> str:
    """`<onnx stem>.<gpu slug>.trt<version>.engine`: one cached engine per GPU and TRT."""
    version = re.sub(r"[^0-9A-Za-z.]+", "-", trt_version).strip("-")
    return f"{Path(onnx_path).stem}.{_slug(gpu_name)}.trt{version}.engine"


def gpu_name() -> str:
    """The CUDA device's name, without torch: cuda-python, nvidia-smi, then Jetson's model.

    TensorRT itself has no public device-name query; cuda-python (which NVIDIA's
    TensorRT samples use) is tried when present.
    """
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.8
        except ImportError:
            from cuda import cudart  # older cuda-python
        err, prop = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = prop.name
            return (name.decode() if isinstance(name, bytes) else str(name)).strip("\x00 ")
    except Exception:  # not installed, no device, or an API shape we do not know
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip().splitlines()
            if out and out[0].strip():
                return out[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    if JETSON_MODEL.exists():  # e.g. "NVIDIA Jetson AGX Orin Developer Kit"
        name = JETSON_MODEL.read_bytes().decode(errors="replace").strip("\x00 \n")
        if "nvidia" in name.lower() or "jetson" in name.lower():  # not some other ARM board
            return name
    raise TensorRTUnavailable(NO_GPU_HINT + " (cuda-python, nvidia-smi and "
                              f"{JETSON_MODEL} found none)")


@dataclass
class EngineSpec:
    """What to build: an ONNX file, its batched input and the batch range to support."""

    onnx_path: Path
    input_name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    fp16: bool






def sidecar_path(engine_path: Path) -> Path:
    """`<engine>.json`: what the engine was built from (onnx sha256, TRT, GPU, fp16)."""
    return Path(str(engine_path) + ".json")


def build_engine(spec: EngineSpec, engine_dir: Path, timing_cache: Path | None = None,
                 workspace_mib: int = 2048) -> Path:
    """Parse `spec.onnx_path`, build a serialized engine and write it (plus its sidecar).

    Raises TensorRTUnavailable without TensorRT or a GPU, RuntimeError on parse/build errors.
    """
    trt = import_tensorrt()
    major = trt_major(trt)
    gpu = gpu_name()
    onnx_path = Path(spec.onnx_path)
    engine_path = Path(engine_dir) / engine_name(onnx_path, gpu, trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)  # fails (or returns None) without a usable CUDA GPU
    except Exception as exc:
        raise TensorRTUnavailable(f"{NO_GPU_HINT}: trt.Builder failed: {exc}") from exc
    if builder is None:
        raise TensorRTUnavailable(f"{NO_GPU_HINT}: trt.Builder returned None")

    flags = 0
    if major >= 11:
        # 11.x: strong typing is the only mode (the flag is kept for API compatibility);
        # precision is whatever the ONNX's tensors say, so the fp16 twin builds fp16.
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if flag is not None:
            flags |= 1 << int(flag)
    elif major < 10:
        # 8.x/9.x (JetPack 5): ONNX networks need an explicit batch; 10.x ignores the flag.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    t0 = time.perf_counter()
    if not parser.parse_from_file(str(onnx_path)):  # from file: external weights resolve
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(
            errors or ["(no parser error recorded)"]))
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if spec.input_name not in inputs:
        raise RuntimeError(f"{onnx_path} has no input {spec.input_name!r} (inputs: {inputs})")
    log.info("parsed %s in %.2fs", onnx_path.name, time.perf_counter() - t0)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if spec.fp16 and major <= 10:
        # <= 10.x: weak typing; FP16 lets TRT pick fp16 kernels (removed in 11.x).
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, tuple(spec.min_shape), tuple(spec.opt_shape),
                      tuple(spec.max_shape))
    config.add_optimization_profile(profile)

    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).exists():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    # ignore_mismatch=False: a cache from another GPU or TensorRT is refused, not merged.
    if cache is None or not config.set_timing_cache(cache, False):
        log.warning("timing cache %s does not match this GPU/TensorRT; starting empty",
                    timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} "
                           "(see the TensorRT log above)")
    log.info("built %s in %.1fs (TensorRT %s, %s, fp16=%s)", engine_path.name,
             time.perf_counter() - t0, trt.__version__, gpu, spec.fp16)

    if timing_cache is not None:
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    atomic_write_bytes(engine_path, bytes(serialized))
    meta = {"onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path),
            "tensorrt": str(trt.__version__), "gpu": gpu, "fp16": bool(spec.fp16)}
    # Written after the engine: a crash in between leaves no sidecar, i.e. a stale engine.
    atomic_write_bytes(sidecar_path(engine_path), (json.dumps(meta, indent=2) + "\n").encode())
    return engine_path


def engine_is_stale(engine_path: Path, onnx_path: Path) -> bool:
    """True when the engine is missing, older than the ONNX, or its sidecar's sha256
    (missing or unreadable sidecar included) does not match the ONNX on disk."""
    engine_path, onnx_path = Path(engine_path), Path(onnx_path)
    if not engine_path.exists():
        return True
    if engine_path.stat().st_mtime < onnx_path.stat().st_mtime:
        return True
    try:
        meta = json.loads(sidecar_path(engine_path).read_text())
    except (OSError, ValueError):
        return True
    return not isinstance(meta, dict) or meta.get("onnx_sha256") != sha256_file(onnx_path)


def ensure_engine(spec: EngineSpec, engine_dir: Path, timing_cache: Path | None = None) -> Path:
    """The engine for `spec` on this GPU and TensorRT: cached if fresh, else built now."""
    trt = import_tensorrt()
    path = Path(engine_dir) / engine_name(Path(spec.onnx_path), gpu_name(), trt.__version__)
    if engine_is_stale(path, Path(spec.onnx_path)):
        log.info("building TensorRT engine %s (first start on this device takes minutes)",
                 path.name)
        return build_engine(spec, engine_dir, timing_cache)
    log.info("using cached TensorRT engine %s", path)
    return path
