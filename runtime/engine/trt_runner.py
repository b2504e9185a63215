"""Run a TensorRT engine from NumPy: the `--backend trt` side of stpr.runtime's backends.

Same small interface as the onnxruntime backend: `infer(feed) -> outputs`, a context
manager that owns the GPU resources, and its own per-call `timings_ms`. Torch-free:
device memory and streams come from cuda-python's runtime API (what NVIDIA's TensorRT
samples use), and both `tensorrt` and cuda-python are imported only inside methods.
Uses the TensorRT 10 name-based tensor API (`set_input_shape`, `set_tensor_address`,
`execute_async_v3`); engines are built or reused by `trt_build.ensure_engine`.
"""
from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from stpr.runtime.engine.trt_build import EngineSpec, TensorRTUnavailable

from . import trt_build

CUDA_PYTHON_HINT = (
    "cuda-python is not installed; the TensorRT backend needs it for device memory and "
    "streams: `pip install cuda-python` (on Jetson pick the version matching JetPack's "
    "CUDA, e.g. `pip install 'cuda-python==12.6.*'` on JetPack 6.1/6.2)"
)

# TensorRT DataType member name -> the numpy dtype of its host arrays.
_NP_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32,
              "INT64": np.int64, "BOOL": np.bool_, "INT8": np.int8, "UINT8": np.uint8}


def import_cudart() -> ModuleType:
    """cuda-python's runtime module: `cuda.bindings.runtime` (>= 12.6.1), else `cuda.cudart`."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python (JetPack 5 era)
        except ImportError as exc:  # also when sys.modules['cuda'] is None
            raise TensorRTUnavailable(CUDA_PYTHON_HINT) from exc
    return cudart


def _check(result: tuple, call: str) -> Any:
    """Unpack a cuda-python `(cudaError_t, *values)` tuple; RuntimeError naming `call`."""
    err, values = result[0], result[1:]
    if int(err) != 0:  # cudaSuccess == 0
        name = getattr(err, "name", str(err))
        raise RuntimeError(f"CUDA call {call} failed: {name} ({int(err)})")
    return values[0] if len(values) == 1 else (values or None)


def _stream_handle(stream: Any) -> int:
    """The raw cudaStream_t address TensorRT expects (int(obj) is deprecated in 12.9.1)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle

        return int(get_cuda_native_handle(stream))
    except (ImportError, TypeError):  # older cuda-python, or a handle type it does not know
        return int(stream)


class TrtRunner:
    """A deserialized TensorRT engine with an execution context, stream and I/O buffers.

    Device buffers grow on demand (one per tensor, reused while big enough), so a
    stream of varying batch sizes does not call cudaMalloc on every frame.
    """

    def __init__(self, spec: EngineSpec, engine_dir: Path, timing_cache: Path | None = None):
        self.spec, self.engine_dir, self.timing_cache = spec, Path(engine_dir), timing_cache
        self.name = f"tensorrt:{Path(spec.onnx_path).name}"
        self.timings_ms: list[float] = []
        self.engine_path: Path | None = None
        self._trt: ModuleType | None = None
        self._cudart: ModuleType | None = None
        self._runtime = self._engine = self._context = self._stream = None
        self._inputs: dict[str, np.dtype] = {}
        self._outputs: dict[str, np.dtype] = {}
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device ptr, bytes)

    @property
    def providers(self) -> list[str]:
        """What runs the model, for logs and reports: ["TensorRT <version>"]."""
        trt = self._trt or trt_build.import_tensorrt()
        return [f"TensorRT {trt.__version__}"]

    def _cuda(self, call: str, *args: Any) -> Any:
        return _check(getattr(self._cudart, call)(*args), call)

    def __enter__(self) -> TrtRunner:
        trt = self._trt = trt_build.import_tensorrt()
        self._cudart = import_cudart()  # before ensure_engine: fail fast, not after a build
        try:
            self.engine_path = trt_build.ensure_engine(self.spec, self.engine_dir,
                                                       self.timing_cache)
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                raise RuntimeError(f"TensorRT could not deserialize {self.engine_path}; "
                                   "delete it to rebuild")
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise RuntimeError(f"TensorRT could not create a context for {self.engine_path}")
            self._stream = self._cuda("cudaStreamCreate")
            dtypes = {getattr(trt.DataType, k): np.dtype(v)
                      for k, v in _NP_DTYPES.items() if hasattr(trt.DataType, k)}
            for i in range(self._engine.num_io_tensors):
                tname = self._engine.get_tensor_name(i)
                trt_dtype = self._engine.get_tensor_dtype(tname)
                if trt_dtype not in dtypes:
                    raise RuntimeError(f"tensor {tname!r} has unsupported dtype {trt_dtype}")
                is_input = self._engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
                (self._inputs if is_input else self._outputs)[tname] = dtypes[trt_dtype]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _buffer(self, tname: str, nbytes: int) -> int:
        """A device pointer for `tname` with at least `nbytes`, reallocated only to grow."""
        ptr, capacity = self._buffers.get(tname, (0, 0))
        if nbytes > capacity:
            if ptr:
                self._buffers.pop(tname)
                self._cuda("cudaFree", ptr)
            ptr = self._cuda("cudaMalloc", max(nbytes, 1))
            self._buffers[tname] = (int(ptr), nbytes)
        return self._buffers[tname][0]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch: `feed` maps every engine input name to an array; returns the
        outputs (floating ones as float32) keyed by name. Wall time includes the copies."""
        if self._context is None:
            raise RuntimeError("TrtRunner is not started: use it as `with TrtRunner(...) as r:`")
        missing = set(self._inputs) - set(feed)
        if missing:
            raise ValueError(f"missing inputs {sorted(missing)} "
                             f"(engine inputs: {list(self._inputs)})")
        t0 = time.perf_counter()
        ctx, h2d = self._context, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        host_inputs = []  # keep the cast copies alive until the stream has read them
        for tname, dtype in self._inputs.items():
            arr = np.ascontiguousarray(feed[tname], dtype=dtype)
            host_inputs.append(arr)
            if not ctx.set_input_shape(tname, arr.shape):
                raise RuntimeError(f"input {tname!r} shape {arr.shape} is outside the engine's "
                                   f"profile ({self.spec.min_shape} .. {self.spec.max_shape})")
            ptr = self._buffer(tname, arr.nbytes)
            self._cuda("cudaMemcpyAsync", ptr, arr.ctypes.data, arr.nbytes, h2d, self._stream)
            ctx.set_tensor_address(tname, ptr)
        outputs: dict[str, np.ndarray] = {}
        for tname, dtype in self._outputs.items():
            shape = tuple(ctx.get_tensor_shape(tname))  # known once all inputs are set
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output {tname!r} has unresolved shape {shape}")
            outputs[tname] = np.empty(shape, dtype=dtype)
            ctx.set_tensor_address(tname, self._buffer(tname, outputs[tname].nbytes))
        if not ctx.execute_async_v3(_stream_handle(self._stream)):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.name}")
        d2h = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for tname, out in outputs.items():
            self._cuda("cudaMemcpyAsync", out.ctypes.data, self._buffers[tname][0], out.nbytes,
                       d2h, self._stream)
        self._cuda("cudaStreamSynchronize", self._stream)  # outputs are valid only after this
        result = {k: v.astype(np.float32, copy=False) if v.dtype.kind == "f" else v
                  for k, v in outputs.items()}
        self.timings_ms.append((time.perf_counter() - t0) * 1e3)
        return result

    def close(self) -> None:
        """Free every device buffer and the stream; drop the context before the engine.
        Frees all even if one cudaFree fails, then raises the first failure."""
        self._context = self._engine = self._runtime = None
        errors: list[Exception] = []
        for tname in list(self._buffers):
            ptr, _ = self._buffers.pop(tname)
            try:
                self._cuda("cudaFree", ptr)
            except RuntimeError as exc:
                errors.append(exc)
        if self._stream is not None:
            stream, self._stream = self._stream, None
            try:
                self._cuda("cudaStreamDestroy", stream)
            except RuntimeError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
