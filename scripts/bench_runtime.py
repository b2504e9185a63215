#!/usr/bin/env python3
"""Device-runtime benchmark: prints JSON.

Builds ViT-B-16 bundles with random weights (6 and 26 experts) and measures, on
onnxruntime CPU, in one run with the three timed alternately:
  - a streaming step: one new frame through preprocessing and the backbone, then
    every expert on the T-frame window, the NumPy router and the classifier;
  - one backbone frame alone;
  - a clip-model prediction: the backbone re-run on all T frames, then experts + router.
Targets (issue): step <= 1.15 x one backbone frame with 6 experts, <= 1.3 x with 26;
step >= 6 x faster than re-running T frames.

    python scripts/bench_runtime.py [--experts 6 26] [--repeats 15] [--model ViT-B-16]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_bundle(root: Path, model_name: str, num_experts: int, classes_per_task: int = 4) -> Path:
    """A bundle with random weights, written with the exporter's own steps."""
    import torch

    from stpr.export.onnx_export import export_backbone, export_expert
    from stpr.runtime.manifest import SCHEMA_VERSION, sha256_file
    from stpr.train.model.backbone import AdaptedVisionTower
    from stpr.train.model.clip_tower import load_clip
    from stpr.train.model.expert import TemporalExpert

    out = root / f"{model_name}-{num_experts}"
    out.mkdir(parents=True)
    shared = root / f"{model_name}-backbone.onnx"
    clip, pp = load_clip(model_name, "none", seed=0)
    tower = AdaptedVisionTower(clip.visual).eval()
    if not shared.exists():
        export_backbone(tower, shared, pp.size)
    shutil.copy(shared, out / "backbone.onnx")
    D, T, C = tower.out_dim, 8, num_experts * classes_per_task
    torch.manual_seed(0)
    experts = []
    for k in range(num_experts):
        experts.append(export_expert(TemporalExpert(D, T).eval(), out / f"expert_{k}.onnx", D).name)
    rng = np.random.default_rng(0)
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    np.save(out / "text_embeddings.npy", unit(rng.standard_normal((C, D))), allow_pickle=False)
    np.save(out / "anchors.npy", unit(rng.standard_normal((C, D))), allow_pickle=False)
    manifest = {
        "schema_version": SCHEMA_VERSION, "classes": [f"class_{c}" for c in range(C)],
        "class_to_expert": [c // classes_per_task for c in range(C)], "experts": experts,
        "backbone": "backbone.onnx", "routing": {"mode": "td", "tau": 0.1}, "logit_scale": 100.0,
        "preprocess": {"size": pp.size, "mean": list(pp.mean), "std": list(pp.std), "frames": T},
        "text_embeddings": "text_embeddings.npy", "anchors": "anchors.npy",
        "dims": {"D": D, "T": T, "K": num_experts, "C": C}, "tools": {}, "source": {"benchmark": True},
    }
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(out.iterdir())}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def measure(bundle_dir: Path, repeats: int, threads: int) -> dict:
    from stpr.runtime.bundle import load_bundle
    from stpr.runtime.preprocess import preprocess
    from stpr.runtime.recognizer import Recognizer
    from stpr.runtime.stream import FeatureRing

    b = load_bundle(bundle_dir)
    rec = Recognizer(b, "ort", "cpu")
    for r in [rec.backbone, *rec.experts]:
        r.threads = threads
    rng = np.random.default_rng(1)
    camera = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(b.frames)]
    with rec:
        ring = FeatureRing(b.frames, b.dim)
        for f in camera:
            ring.push(rec.frame_features(preprocess(f, b.size, b.mean, b.std)[None])[0])

        def backbone_frame() -> None:
            rec.frame_features(preprocess(camera[0], b.size, b.mean, b.std)[None])

        def stream_step() -> None:
            ring.push(rec.frame_features(preprocess(camera[0], b.size, b.mean, b.std)[None])[0])
            rec.classify(ring.window()[None])

        def clip_rerun() -> None:
            x = np.stack([preprocess(f, b.size, b.mean, b.std) for f in camera])
            rec.classify(rec.frame_features(x)[None])

        fns = {"backbone_frame": backbone_frame, "stream_step": stream_step, "clip_rerun_T_frames": clip_rerun}
        for fn in fns.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in fns}
        experts_ms = []
        for _ in range(repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(1000 * (time.perf_counter() - t0))
            experts_ms.append(rec.classify(ring.window()[None])["experts_ms"])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "experts": len(b.manifest["experts"]), "median_ms": med, "experts_only_ms": statistics.median(experts_ms),
        "step_over_backbone_frame": med["stream_step"] / med["backbone_frame"],
        "clip_rerun_over_step": med["clip_rerun_T_frames"] / med["stream_step"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", nargs="+", type=int, default=[6, 26])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.experts:
            bundle = make_bundle(Path(tmp), args.model, k)
            results.append(measure(bundle, args.repeats, args.threads))
            shutil.rmtree(bundle)
    targets = {"step_over_backbone_frame": {"6": 1.15, "26": 1.3}, "clip_rerun_over_step_min": 6.0}
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "onnxruntime": onnxruntime.__version__, "provider": "CPUExecutionProvider"}
    print(json.dumps({"benchmark": "runtime", "model": args.model, "machine": machine, "targets": targets,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
