#!/usr/bin/env python3
"""Export benchmark: prints JSON.

For the tiny demo CLIP and ViT-B-16 (random weights): time to export the adapted
backbone and one expert to ONNX and to make their fp16 twins, the file sizes, and
backbone latency for 1 and for 8 frames in onnxruntime (CPU, fp32 and fp16) vs
PyTorch eager, measured alternately in one run and reported as ratios.

    python scripts/bench/bench_export.py [--models stpr-tiny ViT-B-16] [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _median_pair(fa, fb, repeats: int) -> tuple[float, float]:
    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def bench(model_name: str, repeats: int, workdir: Path) -> dict:
    import onnxruntime as ort
    import torch

    from stpr.export.fp16 import to_fp16
    from stpr.export.onnx_export import export_backbone, export_expert
    from stpr.train.model.backbone import AdaptedVisionTower
    from stpr.train.model.clip_tower import load_clip
    from stpr.train.model.expert import TemporalExpert

    clip, pp = load_clip(model_name, "none", seed=0)
    tower = AdaptedVisionTower(clip.visual).eval()
    expert = TemporalExpert(tower.out_dim, 8).eval()
    out: dict = {"model": model_name, "image_size": pp.size, "export_s": {}, "size_mib": {}, "latency_ms": {}}
    paths = {}
    for name, fn in (("backbone.onnx", lambda p: export_backbone(tower, p, pp.size)),
                     ("expert.onnx", lambda p: export_expert(expert, p, tower.out_dim))):
        t0 = time.perf_counter()
        paths[name] = fn(workdir / f"{model_name}-{name}")
        out["export_s"][name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        half = name.replace(".onnx", ".fp16.onnx")
        paths[half] = to_fp16(paths[name], workdir / f"{model_name}-{half}")
        out["export_s"][half] = time.perf_counter() - t0
    out["size_mib"] = {k: p.stat().st_size / 2**20 for k, p in paths.items()}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = {k: ort.InferenceSession(str(paths[k]), opts, providers=["CPUExecutionProvider"])
                for k in ("backbone.onnx", "backbone.fp16.onnx")}
    for n in (1, 8):
        x = torch.randn(n, 3, pp.size, pp.size)
        xn = x.numpy()

        def eager() -> None:
            with torch.no_grad():
                tower(x)

        for key, tag in (("backbone.onnx", "ort_fp32"), ("backbone.fp16.onnx", "ort_fp16")):
            ort_call = lambda s=sessions[key]: s.run(None, {"frames": xn})  # noqa: E731
            t_ort, t_eager = _median_pair(ort_call, eager, repeats)
            # Each ratio uses the eager time measured alternately with it.
            out["latency_ms"].setdefault(f"{n}_frames", {}).update({
                tag: 1000 * t_ort, f"torch_eager_paired_with_{tag}": 1000 * t_eager,
                f"{tag}_over_eager": t_ort / t_eager})
    return out


EPILOG = """Prints one JSON object: export seconds, file sizes and latencies per model, with the ONNX/eager
ratios. Takes about 50 s on this machine (2 CPU cores, shared with other jobs) for --models
stpr-tiny; ViT-B-16 (in the defaults) adds several minutes (not timed here)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["stpr-tiny", "ViT-B-16"])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        results = [bench(m, args.repeats, Path(tmp)) for m in args.models]
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "onnxruntime": onnxruntime.__version__, "device": "CPU (onnxruntime CPUExecutionProvider)"}
    print(json.dumps({"benchmark": "export", "machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
