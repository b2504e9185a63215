"""The bundle's model on a backend: frames -> features, a window of features -> scores."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bundle.load import Bundle
from ..contract import EXPERT_INPUT, TOWER_INPUT, TOWER_OUTPUT, fp16_twin
from ..errors import BundleError
from ..model.analytic import expand, mode_probabilities, own_expert_logits, task_probabilities
from ..model.backends import OrtRunner
from ..model.experts import ExpertsRunner, expert_files
from ..model.openset import check_threshold, head_unknown_scores, unknown_score
from ..model.router import classify, softmax
from ..model.tower import TowerIO, pool_features
from ..text.encoder import text_section
from .zero_shot import ZeroShot, zero_shot_logits


def make_runner(bundle: Bundle, file: str, backend: str, device: str, input_name: str,
                batch_max: int) -> Any:
    if backend == "ort":
        return OrtRunner(bundle.path / file, device)
    if backend == "trt":
        from .trt_build import EngineSpec
        from .trt_runner import TrtRunner

        shape = (3, bundle.size, bundle.size) if input_name == TOWER_INPUT else (bundle.frames, bundle.dim)
        spec = EngineSpec(bundle.path / file, input_name, (1, *shape), (1, *shape), (batch_max, *shape),
                          fp16=file.endswith(fp16_twin(".onnx")))
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


@dataclass
class Verdict:
    """What a prediction says; events and printouts only write it (`app.make_event`)."""
    top: list[tuple[str, float]]
    unknown: bool | None  # None: the bundle has no calibrated open-set score
    unknown_score: float | None
    zero_shot: list[bool] | None  # per `top` entry: a class added by name (None: none were added)


class Recognizer:
    """Context manager owning the backbone's runner and the experts' (fused: one; else one each).

    `experts` picks the expert precision (fp32, fp16, int8; default: that of the
    backbone); `fused=False` keeps the per-expert files even when the fused graph exists.
    `zero_shot`: classes added by name (`runtime.zero_shot`), scored after the trained ones.
    """

    def __init__(self, bundle: Bundle, backend: str = "ort", device: str = "cpu", fp16: bool = False,
                 experts: str | None = None, fused: bool = True, zero_shot: ZeroShot | None = None,
                 unknown_threshold: float | None = None) -> None:
        self.bundle = bundle
        self.unknown_threshold = unknown_threshold_for(bundle, unknown_threshold)
        self.head = bundle.head
        self.zero_shot = zero_shot
        self.names = list(bundle.classes) + (zero_shot.names if zero_shot else [])
        self.variant = experts or ("fp16" if fp16 else "fp32")
        if self.variant == "int8" and backend != "ort":
            raise ValueError("--experts int8 runs on onnxruntime (it is the CPU variant); "
                             "with --backend trt use --experts fp16")
        self.stpr = self.head is None or self.head.needs_stpr
        # The window holds one D-wide block per image tower that runs, each tower once per
        # frame: StPR's adapted tower, the head's tower (shared when it is the same file) and,
        # for classes added by name, the frozen tower. Streaming keeps one ring of them.
        self.towers: list[str] = []  # ONNX files, in window order
        self.block: dict[str, int] = {}  # role (stpr, head, frozen) -> its block in the window
        self.tower_io: dict[str, TowerIO] = {}  # a tower from --tower: its tensor names and pooling
        if self.stpr:
            self._use("stpr", bundle.model_files(fp16)[0])
        if self.head is not None:
            h = self.head
            self._use("head", h.tower_fp16 if fp16 and h.tower_fp16 else h.tower_file)
            if h.tower_io is not None:
                if backend != "ort":
                    raise ValueError(f"--backend {backend}: bundle {str(bundle.path)!r} serves its head on a tower "
                                     "brought with --tower, which runs on onnxruntime; use --backend ort")
                self.tower_io[h.tower_file] = h.tower_io
        if zero_shot is not None:
            text = text_section(bundle.manifest, bundle.path)
            self._use("frozen", text["image_tower_fp16" if fp16 else "image_tower"])
        self.tower_runners = [make_runner(bundle, f, backend, device, TOWER_INPUT, 4 * bundle.frames)
                              for f in self.towers]
        self.backbone = self.tower_runners[0]
        self.feature_dim = bundle.dim * len(self.towers)
        self.experts = None
        if self.stpr:
            files, is_fused = expert_files(bundle.manifest, self.variant, fused)
            self.experts = ExpertsRunner([make_runner(bundle, f, backend, device, EXPERT_INPUT, 8) for f in files],
                                         is_fused)

    def _use(self, role: str, file: str) -> None:
        if file not in self.towers:
            self.towers.append(file)
        self.block[role] = self.towers.index(file)

    def describe(self) -> str:
        """What runs per step, for the start-up line: the experts, the head, the towers."""
        parts = []
        if self.experts is not None:
            parts.append(f"{len(self.bundle.manifest['experts'])} experts "
                         f"({self.variant}{', fused' if self.experts.fused else ''})")
        if self.head is not None:
            parts.append(f"analytic head ({self.head.mode}, {self.head.tower} tower)")
        return ", ".join(parts) + f", {len(self.towers)} tower pass{'es' if len(self.towers) > 1 else ''} per frame"

    def window_block(self, window: np.ndarray, role: str) -> np.ndarray:
        """The `(B, T, D)` features of the tower that serves `role` out of a `(B, T, feature_dim)` window."""
        D, i = self.bundle.dim, self.block[role]
        return window[..., i * D:(i + 1) * D]

    def _runners(self) -> list:
        return self.tower_runners + ([self.experts] if self.experts is not None else [])

    def __enter__(self) -> "Recognizer":
        entered = []
        try:
            for runner in self._runners():
                runner.__enter__()
                entered.append(runner)
            self._check_graph_dims()
        except BaseException:
            for runner in entered:
                runner.__exit__(None, None, None)
            raise
        return self

    def _check_graph_dims(self) -> None:
        """The manifest's image size, T and D against what the ONNX graphs declare: a resealed
        manifest that disagrees would otherwise fail later as an onnxruntime traceback."""
        b = self.bundle
        want_tower, want_experts = [3, b.size, b.size], [b.frames, b.dim]
        runners = [(r, want_tower) for r in self.tower_runners]
        runners += [(r, want_experts) for r in (self.experts.runners if self.experts is not None else [])]
        for runner, want in runners:
            session = getattr(runner, "session", None)  # onnxruntime; TensorRT engines are built from these
            if session is None:
                continue
            got_in = list(session.get_inputs()[0].shape[1:])
            io = self.tower_io.get(runner.path.name)
            out_shape = session.get_outputs()[0].shape
            got_out = out_shape[1] if io is not None and io.pool == "mean-spatial" else out_shape[-1]
            bad_in = any(isinstance(g, int) and g != w for g, w in zip(got_in, want))
            if bad_in or (isinstance(got_out, int) and got_out != b.dim):
                raise BundleError(f"{runner.path.name!r} takes {got_in} and gives {got_out} features, but the "
                                  f"manifest says {want} and D = {b.dim} (dims.T {b.frames}, preprocess.size "
                                  f"{b.size}): the manifest does not match its graphs; re-export the bundle")

    def __exit__(self, *exc: object) -> None:
        for runner in self._runners():
            runner.__exit__(*exc)

    @property
    def providers(self) -> list[str]:
        return list(self.backbone.providers)

    def frame_features(self, frames: np.ndarray) -> np.ndarray:
        """`(N, 3, H, W)` preprocessed frames -> `(N, feature_dim)`: each tower's features, in
        window order (`window_block` picks one out)."""
        feats = [self._tower_features(r, f, frames) for r, f in zip(self.tower_runners, self.towers)]
        return feats[0] if len(feats) == 1 else np.concatenate(feats, axis=-1)

    def _tower_features(self, runner: Any, file: str, frames: np.ndarray) -> np.ndarray:
        io = self.tower_io.get(file)
        if io is None:  # stpr's own towers: fixed tensor names, (N, D) out
            return runner.infer({TOWER_INPUT: frames})[TOWER_OUTPUT]
        return pool_features(runner.infer({io.input: frames})[io.output], io.pool)

    def classify(self, window: np.ndarray, topk: int | None = None) -> dict[str, Any]:
        """`(B, T, feature_dim)` frame features -> probabilities `(B, C + Z)`, weights `(B, K)`
        (the router's; with the head, its probability per task), the unknown score, and the
        time spent in the experts and in the router + classifiers."""
        b = self.bundle
        t0 = time.perf_counter()
        out: dict[str, np.ndarray] = {}
        z = None
        if self.stpr:
            feats = self.window_block(window, "stpr")
            z = self.experts.infer(feats)  # (B, K, D)
        t1 = time.perf_counter()
        if self.stpr:
            out = classify(feats, z, b.text_embeddings, b.class_to_expert, b.anchors, b.routing, b.tau,
                           b.logit_scale, b.calibration)
        probs = None
        if self.head is not None:
            probs, weights, fit = self._head_classify(window, out, z)
            logits = np.log(np.maximum(probs, 1e-300)).astype(np.float32)  # softmax(log p) = p
        else:
            logits, weights = out["logits"], out["weights"]
            # The open-set score is calibrated on the trained classes: computed from them alone.
            fit = None if b.unknown is None else unknown_score(b.unknown["score"], out, b.logit_scale,
                                                              b.unknown.get("standardise"))
        if self.zero_shot is not None:  # ranked against the trained classes (runtime/engine/zero_shot.py)
            zs = zero_shot_logits(self.window_block(window, "frozen").mean(axis=1), b.text_embeddings,
                                  self.zero_shot.embeddings, logits, b.logit_scale)
            logits = np.concatenate([logits, zs], axis=1)
            probs = None
        if probs is None:
            probs = softmax(logits.astype(np.float64))
        t2 = time.perf_counter()
        out = {"probs": probs, "weights": weights, "logits": logits, "unknown_score": fit,
               "experts_ms": 1000 * (t1 - t0), "router_ms": 1000 * (t2 - t1)}
        if topk is not None:  # each window's verdict (streaming smooths first, then asks `verdict`)
            out["verdicts"] = [self.verdict(p, None if fit is None else float(fit[i]), topk)
                               for i, p in enumerate(probs)]
        return out

    def _head_classify(self, window: np.ndarray, out: dict[str, np.ndarray],
                       z: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The head's mode: class probabilities `(B, C)`, per-task probabilities `(B, K)`, unknown score."""
        b, h = self.bundle, self.head
        K = int(b.manifest["dims"]["K"])
        h_feats = expand(self.window_block(window, "head"), h.projection)  # (B, M)
        scores = (h_feats @ h.weights).astype(np.float32)
        own = None
        if h.mode in ("route-hard", "route-soft"):
            own = own_expert_logits(fbar=self.window_block(window, "stpr").mean(axis=1), z=z, text=b.text_embeddings,
                                    class_to_expert=b.class_to_expert, logit_scale=b.logit_scale)
        probs = mode_probabilities(h.mode, scores=scores, class_to_expert=b.class_to_expert, num_tasks=K,
                                   tau=h.tau, own_logits=own, stpr_logits=out.get("logits"),
                                   fuse_weight=h.fuse_weight)
        fit = None
        if b.unknown is not None:  # the head's own open-set score, calibrated at export
            fit = head_unknown_scores(scores, h_feats, h.subspace, h.tail_inverse,
                                      b.unknown.get("standardise"))[b.unknown["score"]]
        return probs, task_probabilities(probs, b.class_to_expert, K), fit

    def topk(self, probs: np.ndarray, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-probs)[:k]
        return [(self.names[i], float(probs[i])) for i in order]

    def zero_shot_flags(self, top: list[tuple[str, float]]) -> list[bool]:
        """Per entry of `top`: is it a class added by name (no expert)?"""
        added = set(self.zero_shot.names) if self.zero_shot else set()
        return [name in added for name, _ in top]

    def verdict(self, probs: np.ndarray, fit: float | None, topk: int) -> Verdict:
        """The one place that decides what a prediction says: the top classes, and `unknown`
        when the open-set score `fit` (smoothed like `probs` by the caller) is below the
        threshold. The score covers the trained classes it was calibrated on, so a clip
        whose top-1 is a class added by name matched a known name and is not unknown."""
        top = self.topk(probs, topk)
        flags = self.zero_shot_flags(top) if self.zero_shot is not None else None
        unknown = None
        if fit is not None and self.unknown_threshold is not None:
            unknown = bool(fit < self.unknown_threshold) and not (flags is not None and flags[0])
        return Verdict(top=top, unknown=unknown, unknown_score=fit, zero_shot=flags)
