#!/usr/bin/env python3
"""Device-runtime benchmark: a streaming step against one backbone frame, per variant. Prints JSON.

Builds valid ViT-B-16 bundles with random weights (sealed manifest, td calibration), one
per task count K (default 6 and 26), with the exporter's own steps (per-expert ONNX, the
fused graph, its int8 quantization, the fp16 twins, the frozen image tower), plus an
analytic head (M = 2048) served from the same files. Then on onnxruntime CPU, in ONE
process and against the SAME backbone session, it times alternately, in a shuffled order
each round:
  - one backbone frame (preprocess + backbone): the denominator of every ratio;
  - a streaming step (one new frame through every tower the variant needs, then its
    experts, router and head on the T-frame window), for each K and each variant:
    StPR with fp32 per-expert files, the fused fp32 graph, the fused int8 graph; the
    head alone (its tower only, no experts); the head routing StPR (route-soft: the
    frozen tower is a second pass per frame, beside the fused fp32 experts);
  - the clip model's way (the backbone re-run on all T frames).
Reports step / frame per variant and K (targets: StPR <= 1.15 at K = 26, the head alone
<= 1.05), the experts alone, the bundle size per variant, and the peak RSS of a process
serving each StPR variant alone (a child process each, so the variants do not add up).

    python scripts/bench/bench_runtime.py [--tasks 6 26] [--repeats 20] [--model ViT-B-16] [--keep DIR]
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
HEAD_TARGET = 1.05  # the head alone: one tower pass, no experts
HEAD_DIM = 2048
VARIANTS = {"fp32_per_expert": ("fp32", False), "fp32_fused": ("fp32", True), "int8_fused": ("int8", True)}
HEAD_VARIANTS = {"head_alone": ("alone", "fp32"), "head_route_soft": ("route-soft", "fp32")}  # mode, experts


def make_bundle(root: Path, model_name: str, num_experts: int, towers_from: Path | None = None,
                classes_per_task: int = 4) -> Path:
    """A valid bundle with random weights and every expert variant, written with the exporter's
    steps; the image towers are hard-linked from `towers_from` (another K's bundle) when given."""
    import torch

    from stpr.export.fp16 import to_fp16
    from stpr.export.fuse import fuse_experts
    from stpr.export.int8 import to_int8
    from stpr.export.onnx_export import export_backbone, export_expert
    from stpr.runtime.bundle.manifest import SCHEMA_VERSION, seal_manifest, sha256_file
    from stpr.runtime.contract import CLIP_IMAGE_FILE, FUSED_FILE, FUSED_KEY, HEAD_WEIGHTS_FILE, TD_CALIBRATION_FILE
    from stpr.train.model.backbone import AdaptedVisionTower
    from stpr.train.model.clip_tower import load_clip
    from stpr.train.model.expert import TemporalExpert

    out = root / f"{model_name}-{num_experts}"
    out.mkdir(parents=True)
    clip, pp = load_clip(model_name, "none", seed=0)
    tower = AdaptedVisionTower(clip.visual).eval()
    towers = ("backbone.onnx", "backbone.fp16.onnx", CLIP_IMAGE_FILE)
    if towers_from is not None:
        for name in towers:
            os.link(towers_from / name, out / name)
    else:
        export_backbone(tower, out / "backbone.onnx", pp.size)
        to_fp16(out / "backbone.onnx", out / "backbone.fp16.onnx")
        export_backbone(tower, out / CLIP_IMAGE_FILE, pp.size, adapters=False)
    D, T, C = tower.out_dim, 8, num_experts * classes_per_task
    torch.manual_seed(0)
    experts = [export_expert(TemporalExpert(D, T).eval(), out / f"expert_{k}.onnx", D).name for k in range(num_experts)]
    experts_fp16 = [to_fp16(out / e, out / e.replace(".onnx", ".fp16.onnx")).name for e in experts]
    fused = {"fp32": fuse_experts([out / e for e in experts], out / FUSED_FILE["fp32"]).name,
             "fp16": fuse_experts([out / e for e in experts_fp16], out / FUSED_FILE["fp16"]).name}
    fused["int8"] = to_int8(out / fused["fp32"], out / FUSED_FILE["int8"]).name
    rng = np.random.default_rng(0)
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    np.save(out / "text_embeddings.npy", unit(rng.standard_normal((C, D))), allow_pickle=False)
    np.save(out / "anchors.npy", 0.1 * rng.standard_normal((C, D)).astype(np.float32), allow_pickle=False)
    calibration = np.concatenate([0.1 * rng.standard_normal((num_experts, D)), np.ones((num_experts, D)),
                                  np.zeros((num_experts, 1)), np.ones((num_experts, 1))], 1).astype(np.float32)
    np.save(out / TD_CALIBRATION_FILE, calibration, allow_pickle=False)
    np.save(out / HEAD_WEIGHTS_FILE, 0.01 * rng.standard_normal((HEAD_DIM, C)).astype(np.float32), allow_pickle=False)
    manifest = {
        "schema_version": SCHEMA_VERSION, "classes": [f"class_{c}" for c in range(C)],
        "class_to_expert": [c // classes_per_task for c in range(C)], "experts": experts,
        "experts_fp16": experts_fp16, "backbone": "backbone.onnx", "backbone_fp16": "backbone.fp16.onnx",
        **{FUSED_KEY[v]: f for v, f in fused.items()},
        "routing": {"mode": "td", "tau": 1.0}, "td_calibration": TD_CALIBRATION_FILE, "logit_scale": 100.0,
        "preprocess": {"size": pp.size, "mean": list(pp.mean), "std": list(pp.std), "frames": T},
        "text_embeddings": "text_embeddings.npy", "anchors": "anchors.npy",
        "dims": {"D": D, "T": T, "K": num_experts, "C": C}, "tools": {}, "source": {"benchmark": True},
    }
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(out.iterdir())}
    (out / "manifest.json").write_text(json.dumps(seal_manifest(manifest)))
    return out


def with_head(b: "Bundle", mode: str) -> "Bundle":  # noqa: F821
    """The same bundle served through an analytic head in `mode`, on the frozen image tower."""
    import dataclasses

    from stpr.runtime.bundle.head_bundle import Head
    from stpr.runtime.contract import CLIP_IMAGE_FILE, HEAD_WEIGHTS_FILE
    from stpr.runtime.model.analytic import projection_matrix

    head = Head(mode=mode, tower="frozen", tower_file=CLIP_IMAGE_FILE, tower_fp16=None,
                projection=projection_matrix(0, b.frames * b.dim, HEAD_DIM),
                weights=np.load(b.path / HEAD_WEIGHTS_FILE, allow_pickle=False), tau=0.1, fuse_weight=0.5)
    return dataclasses.replace(b, head=head)


def sizes_mib(bundle: Path) -> dict:
    """On-disk size per variant: the files a device serving it loads, and the whole bundle."""
    import onnx

    from stpr.runtime.model.experts import expert_files

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


def measure(bundles: dict[int, Path], repeats: int, threads: int) -> dict:
    """Every variant at every K against one shared backbone session (the denominator)."""
    from stpr.runtime.bundle.load import load_bundle
    from stpr.runtime.engine.recognizer import Recognizer
    from stpr.runtime.io.stream import FeatureRing
    from stpr.runtime.model.backends import OrtRunner
    from stpr.runtime.model.preprocess import preprocess

    recs: dict[str, Recognizer] = {}
    for K, path in bundles.items():
        b = load_bundle(path)
        for name, (variant, fused) in VARIANTS.items():
            recs[f"{name}@K={K}"] = Recognizer(b, "ort", "cpu", experts=variant, fused=fused)
        for name, (mode, variant) in HEAD_VARIANTS.items():
            recs[f"{name}@K={K}"] = Recognizer(with_head(b, mode), "ort", "cpu", experts=variant)
    # One session per tower file, shared by every variant (the towers are the same files at every K).
    first = next(iter(bundles.values()))
    shared = {f: OrtRunner(first / f, threads=threads) for rec in recs.values() for f in rec.towers}
    for rec in recs.values():
        rec.tower_runners = [shared[f] for f in rec.towers]
        rec.backbone = rec.tower_runners[0]
        if rec.experts is not None:
            for r in rec.experts.runners:
                r.threads = threads
    b = load_bundle(first)
    camera = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    frame_in = lambda: preprocess(camera, b.size, b.mean, b.std)[None]  # noqa: E731
    for r in shared.values():
        r.__enter__()
    for rec in recs.values():
        if rec.experts is not None:
            rec.experts.__enter__()
    rings = {}
    for name, rec in recs.items():
        rings[name] = FeatureRing(b.frames, rec.feature_dim)
        while not rings[name].full:
            rings[name].push(rec.frame_features(frame_in())[0])

    def backbone_frame() -> None:
        shared[b.manifest["backbone"]].infer({"frames": frame_in()})

    def step(name: str) -> float:
        rec, ring = recs[name], rings[name]
        ring.push(rec.frame_features(frame_in())[0])
        return rec.classify(ring.window()[None])["experts_ms"]

    def clip_rerun() -> None:  # what streaming avoids: the backbone on all T frames, every prediction
        rec = recs[f"fp32_fused@K={max(bundles)}"]
        x = np.repeat(frame_in(), b.frames, axis=0)
        rec.classify(rec.frame_features(x)[None])

    fns = {"backbone_frame": backbone_frame, **{f"step_{n}": (lambda n=n: step(n)) for n in recs},
           "clip_rerun_T_frames": clip_rerun}
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    experts_ms: dict[str, list[float]] = {n: [] for n in recs}
    order = np.random.default_rng(2)
    for _ in range(repeats):
        # A new order every round: what ran just before a call changes its time (by up
        # to 10 % here), and a fixed order would hand that bias to one variant.
        for name in order.permutation(list(fns)):
            t0 = time.perf_counter()
            got = fns[name]()
            times[name].append(1000 * (time.perf_counter() - t0))
            if name.startswith("step_"):
                experts_ms[name[5:]].append(got)
    for rec in recs.values():
        if rec.experts is not None:
            rec.experts.__exit__(None)
    for r in shared.values():
        r.__exit__(None)
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    frame = med["backbone_frame"]
    ratio = {n: round(med[f"step_{n}"] / frame, 3) for n in recs}
    target = {n: HEAD_TARGET if n.startswith("head_alone") else TARGET for n in recs}
    return {"median_ms": med, "experts_only_median_ms": {n: round(statistics.median(v), 2)
                                                        for n, v in experts_ms.items()},
            "tower_passes_per_frame": {n: len(r.towers) for n, r in recs.items()},
            "step_over_backbone_frame": ratio,
            "clip_rerun_over_fp32_fused_step": round(med["clip_rerun_T_frames"] /
                                                     med[f"step_fp32_fused@K={max(bundles)}"], 2),
            "targets_step_over_frame": {"stpr at K=26": TARGET, "head_alone": HEAD_TARGET},
            "target_met": {n: ratio[n] <= target[n] for n in recs if n.startswith("head_alone") or "K=26" in n}}


def serve_rss(bundle: Path, variant: str, fused: bool, steps: int = 5) -> float:
    """Peak RSS (GiB) of this process after loading only `variant` and running `steps` steps."""
    from stpr.runtime.bundle.load import load_bundle
    from stpr.runtime.engine.recognizer import Recognizer

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


EPILOG = """Prints one JSON object: per variant and K the streaming step over one backbone frame, the
experts alone, bundle sizes and peak RSS. Takes about 15 min on this machine (2 CPU cores) with
the defaults (an estimate: ViT-B-16 bundles of 6 and 26 experts, 20 rounds); --model stpr-tiny
--tasks 2 3 --repeats 1 --no-rss (what its test runs) takes under 15 s."""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, nargs="+", default=[6, 26], help="task counts K, one bundle each")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--model", default="ViT-B-16")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    ap.add_argument("--keep", type=Path, help="Build the bundles into this folder and keep them; reuse them if there.")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    ap.add_argument("--rss-child", nargs=3, metavar=("BUNDLE", "VARIANT", "FUSED"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.rss_child:
        bundle, variant, fused = args.rss_child
        print(json.dumps(serve_rss(Path(bundle), variant, fused == "1")))
        return
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = args.keep or Path(tmp)
        bundles: dict[int, Path] = {}
        for K in sorted(set(args.tasks)):
            bundle = root / f"{args.model}-{K}"
            if not (bundle / "manifest.json").exists():
                bundle = make_bundle(root, args.model, K, towers_from=next(iter(bundles.values()), None))
            bundles[K] = bundle
        build_s = round(time.perf_counter() - t0, 1)
        result = measure(bundles, args.repeats, args.threads)
        largest = bundles[max(bundles)]
        rss = {}
        for name, (variant, fused) in ({} if args.no_rss else VARIANTS).items():
            child = subprocess.run([sys.executable, __file__, "--rss-child", str(largest), variant, str(int(fused))],
                                   capture_output=True, text=True, check=True)
            rss[name] = round(json.loads(child.stdout.strip().splitlines()[-1]), 2)
        sizes = sizes_mib(largest)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "onnxruntime": onnxruntime.__version__, "provider": "CPUExecutionProvider", "gpu": None}
    print(json.dumps({"benchmark": "runtime", "model": args.model, "tasks": sorted(bundles), "head_dim": HEAD_DIM,
                      "repeats": args.repeats, "machine": machine, "bundle_build_s": build_s, **result,
                      f"peak_rss_gib_serving_one_variant (K={max(bundles)})": rss,
                      f"bundle_size (K={max(bundles)})": sizes}, indent=2))


if __name__ == "__main__":
    main()
