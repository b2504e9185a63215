#!/usr/bin/env python3
"""The head alone, trained two ways, in one run: prints JSON.

PyTorch (`train/run.py`, the tower in torch) against torch-free (`train/head_run.py`, the
tower's ONNX file on onnxruntime, torch made unimportable), on the same config. Each run is
its own process, alternated round by round so that other load on the machine hits both
alike; what is reported is the median, and the ratio. Clips/s counts the training clips
(each through the tower once) over the whole run's wall time, evaluation included; import
time is reported apart. Peak RSS is the process's own.

    python scripts/bench/bench_head_train.py                      # the demo, 16 + 8 clips per class
    python scripts/bench/bench_head_train.py --rounds 3 --train-clips 32
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from stpr.train.data.protocol import parse_protocol

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
if {free}:
    sys.modules["torch"] = None
    from stpr.train import head_run as R
else:
    from stpr.train import run as R
from stpr.train.config_load import load_config
t1 = time.perf_counter()
cfg = load_config("demo", {overrides!r})
metrics = R.run(cfg, {out!r})
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "run_s": t2 - t1, "acc": metrics["acc"],
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def one(free: bool, overrides: dict, out: str) -> dict:
    code = CHILD.format(free=free, overrides=overrides, out=out)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


EPILOG = """Prints one JSON object: per path (PyTorch, torch-free) the median run seconds, training clips/s,
import seconds, peak RSS and Acc, and their ratio. Takes about 10 min on this machine (2 CPU
cores) with the defaults (docs/benchmarks.md: a 218 s PyTorch run and a 90 s torch-free one per
round, 2 rounds, on a shared machine)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--train-clips", type=int, default=16, help="training clips per class")
    ap.add_argument("--test-clips", type=int, default=8, help="test clips per class")
    ap.add_argument("--protocol", default="4+4x4")
    args = ap.parse_args()
    overrides = {"data.clips_per_class_train": args.train_clips, "data.clips_per_class_test": args.test_clips,
                 "data.protocol": args.protocol, "device": "cpu", "head.mode": "alone"}
    clips = parse_protocol(args.protocol).num_classes * args.train_clips
    runs: dict[str, list[dict]] = {"torch": [], "torch_free": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, free in (("torch", False), ("torch_free", True)):
                runs[name].append(one(free, overrides, os.path.join(tmp, f"{name}-{r}")))
    out = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
           "config": {**overrides, "training_clips": clips, "rounds": args.rounds}}
    for name, rs in runs.items():
        run_s = statistics.median(r["run_s"] for r in rs)
        out[name] = {"run_s": run_s, "clips_per_s": clips / run_s,
                     "import_s": statistics.median(r["import_s"] for r in rs),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "acc": [r["acc"] for r in rs]}
    out["torch_free_over_torch_clips_per_s"] = out["torch_free"]["clips_per_s"] / out["torch"]["clips_per_s"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
