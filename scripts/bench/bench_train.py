#!/usr/bin/env python3
"""Training throughput benchmark: prints JSON.

For each model (the tiny demo CLIP and ViT-B-16, random weights), device (CPU,
and CUDA where present) and precision (fp32, and bf16 autocast on CUDA: the
training's own `optim.amp`): clips/s of StPR training steps in the base task and in
an incremental task (teacher forward + FSSD), peak memory, and the share of a step
spent outside the frozen backbone's forward/backward (adapters included in the
backbone). Each configuration runs in its own process so peak memory is its own;
the bf16/fp32 ratios compare configurations of the same run. Data loading is
excluded here: one batch is prepared up front and reused.

    python scripts/bench/bench_train.py                 # all configurations
    python scripts/bench/bench_train.py --models stpr-tiny --steps 20
    python scripts/bench/bench_train.py --models ViT-B-16 --devices cuda --precision fp32 bf16 --batch 40 --frames 8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_pair(fa, fb, device, steps: int) -> tuple[float, float]:
    """Median seconds per call of `fa` and `fb`, timed alternately so that drift
    (thermal, allocator, other load) hits both alike: their ratio is what we report."""
    import statistics

    fa(), fb()  # warm-up (allocations, kernels)
    ta, tb = [], []
    for _ in range(steps):
        for fn, acc in ((fa, ta), (fb, tb)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


# --precision -> the training's optim.amp: what `stpr-train --set optim.amp=...` runs.
AMP = {"fp32": "off", "bf16": "bf16"}


def one(model: str, device_name: str, batch: int, steps: int, precision: str = "fp32",
        frames_per_clip: int | None = None) -> dict:
    """Benchmark one (model, device, precision) in this process."""
    import torch

    from stpr.train import run as R
    from stpr.train.config_load import load_config

    overrides = {
        "model.name": model, "device": device_name, "optim.batch_size": batch, "optim.amp": AMP[precision],
        "data.clips_per_class_train": max(2, batch // 4), "data.clips_per_class_test": 1,
        "head.mode": "none",  # StPR's own training (the demo's head alone takes no gradient step)
    }
    if model != "stpr-tiny":  # the demo's packaged weights are the tiny tower's: random weights, no download
        overrides["model.pretrained"] = "none"
    if frames_per_clip is not None:
        overrides["data.num_frames"] = frames_per_clip
    cfg = load_config("demo", overrides)
    s = R.build(cfg)
    learner, m, dev = s.learner, s.learner.model, s.device
    out = {"model": model, "device": device_name, "precision": precision, "batch_clips": batch,
           "frames_per_clip": cfg.data.num_frames, "image_size": s.preprocess.size, "steps_timed": steps}
    names = lambda k: [s.splits.classes[c] for c in s.tasks[k]]  # noqa: E731
    loader = R._loader(s, s.splits.train, 0, train=True)
    frames, labels = next(iter(loader))
    frames, labels = frames.to(dev), labels.to(dev)
    with torch.no_grad(), learner.autocast():  # what the tower computes in: proof of the precision asked for
        out["tower_dtype"] = str(m.frame_features(frames[:1]).dtype).removeprefix("torch.")
    for k in (0, 1):
        if dev.type == "cuda":  # each task's own peak (the teacher adds to the incremental one)
            torch.cuda.reset_peak_memory_stats()
        learner.begin_task(k, names(k), steps=1000)
        labels_k = labels + (4 if k else 0)  # global ids of task k's classes
        step = lambda: learner.observe(frames, labels_k)  # noqa: E731

        def backbone_only() -> None:
            # What the frozen tower costs on its own: student forward + backward to the
            # adapters, plus the teacher's forward in incremental tasks.
            m.train()
            with learner.autocast():  # the precision the step runs its tower in
                feats = m.frame_features(frames)
                if learner.teacher is not None:
                    with torch.no_grad():
                        m.frame_features(frames, adapters=learner.teacher)
            feats.float().pow(2).mean().backward()
            m.zero_grad(set_to_none=True)

        t_step, t_bb = _time_pair(step, backbone_only, dev, steps)
        tag = "base_task" if k == 0 else "incremental_task"
        out[tag] = {
            "clips_per_s": batch / t_step,
            "step_ms": 1000 * t_step,
            "backbone_fwd_bwd_ms": 1000 * t_bb,
            "share_outside_backbone": max(0.0, 1.0 - t_bb / t_step),
        }
        if dev.type == "cuda":
            out[tag]["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if k == 0:  # anchors and FSSD statistics, so task 1 has a teacher and weights
            learner.end_task(R._loader(s, s.splits.train_eval, 0, train=False))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def data_only(videos: int, frames: int, workers: int, batch: int, size: int) -> dict:
    """Loader clips/s from video files vs pre-extracted frame folders (same clips)."""
    import importlib.util
    import tempfile
    from pathlib import Path

    import cv2
    import numpy as np
    from torch.utils.data import DataLoader

    from stpr.train.data.folder import folder_dataset

    script = Path(__file__).resolve().parents[1] / "data" / "extract_frames.py"
    spec = importlib.util.spec_from_file_location("extract_frames", script)
    extract = importlib.util.module_from_spec(spec)
    sys.modules["extract_frames"] = extract  # its process pool pickles functions by module name
    spec.loader.exec_module(extract)
    out: dict = {"videos": videos, "frames_per_video": frames, "video_size": [320, 240], "workers": workers,
                 "batch_clips": batch, "input_size": size}
    with tempfile.TemporaryDirectory() as tmp:
        root, frames_root = Path(tmp) / "videos", Path(tmp) / "frames"
        rng = np.random.default_rng(0)
        for i in range(videos):  # UCF-like: 320x240 MJPG
            path = root / f"class_{i % 4}" / f"v_{i:04d}.avi"
            path.parent.mkdir(parents=True, exist_ok=True)
            w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
            base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
            for t in range(frames):
                w.write(np.roll(base, 4 * t, axis=1))
            w.release()
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):  # its JSON summary is not ours
            extract.main(["--root", str(root), "--out", str(frames_root), "--workers", str(workers)])
        mean, std = (0.481, 0.458, 0.408), (0.269, 0.261, 0.276)
        for name, tree in (("video_files", root), ("frame_folders", frames_root)):
            ds = folder_dataset(tree, True, holdout=0.25, num_frames=8, size=size, mean=mean, std=std)
            loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                persistent_workers=workers > 0)
            next(iter(loader))  # worker start-up is not throughput
            t0, n = time.perf_counter(), 0
            for x, _ in loader:
                n += x.shape[0]
            out[f"{name}_clips_per_s"] = n / (time.perf_counter() - t0)
    out["frames_over_videos"] = out["frame_folders_clips_per_s"] / out["video_files_clips_per_s"]
    return out


EPILOG = """Prints one JSON object: per model, device and precision the clips/s of base and incremental
steps, peak memory and the share outside the tower. Takes about 7 min on this machine (2 CPU
cores, shared with other jobs at a load of 9) for --models stpr-tiny; ViT-B-16 (in the defaults)
adds more on CPU (not timed here); CUDA runs need a GPU."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["stpr-tiny", "ViT-B-16"])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda if available")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 tiny, 3 ViT-B on CPU, 20 on GPU)")
    ap.add_argument("--batch", type=int, default=None,
                    help="clips per step (default: 16 tiny, 2 ViT-B on CPU, 40 on GPU)")
    ap.add_argument("--precision", nargs="+", choices=sorted(AMP), default=None,
                    help="training precision(s): fp32 (optim.amp=off) | bf16 (optim.amp=bf16, autocast of the tower); "
                         "default: fp32 on CPU, fp32 and bf16 on CUDA")
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (default: the config's, 8)")
    ap.add_argument("--data-only", action="store_true",
                    help="loader clips/s from video files vs frame folders, beside the model's clips/s")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for --data-only")
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "DEVICE", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.batch, args.steps, args.one[2], args.frames)))
        return
    import torch

    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    results = []
    if args.data_only:
        results.append({"data_loader": data_only(videos=64, frames=64, workers=args.workers, batch=8, size=224)})
    for model in args.models:
        for device in devices:
            big = model != "stpr-tiny"
            batch = args.batch or (40 if device == "cuda" else (2 if big else 16))
            steps = args.steps or (3 if big and device == "cpu" else 20)
            for precision in args.precision or (["fp32", "bf16"] if device.startswith("cuda") else ["fp32"]):
                cmd = [sys.executable, __file__, "--one", model, device, precision,
                       "--batch", str(batch), "--steps", str(steps)]
                if args.frames is not None:
                    cmd += ["--frames", str(args.frames)]
                print(f"[bench_train] {model} on {device}, {precision}: batch {batch}, {steps} steps", file=sys.stderr)
                proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)  # the whole traceback: the JSON keeps its last line
                    results.append({"model": model, "device": device, "precision": precision,
                                    "error": proc.stderr.strip().splitlines()[-1:]})
                    continue
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    machine = {
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print(json.dumps({"benchmark": "train", "machine": machine, "results": results,
                      "bf16_over_fp32": precision_ratios(results)}, indent=2))


def precision_ratios(results: list[dict]) -> list[dict]:
    """bf16 clips/s and peak GPU memory over fp32's, per (model, device) that ran both in this run."""
    ok = {(r["model"], r["device"], r["precision"]): r for r in results if "error" not in r and "precision" in r}
    out = []
    for (model, device, precision), bf16 in ok.items():
        fp32 = ok.get((model, device, "fp32"))
        if precision != "bf16" or fp32 is None:
            continue
        row: dict = {"model": model, "device": device}
        for tag in ("base_task", "incremental_task"):
            row[tag] = {"clips_per_s": bf16[tag]["clips_per_s"] / fp32[tag]["clips_per_s"]}
            if "peak_gpu_memory_mib" in fp32[tag]:
                row[tag]["peak_gpu_memory"] = bf16[tag]["peak_gpu_memory_mib"] / fp32[tag]["peak_gpu_memory_mib"]
        out.append(row)
    return out


if __name__ == "__main__":
    main()
