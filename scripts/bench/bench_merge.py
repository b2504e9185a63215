#!/usr/bin/env python3
"""A fleet of devices learning separately, merged (`stpr-learn --merge`): time, exactness, recall. Prints JSON.

Per seed, on scripts/studies/learn_study.py's runs (the demo trained without its fifth task, and
with it: the workstation): three devices each learn the held-out task's four classes from
16 clips of their own (clips 0-15, 16-31 and 32-47 of each class), each with `stpr-learn
--data` in a child process where `import torch` fails. Each device's head delta
(`--delta`) is merged on the base (`--merge`, also torch-free), and the base also learns
all 48 clips in one place. Reported:

- `merge_s`: the merge's wall time (process start included), its in-process time and its
  parts (`check`: the base's sums against its weights, `solve`, `write`: the open-set
  subspace's eigendecomposition of G is most of it);
  `delta_bytes`: what each device ships;
- `max_rel_gap_to_one_place`: max |W_merged - W_one_place| / max |W_one_place| over the
  deltas given in three different orders (the target: <= 1e-6);
- the four classes' recall on the run's test clips for each device's own bundle, the merged
  one, the one-place one and the workstation (trained on all 48 clips with the others),
  and the trained classes' accuracy before and after the merge.

    python scripts/bench/bench_merge.py --out runs/learn_study --seeds 0 1 2

`--out` shares scripts/studies/learn_study.py's folders (`<out>/weight_s<seed>`), so the runs it
trained are reused.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))  # learn_study.py and ablate.py

from ablate import ensure_run, note, variant  # noqa: E402
from learn_study import CHILD, HELD_OUT_TASK, accuracy, export, predict, synthetic_clips  # noqa: E402

from stpr.runtime.atomic import atomic_write_json  # noqa: E402
from stpr.train.config_load import load_config  # noqa: E402

DEVICES, CLIPS = 3, 16


def clip_slice(root: Path, lo: int, hi: int, dest: Path) -> Path:
    """DIR/<class>/<clips> with clips lo..hi-1 of each class of `root` (symlinks)."""
    shutil.rmtree(dest, ignore_errors=True)
    for cls in sorted(root.iterdir()):
        (dest / cls.name).mkdir(parents=True)
        for clip in sorted(cls.iterdir())[lo:hi]:
            (dest / cls.name / clip.name).symlink_to(clip.resolve())
    return dest


def torchless(*args: Any) -> float:
    """`stpr-learn ARGS` as a device runs it (torch unimportable); its wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"stpr-learn {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return time.perf_counter() - t0


def weights_by_class(bundle: Path) -> dict[str, np.ndarray]:
    m = json.loads((bundle / "manifest.json").read_text())
    w = np.load(bundle / m["head"]["weights"], allow_pickle=False).astype(np.float64)
    return {c: w[:, i] for i, c in enumerate(m["classes"])}


def rel_gap(a: Path, b: Path) -> float:
    wa, wb = weights_by_class(a), weights_by_class(b)
    if sorted(wa) != sorted(wb):
        return float("inf")
    return float(max(np.abs(wa[c] - wb[c]).max() for c in wb) / max(np.abs(v).max() for v in wb.values()))


def one_seed(cfg: Any, out: Path) -> dict[str, Any]:
    from stpr.runtime.learn.learn_merge import merge

    base_run, full_run = out / "base", out / "full"
    ensure_run(variant(cfg, {"data.protocol": "4+4x3"}), base_run)
    ensure_run(variant(cfg, {"data.protocol": "4+4x4"}), full_run)
    base, full = export(base_run, out / "bundle_base"), export(full_run, out / "bundle_full")
    order = json.loads((full_run / "metrics.json").read_text())["classes"]
    held, trained = order[4 * HELD_OUT_TASK:4 * HELD_OUT_TASK + 4], order[:4 * HELD_OUT_TASK]
    root, test = synthetic_clips(cfg, out, held)
    fleet = out / "fleet"
    shutil.rmtree(fleet, ignore_errors=True)
    devices, deltas, learn_s = [], [], []
    for i in range(DEVICES):
        data = clip_slice(root, i * CLIPS, (i + 1) * CLIPS, fleet / f"data_dev{i}")
        dev, delta = fleet / f"dev{i}", fleet / f"delta_dev{i}"
        learn_s.append(torchless("--bundle", base, "--out", dev, "--data", data))
        torchless("--bundle", dev, "--out", delta, "--delta")
        devices.append(dev)
        deltas.append(delta)
    merged = fleet / "merged"
    merge_wall = torchless("--bundle", base, "--out", merged, "--merge", *deltas)
    one = fleet / "one_place"
    torchless("--bundle", base, "--out", one, "--data", clip_slice(root, 0, DEVICES * CLIPS, fleet / "data_all"))
    gaps, in_process, parts = [rel_gap(merged, one)], [], []
    for j, perm in enumerate(list(itertools.permutations(deltas))[1:3]):  # two more orders, in this process
        t0 = time.perf_counter()
        report = merge(base, fleet / f"merged_order{j}", list(perm), [])
        in_process.append(time.perf_counter() - t0)
        parts.append(report.timings_s)  # check, solve, write (the open-set subspace's eigh is most of it)
        gaps.append(rel_gap(fleet / f"merged_order{j}", one))
    before, truth = predict(base, test)
    res: dict[str, Any] = {"held_out": held, "clips_per_device": CLIPS,
                           "device_learn_s": learn_s,
                           "delta_bytes": [sum(p.stat().st_size for p in d.iterdir()) for d in deltas],
                           "merge_s": {"wall_torchless_cli": merge_wall, "in_process": in_process, "parts": parts},
                           "max_rel_gap_to_one_place": max(gaps),
                           "trained_acc_before": accuracy(before, truth, trained), "recall": {}}
    for name, bundle in [*[(f"device{i}", d) for i, d in enumerate(devices)], ("merged", merged),
                         ("one_place", one), ("workstation", full)]:
        pred, _ = predict(bundle, test)
        res["recall"][name] = accuracy(pred, truth, held)
        if name == "merged":
            res["trained_acc_after_merge"] = accuracy(pred, truth, trained)
    own = [res["recall"][f"device{i}"] for i in range(DEVICES)]
    res["merged_minus_device_mean"] = res["recall"]["merged"] - float(np.mean(own))
    note(f"seed {cfg.seed}: {json.dumps(res)}")
    return res


EPILOG = """Prints one JSON object: per seed the merge's seconds and parts, the delta bytes, the merged
weights' gap to learning in one place, and the recalls. Takes about 2 min on this machine (2 CPU
cores) with the defaults once learn_study's runs exist (an estimate: a few 2 s stpr-learn and
merge children per seed); it trains those runs first where --out has none."""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--out", type=Path, default=Path("runs/learn_study"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    per_seed = {}
    for seed in args.seeds:
        # the keys scripts/studies/learn_study.py sets, so its runs are reused
        cfg = variant(load_config("demo"), {"seed": seed, "head.balance": "weight", "data.class_order": "auto"})
        per_seed[str(seed)] = one_seed(cfg, args.out / f"weight_s{seed}")

    def ms(values: list[float]) -> list[float]:
        return [round(float(np.mean(values)), 2), round(float(np.std(values)), 2)]

    seeds = list(per_seed.values())
    summary = {
        "recall": {k: ms([s["recall"][k] for s in seeds]) for k in seeds[0]["recall"]},
        "device_recall_mean": ms([float(np.mean([s["recall"][f"device{i}"] for i in range(DEVICES)]))
                                  for s in seeds]),
        "trained_acc_before": ms([s["trained_acc_before"] for s in seeds]),
        "trained_acc_after_merge": ms([s["trained_acc_after_merge"] for s in seeds]),
        "merge_wall_s": ms([s["merge_s"]["wall_torchless_cli"] for s in seeds]),
        "merge_in_process_s": ms([t for s in seeds for t in s["merge_s"]["in_process"]]),
        "device_learn_s": ms([t for s in seeds for t in s["device_learn_s"]]),
        "delta_bytes": max(b for s in seeds for b in s["delta_bytes"]),
        "max_rel_gap_to_one_place": max(s["max_rel_gap_to_one_place"] for s in seeds),
    }
    result = {"devices": DEVICES, "clips_per_device": CLIPS, "seeds": args.seeds, "per_seed": per_seed,
              "summary": summary, "machine": f"{os.cpu_count()} CPU cores"}
    atomic_write_json(args.out / "bench_merge.json", result)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
