"""stpr.runtime.engine.trt_runner: the TensorRT backend's logic on fake `tensorrt` and cuda-python
modules (a dict-backed fake GPU that really copies bytes and computes y = 2 * x), the
torch-free import, the missing-cuda-python hint, and one real engine where TensorRT runs."""
from __future__ import annotations

import ctypes
import enum
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from stpr.runtime.engine import trt_build, trt_runner
from stpr.runtime.engine.trt_build import EngineSpec, TensorRTUnavailable
from stpr.runtime.engine.trt_runner import TrtRunner

# --- fakes ----------------------------------------------------------------------------


class FakeCudart(types.ModuleType):
    """cuda-python's runtime API over a dict of bytearrays; every call returns (err, ...)."""

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorMemoryAllocation = 2

    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    class Stream:
        def __int__(self) -> int:
            return 0x5EED

    def __init__(self) -> None:
        super().__init__("cuda.bindings.runtime")
        self.memory: dict[int, bytearray] = {}  # device ptr -> its bytes
        self.mallocs: list[int] = []
        self.frees: list[int] = []
        self.copies: list[tuple[int, int]] = []  # (kind, nbytes)
        self.streams: list[FakeCudart.Stream] = []
        self.destroyed: list[FakeCudart.Stream] = []
        self.fail: str | None = None  # name of the call that should fail
        self.pending: list = []  # stream work: runs at cudaStreamSynchronize, as on a GPU
        self._next = 0x1000

    def _result(self, call: str, *values: object) -> tuple:
        if self.fail == call:
            return (self.cudaError_t.cudaErrorInvalidValue,)
        return (self.cudaError_t.cudaSuccess, *values)

    def cudaMalloc(self, nbytes: int) -> tuple:
        if self.fail == "cudaMalloc":
            return self._result("cudaMalloc")
        ptr, self._next = self._next, self._next + 0x1000 + nbytes
        self.memory[ptr] = bytearray(nbytes)
        self.mallocs.append(nbytes)
        return self._result("cudaMalloc", ptr)

    def cudaFree(self, ptr: int) -> tuple:
        del self.memory[ptr]  # KeyError on a double free or a wild pointer
        self.frees.append(ptr)
        return self._result("cudaFree")

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: object) -> tuple:
        assert stream in self.streams
        if self.fail == "cudaMemcpyAsync":
            return self._result("cudaMemcpyAsync")
        self.copies.append((kind, nbytes))
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            assert nbytes <= len(self.memory[dst]), "H2D copy overflows the device buffer"
            self.pending.append(lambda: self.memory[dst].__setitem__(
                slice(0, nbytes), ctypes.string_at(src, nbytes)))
        else:
            assert nbytes <= len(self.memory[src]), "D2H copy reads past the device buffer"
            self.pending.append(lambda: ctypes.memmove(dst, bytes(self.memory[src][:nbytes]), nbytes))
        return self._result("cudaMemcpyAsync")

    def cudaStreamCreate(self) -> tuple:
        self.streams.append(self.Stream())
        return self._result("cudaStreamCreate", self.streams[-1])

    def cudaStreamSynchronize(self, stream: object) -> tuple:
        work, self.pending = self.pending, []
        for job in work:
            job()
        return self._result("cudaStreamSynchronize")

    def cudaStreamDestroy(self, stream: object) -> tuple:
        self.destroyed.append(stream)
        return self._result("cudaStreamDestroy")


def fake_tensorrt(cudart: FakeCudart, max_batch: int = 16) -> types.ModuleType:
    """An engine with input x (HALF, (batch, 5)) and output y = 2 * x (FLOAT)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.DataType = enum.Enum("DataType", "FLOAT HALF INT8 INT32 BOOL UINT8 INT64")
    trt.TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.rec = rec = {"shapes": [], "engine_bytes": None, "executed": 0}
    tensors = [("x", trt.TensorIOMode.INPUT, trt.DataType.HALF),
               ("y", trt.TensorIOMode.OUTPUT, trt.DataType.FLOAT)]

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class Context:
        def __init__(self) -> None:
            self.shape: tuple[int, ...] | None = None
            self.addr: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            rec["shapes"].append((name, tuple(shape)))
            self.shape = tuple(shape)
            return name == "x" and 1 <= shape[0] <= max_batch

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            assert name == "y" and self.shape is not None, "output shape asked before input set"
            return self.shape

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert stream_handle == 0x5EED
            n, x_ptr, y_ptr = int(np.prod(self.shape)), self.addr["x"], self.addr["y"]

            def run() -> None:  # enqueued: runs after the H2D copies, before the D2H ones
                x = np.frombuffer(bytes(cudart.memory[x_ptr][: n * 2]), np.float16)
                y = (x.astype(np.float32) * 2).tobytes()
                cudart.memory[y_ptr][: len(y)] = y
                rec["executed"] += 1

            cudart.pending.append(run)
            return True

    class Engine:
        num_io_tensors = len(tensors)

        def get_tensor_name(self, i: int) -> str:
            return tensors[i][0]

        def get_tensor_mode(self, name: str):
            return {t[0]: t[1] for t in tensors}[name]

        def get_tensor_dtype(self, name: str):
            return {t[0]: t[2] for t in tensors}[name]

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            rec["engine_bytes"] = data
            return Engine()

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


def _install_cuda(monkeypatch: pytest.MonkeyPatch, cudart: types.ModuleType | None,
                  legacy: bool = False) -> None:
    """Put cuda-python's modules into sys.modules: the >= 12.6.1 layout, the legacy
    `cuda.cudart` only (legacy=True), or None everywhere ("not installed")."""
    cuda = None if cudart is None else types.ModuleType("cuda")
    bindings = None if cudart is None or legacy else types.ModuleType("cuda.bindings")
    if cuda is not None:
        cuda.cudart = cudart
    if bindings is not None:
        bindings.runtime = cudart
        cuda.bindings = bindings
    for name, mod in [("cuda", cuda), ("cuda.bindings", bindings),
                      ("cuda.bindings.runtime", None if bindings is None else cudart),
                      ("cuda.cudart", None if cuda is None else cudart)]:
        monkeypatch.setitem(sys.modules, name, mod)


@pytest.fixture
def spec(tmp_path: Path) -> EngineSpec:
    onnx = tmp_path / "backbone.fp16.onnx"
    onnx.write_bytes(b"onnx")
    return EngineSpec(onnx, "x", (1, 5), (4, 5), (16, 5), fp16=True)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.SimpleNamespace:
    cudart = FakeCudart()
    trt = fake_tensorrt(cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    _install_cuda(monkeypatch, cudart)
    engine = tmp_path / "engines" / "backbone.fp16.gpu.trt10.3.0.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"serialized-engine")
    calls = []

    def ensure_engine(spec, engine_dir, timing_cache=None):
        calls.append((spec, engine_dir, timing_cache))
        return engine

    monkeypatch.setattr(trt_build, "ensure_engine", ensure_engine)
    return types.SimpleNamespace(cudart=cudart, trt=trt, ensure_calls=calls)


# --- logic on the fakes -----------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["cuda.bindings", "cuda.cudart"])
def test_infer_casts_grows_buffers_and_frees(fakes, spec: EngineSpec, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, legacy: bool) -> None:
    cudart, trt = fakes.cudart, fakes.trt
    _install_cuda(monkeypatch, cudart, legacy=legacy)
    rng = np.random.default_rng(0)
    runner = TrtRunner(spec, tmp_path / "engines", timing_cache=tmp_path / "t.cache")
    assert runner.name == "tensorrt:backbone.fp16.onnx"
    assert runner.providers == ["TensorRT 10.3.0"]
    with runner as r:
        assert r is runner
        assert fakes.ensure_calls == [(spec, tmp_path / "engines", tmp_path / "t.cache")]
        assert trt.rec["engine_bytes"] == b"serialized-engine"  # the path's bytes deserialized
        mallocs_per_call = []
        for batch in (2, 2, 8, 4):
            x = rng.normal(size=(batch, 5))  # float64 in; the engine's input is HALF
            before = len(cudart.mallocs)
            out = r.infer({"x": x})
            mallocs_per_call.append(len(cudart.mallocs) - before)
            assert set(out) == {"y"}
            y = out["y"]
            assert y.dtype == np.float32 and y.shape == (batch, 5)
            # Computed on the fake GPU from the bytes it received: 2 * fp16(x).
            np.testing.assert_array_equal(y, x.astype(np.float16).astype(np.float32) * 2)
            assert not np.array_equal(y, (x * 2).astype(np.float32))  # fp16 rounding shows
            h2d = [n for kind, n in cudart.copies if kind == 1][-1]
            assert h2d == batch * 5 * 2  # 2 bytes an element: cast to float16 before the copy
        assert mallocs_per_call == [2, 0, 2, 0]  # x and y, on the first call and on batch 8
        assert cudart.mallocs == [20, 40, 80, 160]  # grown to fit, never shrunk
        assert len(cudart.frees) == 2  # the batch-2 buffers, replaced
        assert trt.rec["shapes"] == [("x", (2, 5)), ("x", (2, 5)), ("x", (8, 5)), ("x", (4, 5))]
        assert trt.rec["executed"] == 4
        assert len(r.timings_ms) == 4 and all(t >= 0 for t in r.timings_ms)
    assert cudart.memory == {}  # every allocation freed on exit
    assert len(cudart.frees) == len(cudart.mallocs) == 4
    assert cudart.destroyed == cudart.streams and len(cudart.streams) == 1


def test_failing_cuda_call_names_it(fakes, spec: EngineSpec, tmp_path: Path) -> None:
    cudart = fakes.cudart
    with TrtRunner(spec, tmp_path / "engines") as r:
        r.infer({"x": np.ones((2, 5), np.float32)})
        cudart.fail = "cudaMemcpyAsync"
        with pytest.raises(RuntimeError, match=r"cudaMemcpyAsync failed: cudaErrorInvalidValue"):
            r.infer({"x": np.ones((2, 5), np.float32)})
        cudart.fail = "cudaMalloc"
        with pytest.raises(RuntimeError, match=r"cudaMalloc failed: cudaErrorInvalidValue"):
            r.infer({"x": np.ones((9, 5), np.float32)})  # needs bigger buffers
        cudart.fail = None
        assert len(r.timings_ms) == 1  # failed calls record no timing
    assert cudart.memory == {}  # freed on exit, the half-grown state included

    cudart.fail = "cudaStreamCreate"
    with pytest.raises(RuntimeError, match="cudaStreamCreate failed"):
        with TrtRunner(spec, tmp_path / "engines"):
            pass


def test_bad_feeds_raise_clearly(fakes, spec: EngineSpec, tmp_path: Path) -> None:
    runner = TrtRunner(spec, tmp_path / "engines")
    with pytest.raises(RuntimeError, match="not started"):
        runner.infer({"x": np.ones((2, 5))})
    with runner as r:
        with pytest.raises(ValueError, match=r"missing inputs \['x'\]"):
            r.infer({"frames": np.ones((2, 5))})
        with pytest.raises(RuntimeError, match=r"outside the engine's profile"):
            r.infer({"x": np.ones((17, 5))})  # above max_shape's batch of 16


def test_missing_cuda_python_hint(monkeypatch: pytest.MonkeyPatch, spec: EngineSpec,
                                  tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(FakeCudart()))
    _install_cuda(monkeypatch, None)  # `import cuda...` now raises ImportError

    def no_build(*args: object, **kwargs: object) -> Path:
        raise AssertionError("ensure_engine must not run (a build takes minutes) without cuda-python")

    monkeypatch.setattr(trt_build, "ensure_engine", no_build)
    with pytest.raises(TensorRTUnavailable, match=r"pip install cuda-python") as info:
        with TrtRunner(spec, tmp_path / "engines"):
            pass
    assert "JetPack" in str(info.value)


def test_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; import stpr.runtime.engine.trt_runner; "
            "assert 'tensorrt' not in sys.modules and 'cuda' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_check_unpacks_results() -> None:
    ok = FakeCudart.cudaError_t.cudaSuccess
    assert trt_runner._check((ok, 123), "cudaMalloc") == 123
    assert trt_runner._check((ok,), "cudaFree") is None
    with pytest.raises(RuntimeError,
                       match=r"CUDA call cudaFree failed: cudaErrorMemoryAllocation \(2\)"):
        trt_runner._check((FakeCudart.cudaError_t.cudaErrorMemoryAllocation,), "cudaFree")


# --- a real engine ------------------------------------------------------------------------


@pytest.mark.trt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt is not installed")
def test_real_engine_runs(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(  # y = x * 2 with a dynamic batch; no torch involved
        [helper.make_node("Mul", ["x", "two"], ["y"])], "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by older TensorRT ONNX parsers too
    onnx.checker.check_model(model)
    path = tmp_path / "double.onnx"
    onnx.save(model, str(path))
    spec = EngineSpec(path, "x", (1, 4), (4, 4), (16, 4), fp16=False)
    first = TrtRunner(spec, tmp_path / "engines", timing_cache=tmp_path / "timing.cache")
    try:
        first.__enter__()  # builds the engine (the slow part)
    except TensorRTUnavailable as exc:  # TensorRT imports, but no GPU or no cuda-python
        pytest.skip(f"no CUDA GPU (or no cuda-python) to run on: {exc}")
    first.close()
    with TrtRunner(spec, tmp_path / "engines") as r:  # reuses the cached engine
        assert r.engine_path == first.engine_path
        for batch in (3, 9, 2):
            x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4) - 5
            y = r.infer({"x": x})["y"]
            assert y.dtype == np.float32 and y.shape == (batch, 4)
            np.testing.assert_allclose(y, x * 2)
        assert len(r.timings_ms) == 3
        assert r.providers[0].startswith("TensorRT ")
