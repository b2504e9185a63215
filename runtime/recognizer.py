"""The bundle's model on a backend: frames -> features, a window of features -> scores."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .backends import OrtRunner
from .bundle import Bundle
from .experts import ExpertsRunner, expert_files
from .openset import check_threshold, unknown_score
from .router import classify, softmax


def make_runner(bundle: Bundle, file: str, backend: str, device: str, input_name: str,
                batch_max: int) -> Any:
    if backend == "ort":
        return OrtRunner(bundle.path / file, device)
    if backend == "trt":
        from .trt_build import EngineSpec
        from .trt_runner import TrtRunner

        shape = (3, bundle.size, bundle.size) if input_name == "frames" else (bundle.frames, bundle.dim)
        spec = EngineSpec(bundle.path / file, input_name, (1, *shape), (1, *shape), (batch_max, *shape),
                          fp16=file.endswith(".fp16.onnx"))
        engines = bundle.path / "engines"
        return TrtRunner(spec, engines, engines / "timing.cache")
    raise ValueError(f"--backend {backend!r} is not valid; choose ort or trt")


def unknown_threshold_for(bundle: Bundle, override: float | None) -> float | None:
    """The threshold below which a clip is `unknown`: `--unknown-threshold`, else the
    bundle's calibrated one; None (no rejection) for a bundle without a calibrated score.
    An override on such a bundle is refused: its scale belongs to the bundle's score."""
    if bundle.unknown is None:
        if override is not None:
            raise ValueError(f"--unknown-threshold: bundle {str(bundle.path)!r} has no calibrated unknown score "
                             "(exported without the run's held-out clips, or by an older stpr-export); "
                             "re-export it where the run's data can be read, or drop --unknown-threshold")
        return None
    if override is not None:  # finite, and inside the range of the bundle's score where it has one
        return check_threshold(override, "--unknown-threshold", bundle.unknown["score"])
    return float(bundle.unknown["threshold"])


class Recognizer:
    """Context manager owning the backbone's runner and the experts' (fused: one; else one each).

    `experts` picks the expert precision (fp32, fp16, int8; default: that of the
    backbone); `fused=False` keeps the per-expert files even when the fused graph exists.
    """

    def __init__(self, bundle: Bundle, backend: str = "ort", device: str = "cpu", fp16: bool = False,
                 experts: str | None = None, fused: bool = True, unknown_threshold: float | None = None) -> None:
        self.bundle = bundle
        self.unknown_threshold = unknown_threshold_for(bundle, unknown_threshold)
        self.variant = experts or ("fp16" if fp16 else "fp32")
        if self.variant == "int8" and backend != "ort":
            raise ValueError("--experts int8 runs on onnxruntime (it is the CPU variant); "
                             "with --backend trt use --experts fp16")
        backbone = bundle.model_files(fp16)[0]
        files, is_fused = expert_files(bundle.manifest, self.variant, fused)
        self.backbone = make_runner(bundle, backbone, backend, device, "frames", 4 * bundle.frames)
        self.experts = ExpertsRunner([make_runner(bundle, f, backend, device, "features", 8) for f in files],
                                     is_fused)

    def __enter__(self) -> "Recognizer":
        self.backbone.__enter__()
        try:
            self.experts.__enter__()
        except BaseException:
            self.backbone.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.backbone.__exit__(*exc)
        self.experts.__exit__(*exc)

    @property
    def providers(self) -> list[str]:
        return list(self.backbone.providers)

    def frame_features(self, frames: np.ndarray) -> np.ndarray:
        """`(N, 3, H, W)` preprocessed frames -> `(N, D)` features."""
        return self.backbone.infer({"frames": frames})["features"]

    def classify(self, window: np.ndarray) -> dict[str, Any]:
        """`(B, T, D)` frame features -> probabilities `(B, C)`, routing weights `(B, K)`,
        and the time spent in the experts and in the router + classifier."""
        b = self.bundle
        t0 = time.perf_counter()
        z = self.experts.infer(window)  # (B, K, D)
        t1 = time.perf_counter()
        out = classify(window, z, b.text_embeddings, b.class_to_expert, b.anchors, b.routing, b.tau, b.logit_scale,
                       b.calibration)
        probs = softmax(out["logits"].astype(np.float64))
        fit = None if b.unknown is None else unknown_score(b.unknown["score"], out, b.logit_scale,
                                                          b.unknown.get("standardise"))
        t2 = time.perf_counter()
        return {"probs": probs, "weights": out["weights"], "logits": out["logits"], "unknown_score": fit,
                "experts_ms": 1000 * (t1 - t0), "router_ms": 1000 * (t2 - t1)}

    def topk(self, probs: np.ndarray, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-probs)[:k]
        return [(self.bundle.classes[i], float(probs[i])) for i in order]
