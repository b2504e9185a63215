"""The stpr-run loops: streaming (one backbone frame per prediction) and clip mode."""
from __future__ import annotations

import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterable, Iterator

import cv2
import numpy as np

from .preprocess import preprocess
from .recognizer import Recognizer
from .sampling import centre_indices
from .stream import FeatureRing

if TYPE_CHECKING:
    from .watch import BundleWatcher

STAGES = ("preprocess", "backbone", "experts", "router", "total")


@dataclass
class Summary:
    frames: int = 0  # frames read from the source
    predictions: int = 0
    dropped: int = 0  # live frames replaced before the model took them
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
        lines = [f"frames {d['frames']}, predictions {d['predictions']}, dropped {d['dropped_frames']}, "
                 f"{d['fps']:.1f} fps over {d['elapsed_s']:.1f} s"]
        for stage, p in d["latency_ms"].items():
            lines.append(f"  {stage:<10} p50 {p['p50']:8.2f} ms   p99 {p['p99']:8.2f} ms")
        return "\n".join(lines)


class EventLog:
    """jsonl events, one line per prediction, flushed at once so a crash loses none."""

    def __init__(self, path: Path | None) -> None:
        self.f: IO[str] | None = open(path, "w", encoding="utf-8") if path else None

    def write(self, event: dict) -> None:
        if self.f:
            self.f.write(json.dumps(event) + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None


def make_event(frame: int, t: float, top: list[tuple[str, float]], weights: np.ndarray,
               latency: dict[str, float]) -> dict:
    return {"frame": frame, "time": round(t, 4), "top": [[c, round(p, 6)] for c, p in top],
            "routing": {f"expert_{k}": round(float(w), 6) for k, w in enumerate(weights)},
            "latency_ms": {k: round(v, 3) for k, v in latency.items()}}


def draw_overlay(frame: np.ndarray, event: dict, fps: float) -> np.ndarray:
    """Label, score, routing weights and fps on a copy of the frame."""
    out = frame.copy()
    h = out.shape[0]
    scale = max(0.35, h / 720)
    label, score = event["top"][0]
    cv2.putText(out, f"{label} {score:.2f}", (8, int(28 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 255, 0), max(1, int(2 * scale)), cv2.LINE_AA)
    cv2.putText(out, f"{fps:.1f} fps", (8, int(56 * scale) + 8), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.8,
                (255, 255, 255), 1, cv2.LINE_AA)
    for k, w in enumerate(event["routing"].values()):  # one bar per expert
        x0 = 8 + k * int(14 * scale + 4)
        cv2.rectangle(out, (x0, h - 8 - int(60 * scale * w)), (x0 + int(10 * scale + 2), h - 8), (0, 200, 255), -1)
    return out


def stream(rec: Recognizer, frames: Iterable[tuple[int, np.ndarray]], *, stride: int, smooth: int, topk: int,
           events: EventLog, summary: Summary, on_event=None, max_frames: int | None = None,
           watcher: "BundleWatcher | None" = None) -> None:
    """Run the backbone once per frame entering the ring; predict once the ring is full.
    With a `watcher`, a new bundle it offers is swapped in between two steps."""
    b = rec.bundle
    ring = FeatureRing(b.frames, b.dim)
    recent: deque[np.ndarray] = deque(maxlen=max(1, smooth))
    inputs: deque[np.ndarray] = deque(maxlen=b.frames)  # the ring's frames, preprocessed: a swap re-encodes them
    for index, frame in frames:
        summary.frames += 1
        if max_frames is not None and summary.frames > max_frames:
            summary.frames -= 1
            break
        if index % stride:
            continue
        if watcher is not None:
            rec, new_ring = watcher.between_steps(rec, inputs, index, events.write, summary.started)
            if new_ring is not None:
                b, ring = rec.bundle, new_ring
                recent.clear()  # scores of another class list cannot be averaged in
        t0 = time.perf_counter()
        x = preprocess(frame, b.size, b.mean, b.std)[None]
        if watcher is not None:
            inputs.append(x[0])
        t1 = time.perf_counter()
        ring.push(rec.frame_features(x)[0])
        t2 = time.perf_counter()
        if not ring.full:
            continue
        out = rec.classify(ring.window()[None])
        recent.append(out["probs"][0])
        probs = np.mean(recent, axis=0)
        total = 1000 * (time.perf_counter() - t0)
        latency = {"preprocess": 1000 * (t1 - t0), "backbone": 1000 * (t2 - t1),
                   "experts": out["experts_ms"], "router": out["router_ms"], "total": total}
        for k, v in latency.items():
            summary.latency_ms[k].append(v)
        summary.predictions += 1
        event = make_event(index, time.perf_counter() - summary.started, rec.topk(probs, topk),
                           out["weights"][0], latency)
        events.write(event)
        if on_event:
            on_event(frame, event)


def classify_clip(rec: Recognizer, frames: Iterator[np.ndarray], topk: int) -> tuple[dict, int]:
    """Whole-video classification with the training-time sampling; returns (event, frames)."""
    b = rec.bundle
    all_frames = list(frames)  # a clip is short; keeps one decode pass
    if not all_frames:
        raise ValueError("the video has no frames")
    idx = centre_indices(len(all_frames), b.frames)
    t0 = time.perf_counter()
    x = np.stack([preprocess(all_frames[i], b.size, b.mean, b.std) for i in idx])
    t1 = time.perf_counter()
    feats = rec.frame_features(x)
    t2 = time.perf_counter()
    out = rec.classify(feats[None])
    latency = {"preprocess": 1000 * (t1 - t0), "backbone": 1000 * (t2 - t1), "experts": out["experts_ms"],
               "router": out["router_ms"], "total": 1000 * (time.perf_counter() - t0)}
    return make_event(int(idx[-1]), 0.0, rec.topk(out["probs"][0], topk), out["weights"][0], latency), len(all_frames)
