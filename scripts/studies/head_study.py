#!/usr/bin/env python3
"""The analytic head against StPR, over seeds and class orders, from few training runs.

Per seed and class order (`auto`: one shape per task; `seeded`: classes shuffled over
tasks, the motion-centric layout) it trains:

- `stpr`: StPR alone (the paper's method), for its training time;
- `modes`: StPR with the head beside it (frozen tower). Every head mode is scored from
  this one run, with StPR's own numbers (`stpr`), since the modes differ only at test time;
- `alone-frozen` and `alone-adapted`: the head alone on the frozen tower (no gradient
  step at all) and on the adapters as the base task left them (the base task trained);
- `joint-head`: the head fitted on every class at once (one task), the same tower.

With --openset it also exports each seed's `modes` run and reads the open-set report:
AUROC and FPR at 95 % TPR on never-trained classes for the head's scores and StPR's.

It prints one JSON object (per-run Acc, BWF, task id, wall seconds, and the mean and std
over seeds) and writes it to --out/head_study.json.

    python scripts/studies/head_study.py --out runs/head_study --seeds 0 1 2
    python scripts/studies/head_study.py --dataset folder --data-root DATA --out runs/photo_study
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ablate.py beside this script

from ablate import ensure_run, note, variant  # noqa: E402

from stpr.runtime.atomic import atomic_write_json  # noqa: E402
from stpr.train.config_load import load_config, parse_set  # noqa: E402

RUNS = {
    "stpr": {"head.mode": "none"},  # the paper's method alone: its training time is the reference
    "modes": {"head.mode": "route-soft", "head.tower": "frozen"},
    "alone-frozen": {"head.mode": "alone", "head.tower": "frozen"},
    "alone-adapted": {"head.mode": "alone", "head.tower": "adapted"},
}


def timed_run(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """metrics.json plus the wall seconds of the training (kept beside the run when it trains)."""
    wall_file = run_dir / "wall.json"
    t0 = time.perf_counter()
    metrics = ensure_run(cfg, run_dir)
    if not wall_file.is_file():
        atomic_write_json(wall_file, {"seconds": time.perf_counter() - t0})
    metrics["wall_s"] = json.loads(wall_file.read_text())["seconds"]
    return metrics


def summarise(m: dict[str, Any]) -> dict[str, Any]:
    out = {"acc": m["acc"], "bwf": m["bwf"], "wall_s": m["wall_s"], "head_task_id": m.get("head_task_id_accuracy"),
           "stpr_task_id": m.get("task_id_accuracy")}
    for name, s in m.get("modes", {}).items():
        out[f"mode:{name}"] = {"acc": s["acc"], "bwf": s["bwf"]}
    return out


def openset(run_dir: Path) -> dict[str, Any]:
    """Export the run (once) and read its open-set report: the head's candidates and, on the
    same clips, StPR's (margin_route is what an StPR bundle uses)."""
    from stpr.export import export_run

    bundle = run_dir.parent / f"{run_dir.name}-bundle"
    if not (bundle / "openset.json").is_file():
        export_run(run_dir, bundle, force=bundle.exists())
    report = json.loads((bundle / "openset.json").read_text())
    pick = lambda c: {"auroc": c["auroc"], "fpr_at_95_tpr": c["fpr_at_tpr"]}  # noqa: E731
    out = {f"head:{n}": pick(c) for n, c in report["candidates"].items() if "auroc" in c}
    out.update({f"stpr:{n}": pick(c) for n, c in report.get("stpr_candidates", {}).items() if "auroc" in c})
    return out


def one_seed(cfg: Any, out: Path, export: bool) -> dict[str, Any]:
    res = {name: summarise(timed_run(variant(cfg, keys), out / name)) for name, keys in RUNS.items()}
    if export and cfg.data.dataset == "synthetic":  # only the synthetic set renders never-trained classes
        res["openset"] = openset(out / "modes")
    classes = len(json.loads((out / "modes" / "metrics.json").read_text())["classes"])
    joint = variant(cfg, {"head.mode": "alone", "head.tower": "frozen", "data.protocol": f"{classes}x1",
                          "data.task_file": None})
    res["joint-head"] = summarise(timed_run(joint, out / "joint-head"))
    return res


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and v is not None:
            flat[f"{prefix}{k}"] = float(v)
    return flat


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, list[float]]:
    """`key -> [mean, std]` over seeds (population std, as ablate.py)."""
    flats = [_flat(r) for r in per_seed]
    keys = sorted(set.intersection(*(set(f) for f in flats)))
    return {k: [float(np.mean([f[k] for f in flats])), float(np.std([f[k] for f in flats]))] for k in keys}


EPILOG = """Prints one JSON object (per-run Acc, BWF, task id, wall seconds; mean and std over seeds) and
writes it to --out/head_study.json. Takes about 25 min on this machine (2 CPU cores) with the
defaults: an estimate from docs/results.md, whose five runs' training wall seconds sum to about
3.5 min per seed and order (3 seeds, 2 orders); --openset adds one export per run of modes."""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--config", default="demo")
    p.add_argument("--out", default="runs/head_study")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--orders", nargs="+", default=["auto", "seeded"], help="data.class_order values")
    p.add_argument("--openset", action="store_true",
                   help="export each seed's 'modes' run and report the open-set AUROC / FPR of head and StPR scores")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    report: dict[str, Any] = {"command": " ".join(["python", "scripts/studies/head_study.py", *(argv or sys.argv[1:])])}
    for order in args.orders:
        cfg = load_config(args.config, {**parse_set(args.sets), "data.class_order": order})
        per_seed = []
        for seed in args.seeds:
            note(f"order {order}, seed {seed}")
            per_seed.append(one_seed(variant(cfg, {"seed": seed}), Path(args.out) / order / f"seed_{seed}",
                                     args.openset))
        report[order] = {"per_seed": per_seed, "mean_std": aggregate(per_seed)}
    atomic_write_json(Path(args.out) / "head_study.json", report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
