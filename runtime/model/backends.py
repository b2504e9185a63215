"""Backends behind one small interface (Polygraphy style): `infer(feed) -> outputs`,
context managers, each recording its own timing. TensorRT lives in `trt_runner`."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import (
    BundleError,
    DeviceUnavailable,  # noqa: F401 (also imported from here)
)

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str
    providers: list[str]
    timings_ms: list[float]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
    def __enter__(self) -> "Backend": ...
    def __exit__(self, *exc: object) -> None: ...


# --device -> onnxruntime providers, best first. CPU stays last as the op fallback.
ORT_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OrtRunner:
    def __init__(self, path: Path, device: str = "cpu", threads: int = 0) -> None:
        if device not in ORT_PROVIDERS:
            raise ValueError(f"--device {device!r} is not valid; choose cpu or cuda")
        self.path, self.device, self.threads = Path(path), device, threads
        self.name = f"onnxruntime:{self.path.name}"
        self.providers: list[str] = []
        self.timings_ms: list[float] = []
        self.session = None

    def __enter__(self) -> "OrtRunner":
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = [p for p in ORT_PROVIDERS[self.device] if p in available]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # One session per model file: with spinning on, the idle pools of the other
        # sessions busy-wait on the cores the running one needs (2-8 on a Jetson).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            opts.intra_op_num_threads = self.threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=wanted)
        except Exception as e:  # onnxruntime's own types (InvalidProtobuf, Fail, ...), none exported stably
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BundleError(f"onnxruntime cannot load {self.path.name!r} ({first[:300]}); the file is corrupt "
                              "or not from stpr-export: re-export the bundle") from e
        self.providers = self.session.get_providers()
        log.info("%s: providers in use %s", self.name, self.providers)
        if self.device == "cuda" and self.providers[0] == "CPUExecutionProvider":
            raise DeviceUnavailable(
                f"--device cuda asked for a GPU, but onnxruntime runs {self.path.name} on {self.providers} "
                f"(available: {available}); install onnxruntime-gpu with a matching CUDA, or use --device cpu"
            )
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]
        return self

    def __exit__(self, *exc: object) -> None:
        self.session = None

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        # Float inputs go in as float32; integer ones (the text tower's token ids) keep their type.
        outs = self.session.run(self._outputs, {k: np.ascontiguousarray(
            feed[k], dtype=None if np.issubdtype(np.asarray(feed[k]).dtype, np.integer) else np.float32)
            for k in self._inputs})
        self.timings_ms.append(1000 * (time.perf_counter() - t0))
        return dict(zip(self._outputs, outs))
