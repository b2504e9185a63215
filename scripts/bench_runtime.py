#!/usr/bin/env python3
"""Device-runtime benchmark: many experts at the cost of one frame. Prints JSON.

Builds a ViT-B-16 bundle with random weights and K experts (default 26) with the
exporter's own steps (per-expert ONNX, the fused graph, its int8 quantization, the
fp16 twins), then on onnxruntime CPU, in ONE process and against the SAME backbone
session, times alternately:
  - one backbone frame (preprocess + backbone): the denominator;
  - a streaming step (one new frame + the K experts on the T-frame window + router)
    with the experts as fp32 per-expert files, the fused fp32 graph, the fused int8 graph,
and the clip model's way (the backbone re-run on all T frames), in a shuffled order each round.
Reports step / frame per variant (target <= 1.15 with 26 experts), the experts alone,
the bundle size per variant, and the peak RSS of a process serving each variant alone
(measured in a child process each, so the variants do not add up).

    python scripts/bench_runtime.py [--experts 26] [--repeats 20] [--model ViT-B-16] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as stpr-run sets it (runtime/entry.py), before numpy loads
import numpy as np  # noqa: E402

TARGET = 1.15
VARIANTS = {"fp32_per_expert": ("fp32", False), "fp32_fused": ("fp32", True), "int8_fused": ("int8", True)}


def make_bundle(root: Path, model_name: str, num_experts: int, classes_per_task: int = 4) -> Path:
    """A bundle with random weights and every expert variant, written with the exporter's steps."""
    import torch

    from stpr.export.fp16 import to_fp16
    from stpr.export.fuse import fuse_experts
    from stpr.export.int8 import to_int8
    from stpr.export.onnx_export import export_backbone, export_expert
    from stpr.runtime.experts import FUSED_FILE, FUSED_KEY
    from stpr.runtime.manifest import SCHEMA_VERSION, sha256_file
    from stpr.train.model.backbone import AdaptedVisionTower
    from stpr.train.model.clip_tower import load_clip
    from stpr.train.model.expert import TemporalExpert

    out = root / f"{model_name}-{num_experts}"
    out.mkdir(parents=True)
    clip, pp = load_clip(model_name, "none", seed=0)
    tower = AdaptedVisionTower(clip.visual).eval()
    export_backbone(tower, out / "backbone.onnx", pp.size)
    D, T, C = tower.out_dim, 8, num_experts * classes_per_task
    torch.manual_seed(0)
    experts = [export_expert(TemporalExpert(D, T).eval(), out / f"expert_{k}.onnx", D).name for k in range(num_experts)]
    experts_fp16 = [to_fp16(out / e, out / e.replace(".onnx", ".fp16.onnx")).name for e in experts]
    fused = {"fp32": fuse_experts([out / e for e in experts], out / FUSED_FILE["fp32"]).name,
             "fp16": fuse_experts([out / e for e in experts_fp16], out / FUSED_FILE["fp16"]).name}
    fused["int8"] = to_int8(out / fused["fp32"], out / FUSED_FILE["int8"]).name
    backbone_fp16 = to_fp16(out / "backbone.onnx", out / "backbone.fp16.onnx").name
    rng = np.random.default_rng(0)
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    np.save(out / "text_embeddings.npy", unit(rng.standard_normal((C, D))), allow_pickle=False)
    np.save(out / "anchors.npy", unit(rng.standard_normal((C, D))), allow_pickle=False)
    manifest = {
        "schema_version": SCHEMA_VERSION, "classes": [f"class_{c}" for c in range(C)],
        "class_to_expert": [c // classes_per_task for c in range(C)], "experts": experts,
        "experts_fp16": experts_fp16, "backbone": "backbone.onnx", "backbone_fp16": backbone_fp16,
        **{FUSED_KEY[v]: f for v, f in fused.items()},
        "routing": {"mode": "td", "tau": 0.1}, "logit_scale": 100.0,
        "preprocess": {"size": pp.size, "mean": list(pp.mean), "std": list(pp.std), "frames": T},
        "text_embeddings": "text_embeddings.npy", "anchors": "anchors.npy",
        "dims": {"D": D, "T": T, "K": num_experts, "C": C}, "tools": {}, "source": {"benchmark": True},
    }
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(out.iterdir())}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def sizes_mib(bundle: Path) -> dict:
    """On-disk size per variant: the files a device serving it loads, and the whole bundle."""
    from stpr.runtime.experts import expert_files

    import onnx

    m = json.loads((bundle / "manifest.json").read_text())

    def mib(names: list[str]) -> float:  # the files and the external weight files they point at, each once
        files = set(names)
        for n in (n for n in names if n.endswith(".onnx")):
            model = onnx.load(str(bundle / n), load_external_data=False)
            files |= {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        return round(sum((bundle / n).stat().st_size for n in files) / 2**20, 1)

    out = {}
    for name, backbone, variant, fused in (("fp32_per_expert", "backbone", "fp32", False),
                                           ("fp32_fused", "backbone", "fp32", True),
                                           ("fp16_fused", "backbone_fp16", "fp16", True),
                                           ("int8_fused", "backbone", "int8", True)):
        files = expert_files(m, variant, fused)[0]
        out[name] = {"experts_mib": mib(files), "with_backbone_mib": mib([m[backbone], *files])}
    out["whole_bundle_mib (stpr-export --fp16 --int8)"] = mib(list(m["files"]))
    return out


def measure(bundle_dir: Path, repeats: int, threads: int) -> dict:
    from stpr.runtime.backends import OrtRunner
    from stpr.runtime.bundle import load_bundle
    from stpr.runtime.experts import ExpertsRunner, expert_files
    from stpr.runtime.preprocess import preprocess
    from stpr.runtime.recognizer import Recognizer
    from stpr.runtime.stream import FeatureRing

    b = load_bundle(bundle_dir)
    rec = Recognizer(b, "ort", "cpu")  # its backbone is the one denominator of every ratio
    rec.backbone.threads = threads
    runners = {}
    for name, (variant, fused) in VARIANTS.items():
        files, is_fused = expert_files(b.manifest, variant, fused)
        runners[name] = ExpertsRunner([OrtRunner(b.path / f, threads=threads) for f in files], is_fused)
    camera = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    with rec:
        for r in runners.values():
            r.__enter__()
        ring = FeatureRing(b.frames, b.dim)
        while not ring.full:
            ring.push(rec.frame_features(preprocess(camera, b.size, b.mean, b.std)[None])[0])

        def backbone_frame() -> None:
            rec.frame_features(preprocess(camera, b.size, b.mean, b.std)[None])

        router_ms: dict[str, list[float]] = {n: [] for n in runners}

        def step(name: str) -> tuple[float, float]:
            rec.experts = runners[name]
            t0 = time.perf_counter()
            ring.push(rec.frame_features(preprocess(camera, b.size, b.mean, b.std)[None])[0])
            frame_ms = 1000 * (time.perf_counter() - t0)
            out = rec.classify(ring.window()[None])
            router_ms[name].append(out["router_ms"])
            return out["experts_ms"], frame_ms

        def clip_rerun() -> None:  # what streaming avoids: the backbone on all T frames, every prediction
            rec.experts = runners["fp32_fused"]
            x = np.stack([preprocess(camera, b.size, b.mean, b.std)] * b.frames)
            rec.classify(rec.frame_features(x)[None])

        fns = {"backbone_frame": backbone_frame, **{f"step_{n}": (lambda n=n: step(n)) for n in runners},
               "clip_rerun_T_frames": clip_rerun}
        for fn in fns.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {k: [] for k in fns}
        experts_ms: dict[str, list[float]] = {n: [] for n in runners}
        frame_in_step_ms: dict[str, list[float]] = {n: [] for n in runners}
        for v in router_ms.values():
            v.clear()  # drop the warm-up
        order = np.random.default_rng(2)
        for _ in range(repeats):
            # A new order every round: what ran just before a call changes its time (by up
            # to 10 % here), and a fixed order would hand that bias to one variant.
            for name in order.permutation(list(fns)):
                fn = fns[name]
                t0 = time.perf_counter()
                got = fn()
                times[name].append(1000 * (time.perf_counter() - t0))
                if name.startswith("step_"):
                    experts_ms[name[5:]].append(got[0])
                    frame_in_step_ms[name[5:]].append(got[1])
        for r in runners.values():
            r.__exit__(None)
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    frame = med["backbone_frame"]
    return {"median_ms": med, "experts_only_median_ms": {n: round(statistics.median(v), 2) for n, v in experts_ms.items()},
            "frame_within_step_median_ms": {n: round(statistics.median(v), 2) for n, v in frame_in_step_ms.items()},
            "router_median_ms": {n: round(statistics.median(v), 2) for n, v in router_ms.items()},
            "step_over_backbone_frame": {n: round(med[f"step_{n}"] / frame, 3) for n in runners},
            "clip_rerun_over_fp32_fused_step": round(med["clip_rerun_T_frames"] / med["step_fp32_fused"], 2),
            "target_step_over_frame": TARGET,
            "target_met": {n: med[f"step_{n}"] / frame <= TARGET for n in runners}}


def serve_rss(bundle: Path, variant: str, fused: bool, steps: int = 5) -> float:
    """Peak RSS (GiB) of this process after loading only `variant` and running `steps` steps."""
    from stpr.runtime.bundle import load_bundle
    from stpr.runtime.recognizer import Recognizer

    b = load_bundle(bundle)
    with Recognizer(b, "ort", "cpu", experts=variant, fused=fused) as rec:
        x = np.zeros((1, 3, b.size, b.size), np.float32)
        window = np.repeat(rec.frame_features(x)[None], b.frames, axis=1)
        for _ in range(steps):
            rec.frame_features(x)
            rec.classify(window)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so the child would inherit
    # the peak of the parent that built the bundle with torch.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # KiB -> GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # no /proc: ru_maxrss (KiB on BSDs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", type=int, default=26)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    ap.add_argument("--keep", type=Path, help="Build the bundle into this folder and keep it; reuse it if there.")
    ap.add_argument("--rss-child", nargs=3, metavar=("BUNDLE", "VARIANT", "FUSED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.rss_child:
        bundle, variant, fused = args.rss_child
        print(json.dumps(serve_rss(Path(bundle), variant, fused == "1")))
        return
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = args.keep or Path(tmp)
        bundle = root / f"{args.model}-{args.experts}"
        if not (bundle / "manifest.json").exists():
            bundle = make_bundle(root, args.model, args.experts)
        build_s = round(time.perf_counter() - t0, 1)
        result = measure(bundle, args.repeats, args.threads)
        rss = {}
        for name, (variant, fused) in VARIANTS.items():
            child = subprocess.run([sys.executable, __file__, "--rss-child", str(bundle), variant, str(int(fused))],
                                   capture_output=True, text=True, check=True)
            rss[name] = round(json.loads(child.stdout.strip().splitlines()[-1]), 2)
        sizes = sizes_mib(bundle)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "onnxruntime": onnxruntime.__version__, "provider": "CPUExecutionProvider", "gpu": None}
    print(json.dumps({"benchmark": "runtime", "model": args.model, "experts": args.experts, "repeats": args.repeats,
                      "machine": machine, "bundle_build_s": build_s, **result, "peak_rss_gib_serving_one_variant": rss,
                      "bundle_size": sizes}, indent=2))


if __name__ == "__main__":
    main()
