"""The stpr-run loops: streaming (one backbone frame per prediction) and clip mode."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from ..engine.recognizer import Recognizer, Verdict
from ..errors import BundleError
from ..io.events import EventLog
from ..io.stream import FeatureRing
from ..model.preprocess import preprocess

if TYPE_CHECKING:
    from ..engine.watch import BundleWatcher
    from ..learn.live_learn import LiveLearner

STAGES = ("preprocess", "backbone", "experts", "router", "total")


@dataclass
class Summary:
    frames: int = 0  # source frames handled (predicted on if due, drawn, written)
    predictions: int = 0
    dropped: int = 0  # live frames replaced before the model took them
    decoded: int | None = None  # --clip: the frames decoded for its one prediction (None: streaming)
    started: float = field(default_factory=time.perf_counter)
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})

    def as_dict(self) -> dict:
        elapsed = time.perf_counter() - self.started
        pct = {s: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))}
               for s, v in self.latency_ms.items() if v}
        return {"frames": self.frames, "predictions": self.predictions, "dropped_frames": self.dropped,
                "elapsed_s": round(elapsed, 3), "fps": self.frames / elapsed if elapsed > 0 else 0.0,
                "latency_ms": pct}

    def text(self) -> str:
        d = self.as_dict()
        if self.decoded is not None:  # a rate over a video's length would count frames never decoded
            lines = [f"clip: 1 prediction from {self.decoded} frames decoded of the video's {d['frames']}, in "
                     f"{d['elapsed_s']:.2f} s"]
        else:
            lines = [f"frames {d['frames']}, predictions {d['predictions']}, dropped {d['dropped_frames']}, "
                     f"{d['fps']:.1f} fps over {d['elapsed_s']:.1f} s"]
        for stage, p in d["latency_ms"].items():
            lines.append(f"  {stage:<10} p50 {p['p50']:8.2f} ms   p99 {p['p99']:8.2f} ms")
        return "\n".join(lines)


def make_event(frame: int, t: float, verdict: Verdict, weights: np.ndarray | None, latency: dict[str, float]) -> dict:
    """One prediction as a JSON-ready event: it writes the recognizer's verdict (`top`, and
    with a calibrated open-set score `unknown` and `unknown_score`; `zero_shot` flags when
    classes were added by name), the routing weights (None: no expert ran, no `routing`
    field) and the latency. It decides nothing."""
    event: dict = {"frame": frame, "time": round(t, 4), "top": [[c, round(p, 6)] for c, p in verdict.top]}
    if verdict.unknown is not None:
        event.update({"unknown": verdict.unknown, "unknown_score": round(float(verdict.unknown_score), 6)})
    if verdict.zero_shot is not None:
        event["zero_shot"] = verdict.zero_shot
    if weights is not None:
        event["routing"] = {f"expert_{k}": round(float(w), 6) for k, w in enumerate(weights)}
    event["latency_ms"] = {k: round(v, 3) for k, v in latency.items()}
    return event


def _check_finite(probs: np.ndarray) -> None:
    # NaN scores mean damaged weights that still passed the hashes (re-exported wrongly):
    # stop with the cause instead of writing NaN, which is not JSON, into the events.
    if not np.isfinite(probs).all():
        raise BundleError("the bundle's model produced NaN or inf scores; its ONNX weights are damaged: "
                          "re-export the bundle")


FrameHook = Callable[[np.ndarray, "dict | None"], None]


def refilled_ring(rec: Recognizer, inputs: Iterable[np.ndarray]) -> FeatureRing:
    """A ring for `rec`, filled from the last T preprocessed frames by its own towers (each
    new bundle retrains the adapters), so the first step after a swap predicts with no gap."""
    ring = FeatureRing(rec.bundle.frames, rec.feature_dim)
    frames = list(inputs)
    if frames:
        for f in rec.frame_features(np.stack(frames)):
            ring.push(f)
    return ring


def stream(rec: Recognizer, frames: Iterable[tuple[int, np.ndarray]], *, stride: int, smooth: int, topk: int,
           events: EventLog, summary: Summary, on_frame: FrameHook | None = None,
           max_frames: int | None = None, watcher: "BundleWatcher | None" = None,
           learner: "LiveLearner | None" = None) -> None:
    """Run the backbone once per frame entering the ring; predict once the ring is full.

    `on_frame(frame, latest_event)` sees every source frame (not only the predicting
    ones), with the latest prediction so far or None, so `--output` is a full copy.
    With a `watcher`, a new bundle it offers is swapped in between two steps. A
    `learner` (stpr-run --learn) sees every full window and records those it needs."""
    b = rec.bundle
    ring = FeatureRing(b.frames, rec.feature_dim)
    recent: deque[np.ndarray] = deque(maxlen=max(1, smooth))
    recent_fit: deque[float] = deque(maxlen=max(1, smooth))  # the open-set score, smoothed like the scores
    inputs: deque[np.ndarray] = deque(maxlen=b.frames)  # the ring's frames, preprocessed: a swap re-encodes them
    latest: dict | None = None
    for index, frame in frames:
        if max_frames is not None and summary.frames >= max_frames:
            break
        if index % stride == 0:
            if watcher is not None and (new := watcher.between_steps(rec, index, events.write,
                                                                     summary.started)) is not None:
                rec, b = new, new.bundle
                ring = refilled_ring(rec, inputs)
                recent.clear()  # scores of another class list cannot be averaged in
                recent_fit.clear()
            t0 = time.perf_counter()
            x = preprocess(frame, b.size, b.mean, b.std)[None]
            if watcher is not None:
                inputs.append(x[0])
            t1 = time.perf_counter()
            ring.push(rec.frame_features(x)[0])
            t2 = time.perf_counter()
            if ring.full:
                if learner is not None:
                    learner.on_step(rec, ring.window(), index)
                out = rec.classify(ring.window()[None])
                recent.append(out["probs"][0])
                probs = np.mean(recent, axis=0)
                if out["unknown_score"] is not None:
                    recent_fit.append(float(out["unknown_score"][0]))
                _check_finite(probs)
                total = 1000 * (time.perf_counter() - t0)
                latency = {"preprocess": 1000 * (t1 - t0), "backbone": 1000 * (t2 - t1),
                           "experts": out["experts_ms"], "router": out["router_ms"], "total": total}
                for k, v in latency.items():
                    summary.latency_ms[k].append(v)
                summary.predictions += 1
                fit = float(np.mean(recent_fit)) if recent_fit else None
                latest = make_event(index, time.perf_counter() - summary.started, rec.verdict(probs, fit, topk),
                                    routing_weights(rec, out), latency)
                if learner is not None and (learning := learner.status()) is not None:
                    latest["learning"] = learning
                events.write(latest)
        if on_frame:
            on_frame(frame, latest)
        summary.frames += 1  # counted once handled: a Ctrl-C mid-frame leaves it out, as it is out of --output


def classify_clip(rec: Recognizer, frames: list[np.ndarray], topk: int, last_index: int) -> dict:
    """Whole-video classification from its T sampled frames (`clip.clip_frames`);
    `last_index` is the video frame the last of them came from."""
    b = rec.bundle
    t0 = time.perf_counter()
    x = np.stack([preprocess(f, b.size, b.mean, b.std) for f in frames])
    t1 = time.perf_counter()
    feats = rec.frame_features(x)
    t2 = time.perf_counter()
    out = rec.classify(feats[None], topk=topk)
    _check_finite(out["probs"][0])
    latency = {"preprocess": 1000 * (t1 - t0), "backbone": 1000 * (t2 - t1), "experts": out["experts_ms"],
               "router": out["router_ms"], "total": 1000 * (time.perf_counter() - t0)}
    return make_event(last_index, 0.0, out["verdicts"][0], routing_weights(rec, out), latency)


def routing_weights(rec: Recognizer, out: dict) -> np.ndarray | None:
    """The experts' weights of the first window, for the event's `routing`; None for the head
    alone, where no expert runs (its per-task probabilities are no routing)."""
    return out["weights"][0] if rec.stpr else None
