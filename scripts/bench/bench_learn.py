#!/usr/bin/env python3
"""How long `stpr-learn` takes to learn 4 classes from 16 clips each, tower included. Prints JSON.

Trains (if --out has no run yet) a head-alone run of `--model` with random weights on a
few synthetic clips (4+4x1: only what an exported bundle needs), exports it, renders 16
fresh clips of each of 4 classes the run never saw at the model's input size (PNG frame
folders), then times `stpr-learn --data` in a child process where `import torch` fails,
as on a device. Reports the child's wall seconds, the tower's seconds per class (from its
progress lines) and its peak RSS.

    python scripts/bench/bench_learn.py --model ViT-B-16 --out runs/learn_vit   # ~15 min on 2 CPU cores
    python scripts/bench/bench_learn.py --model stpr-tiny --out runs/learn_tiny
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2

CHILD = "import sys; sys.modules['torch'] = None; from stpr.runtime.cli.learn_cli import main; main()"
NEW = range(8, 12)  # classes 4+4x1 leaves out (the third shape)


EPILOG = """Prints one JSON object: stpr-learn's wall seconds, the tower's seconds per class and the peak
RSS. Takes about 15 min on this machine (2 CPU cores) for the default ViT-B-16 (stpr-learn
alone: 104 s, docs/learn.md); --model stpr-tiny takes about 1 min."""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--out", type=Path, default=Path("runs/learn_vit"))
    p.add_argument("--clips", type=int, default=16, help="clips per learned class")
    args = p.parse_args()
    run, bundle, data, learned = (args.out / n for n in ("run", "bundle", "data", "learned"))
    if not (run / "metrics.json").is_file():
        subprocess.run(["stpr-train", "--config", "demo", "--model", args.model, "--pretrained", "none", "--protocol",
                        "4+4x1", "--set", "data.clips_per_class_train=4", "--set", "data.clips_per_class_test=2",
                        "--set", "head.mode=alone", "--out", str(run), "--quiet"], check=True)
    if not (bundle / "manifest.json").is_file():
        subprocess.run(["stpr-export", str(run), "--out", str(bundle), "--no-text", "--parity-clips", "2"], check=True)
    size = json.loads((bundle / "manifest.json").read_text())["preprocess"]["size"]
    if not data.is_dir():
        from stpr.train.data.synthetic import SyntheticActions

        ds = SyntheticActions("train", num_frames=8, image_size=size, clips_per_class=args.clips, seed=7)
        for c in NEW:
            for j, i in enumerate(i for i, t in enumerate(ds.targets) if t == c):
                folder = data / ds.classes[c] / f"{j:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                for f, frame in enumerate(ds.raw_clip(i)):
                    cv2.imwrite(str(folder / f"{f:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    shutil.rmtree(learned, ignore_errors=True)
    t0 = time.perf_counter()
    with open(args.out / "learn.err", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, "--bundle", str(bundle), "--out", str(learned),
                                 "--data", str(data)], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, not the training's
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()
    if status != 0:
        raise SystemExit(stderr)
    tower = [float(s) for s in re.findall(r"clips through the head's tower in ([0-9.]+) s", stderr)]
    print(json.dumps({"model": args.model, "input_size": size, "classes": len(NEW), "clips_per_class": args.clips,
                      "wall_s": round(wall, 2), "tower_s_per_class": tower,
                      "peak_rss_GiB": round(usage.ru_maxrss / 2**20, 2),
                      "machine": f"{os.cpu_count()} CPU cores"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
