#!/usr/bin/env python3
"""StPR ablations (paper Tables 3-6) over several seeds, from as few training runs as possible.

Routing only changes evaluation (training uses v = fbar + z_k with the task id), so
one run per distillation variant is trained and every routing mode is evaluated on
the `fssd` run's per-task checkpoints. A lambda sweep adds one fssd run per lambda, and
a joint-training run (every class in one task) gives the upper bound. Each seed has its
own folder `seed_N/`; tables give the mean and the standard deviation over seeds.
Runs live under --out and are reused (finished) or resumed (unfinished).

    python scripts/studies/ablate.py                               # demo config, seeds 0 1 2, runs/ablation
    python scripts/studies/ablate.py --quick --seeds 0 --out /tmp/abl   # smoke run
    python scripts/studies/ablate.py --config paper --set data.protocol=51+10x5 --out runs/ucf_ablation

Writes ablation.md and ablation.csv under --out (plus seed_N/routing_eval.json, the
cached re-evaluation counts); prints the Markdown to stdout and progress to stderr.
"""
from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stpr.runtime.atomic import atomic_write_json, atomic_write_text
from stpr.runtime.contract import DISTILL_MODES, ROUTING_MODES
from stpr.train import metrics as M
from stpr.train.config import Config
from stpr.train.config_load import apply_overrides, load_config, parse_set
from stpr.train.errors import StprError
from stpr.train.run_dir import saved_config

DISTILLS = DISTILL_MODES
ORACLE = "oracle"  # analysis only: routes by the true task id, not a deployable method
ROUTINGS = tuple(m for m in ROUTING_MODES if m != ORACLE)
ORACLE_LABEL = "oracle (analysis-only upper bound: uses the true task id)"
OWNED_KEYS = ("method.routing", "method.distill", "method.lambda_fssd", "seed")  # set per variant here
QUICK = {"optim.epochs_base": 1, "optim.epochs_incremental": 1,
         "data.clips_per_class_train": 8, "data.clips_per_class_test": 4}
Row = dict[str, Any]  # table, variant, seeds, acc/bwf/task_id mean and std


def note(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[ablate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


EPILOG = """Prints the Markdown tables (progress on stderr) and writes ablation.md and ablation.csv. Takes
about 20 min on this machine (2 CPU cores) with the defaults: an estimate from six StPR demo
runs per seed (45 to 85 s each, docs/results.md) and the routing re-evaluation, 3 seeds; --quick
--seeds 0 takes about 2 min."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--config", default="demo", help="built-in config name or YAML path (default: demo)")
    p.add_argument("--out", default="runs/ablation", help="folder for the runs and the tables")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to every run (repeatable)")
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 1.0, 10.0],
                   help="FSSD weights for the lambda sweep (Table 6)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one set of runs per seed")
    p.add_argument("--no-joint", action="store_true", help="skip the joint-training upper bound")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 epoch per task, few clips")
    return p.parse_args(list(argv))


def base_config(args: argparse.Namespace) -> Config:
    """The config every run shares: file, then --quick, then --set (variant keys refused)."""
    sets = parse_set(args.sets)
    owned = [k for k in sets if k in OWNED_KEYS]
    if owned:
        raise StprError(f"--set {', '.join(owned)}: the ablation sets these per variant; "
                        "use --lambdas for lambda and --seeds for seeds")
    # StPR's tables: the demo's default classifier is the analytic head, so it is switched off here.
    return load_config(args.config, {**(QUICK if args.quick else {}), "head.mode": "none", **sets,
                                     "method.routing": "td"})


def variant(cfg: Config, keys: dict[str, Any]) -> Config:
    """A copy of the shared config with a variant's keys set."""
    return apply_overrides(copy.deepcopy(cfg), keys)


def _comparable(cfg: Config) -> dict[str, Any]:
    d = cfg.to_dict()
    d.pop("device")  # where it runs does not change what it computes
    return d


def ensure_run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """metrics.json of a finished run of `cfg` in `run_dir`: reused, resumed or trained."""
    from stpr.train import run as R  # torch: imported when a run is needed, so --help answers at once
    from stpr.train.checkpoint import finished_tasks

    if (run_dir / "config.yaml").is_file():
        saved = saved_config(run_dir)
        if _comparable(saved) != _comparable(cfg):
            raise StprError(f"{str(run_dir)!r} holds a run with another config; use another --out or delete it")
        mfile = run_dir / "metrics.json"
        if mfile.is_file():
            metrics = json.loads(mfile.read_text())
            if metrics.get("finished_tasks") == metrics.get("num_tasks"):
                note(f"reusing {run_dir} (all {metrics['num_tasks']} tasks finished)")
                return metrics
        note(f"resuming {run_dir} after tasks {finished_tasks(run_dir)}")
        resume = True
    else:
        note(f"training {run_dir} (distill={cfg.method.distill}, lambda={cfg.method.lambda_fssd:g})")
        resume = False
    t0 = time.perf_counter()
    metrics = R.run(None if resume else cfg, run_dir, resume=resume, device=cfg.device)
    note(f"finished {run_dir} in {time.perf_counter() - t0:.0f}s: acc {metrics['acc']:.2f}")
    return metrics


def _pad(rows: list[list[int]], K: int) -> np.ndarray:
    a = np.zeros((len(rows), K), dtype=np.int64)
    for i, row in enumerate(rows):
        a[i, : len(row)] = row
    return a


def routing_counts(run_dir: Path, modes: Sequence[str], device: str) -> dict[str, Any]:
    """Evaluate every task's checkpoint under each routing mode: correct, task-id and total count rows."""
    from stpr.train import run as R
    from stpr.train.checkpoint import check_same_model, checkpoint_path, load_checkpoint

    cfg = saved_config(run_dir)
    cfg.device = device
    s = R.build(cfg)  # data, protocol and loaders; a fresh learner per checkpoint below
    correct: dict[str, list[list[int]]] = {m: [] for m in modes}
    task_id: dict[str, list[list[int]]] = {m: [] for m in modes}
    total: list[list[int]] = []
    for k in range(len(s.tasks)):
        path = checkpoint_path(run_dir, k)
        ckpt = load_checkpoint(path)
        learner, _, fingerprint = R.build_learner(copy.deepcopy(cfg))  # own cfg: routing is switched below
        check_same_model(ckpt, cfg.model.name, fingerprint, path)
        learner.load_state_dict(ckpt["learner"])
        loaders = [R._loader(s, s.splits.test, j, train=False) for j in range(k + 1)]
        for mode in modes:
            learner.cfg.method.routing = mode
            res = learner.evaluate(loaders)
            correct[mode].append(res.correct)
            task_id[mode].append(res.task_id_correct)
        total.append(res.total)
        note(f"evaluated {path.name} under routing {', '.join(modes)}")
    return {"correct": correct, "task_id": task_id, "total": total, "classes_per_task": [len(t) for t in s.tasks]}


def evaluate_routings(run_dir: Path, modes: Sequence[str], device: str, cache: Path) -> dict[str, dict[str, Any]]:
    """Metrics per routing mode from `run_dir`'s checkpoints; counts are cached in `cache`
    (reused while the checkpoints' sizes and mtimes and the modes are unchanged)."""
    key = {"modes": list(modes), "checkpoints": {p.name: [p.stat().st_size, p.stat().st_mtime_ns]
                                                 for p in sorted((run_dir / "checkpoints").glob("task_*.pt"))}}
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    if cached.get("key") == key:
        counts = cached["counts"]
        note(f"reusing routing evaluation from {cache}")
    else:
        counts = routing_counts(run_dir, modes, device)
        atomic_write_json(cache, {"key": key, "counts": counts})
    sizes, total = counts["classes_per_task"], counts["total"]
    K = len(sizes)
    last = len(total) - 1
    return {m: {**M.summary(_pad(counts["correct"][m], K), _pad(total, K), sizes),
                "task_id_accuracy": M.pooled_accuracy(counts["task_id"][m][last], total[last]),
                "correct": counts["correct"][m], "total": total} for m in modes}


def check_reproduces(run_metrics: dict[str, Any], evaluated: dict[str, dict[str, Any]], run_dir: Path) -> None:
    """The run's own routing, re-evaluated from checkpoints, must give its metrics.json exactly."""
    mode = run_metrics["routing"]
    mine, theirs = evaluated[mode], run_metrics
    same = (mine["correct"] == theirs["correct"] and mine["total"] == theirs["total"]
            and mine["acc"] == theirs["acc"] and mine["bwf"] == theirs["bwf"])
    if not same:
        raise StprError(f"re-evaluating {str(run_dir)!r} with routing {mode!r} gave correct {mine['correct']} "
                        f"(acc {mine['acc']!r}), but its metrics.json says {theirs['correct']} "
                        f"(acc {theirs['acc']!r}): checkpoints and metrics disagree")
    note(f"consistency: routing {mode!r} re-evaluated from checkpoints reproduces metrics.json (acc {mine['acc']:.2f})")


def _stat(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v))  # population std over seeds


def row(table: str, variant: str, per_seed: Sequence[dict[str, Any]], routed: bool = True) -> Row:
    """One table row: mean and std over seeds of Acc, BWF and (where routed) task identification."""
    out: Row = {"table": table, "variant": variant, "seeds": len(per_seed)}
    for key in ("acc", "bwf", "task_id_accuracy", "drift"):
        vals = [m.get(key) for m in per_seed] if routed or key != "task_id_accuracy" else []
        out[f"{key}_mean"], out[f"{key}_std"] = _stat(vals)
    return out


def build_rows(seeds: Sequence[dict[str, Any]]) -> list[Row]:
    """Every table's rows in the paper's order; `seeds` holds one dict of results per seed
    (keys distill, routing, lambdas, and joint where it was run)."""
    def each(get) -> list[dict[str, Any]]:  # noqa: ANN001
        return [get(r) for r in seeds]

    rows = [row("components", "frame mean only", each(lambda r: r["distill"]["fssd"]["spatial_only"]), routed=False),
            row("components", "adapters + TD-MoE, no distillation", each(lambda r: r["distill"]["none"])),
            row("components", "FSSD + avg routing", each(lambda r: r["routing"]["avg"])),
            row("components", "full StPR (FSSD + TD-MoE)",  # the fssd run itself: its drift too
                each(lambda r: {**r["routing"]["td"], "drift": r["distill"]["fssd"].get("drift")}))]
    if all("joint" in r for r in seeds):
        rows.append(row("components", JOINT_LABEL, each(lambda r: r["joint"]), routed=False))  # one task: no routing
    rows += [row("routing", mode, each(lambda r, m=mode: r["routing"][m])) for mode in ROUTINGS]
    rows += [row("routing", ORACLE_LABEL, each(lambda r: r["routing"][ORACLE]))]
    rows += [row("distillation", d, each(lambda r, d=d: r["distill"][d])) for d in DISTILLS]
    lams = seeds[0]["lambdas"]
    rows += [row("lambda", f"{lam:g}", each(lambda r, lam=lam: r["lambdas"][lam])) for lam in lams]
    return rows


JOINT_LABEL = "joint training (upper bound: every class in one task)"
FIELDS = ["table", "variant", "seeds", "acc_mean", "acc_std", "bwf_mean", "bwf_std",
          "task_id_accuracy_mean", "task_id_accuracy_std", "drift_mean", "drift_std"]


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _fmt(r: Row, key: str) -> str:
    mean, std = r[f"{key}_mean"], r[f"{key}_std"]
    return "n/a" if mean is None else f"{mean:.1f} ± {std:.1f}"


TITLES = {"components": ("Table 3: components", "Setting"), "routing": ("Table 4: routing", "Routing"),
          "distillation": ("Table 5: distillation", "Distillation"), "lambda": ("Table 6: FSSD weight λ", "λ")}


def to_markdown(rows: list[Row], cfg: Config, seeds: Sequence[int], command: str) -> str:
    o = cfg.optim
    lines = ["# StPR ablation", "",
             f"Protocol {cfg.data.protocol} on {cfg.data.dataset} (class order {cfg.data.class_order}), "
             f"model {cfg.model.name} (pretrained {cfg.model.pretrained}), epochs {o.epochs_base}/"
             f"{o.epochs_incremental} (base/incremental), seeds {' '.join(map(str, seeds))}: mean ± std over "
             "seeds. Acc: class-weighted top-1 (%) after the last task; BWF: backward forgetting (lower is "
             "better); task id: share of test videos whose top-weighted expert is their task's; drift: "
             "mean relative change (%) of old tasks' test-frame features since the end of their task "
             "(a property of the trained run, so n/a where only the routing changes).",
             "", f"Command: `{command}`", ""]
    for table, (title, label) in TITLES.items():
        lines += [f"## {title}", "", f"| {label} | Acc | BWF | task id | drift |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['variant']} | {_fmt(r, 'acc')} | {_fmt(r, 'bwf')} | {_fmt(r, 'task_id_accuracy')} "
                  f"| {_fmt(r, 'drift')} |" for r in rows if r["table"] == table]
        lines.append("")
    return "\n".join(lines)


def run_seed(cfg: Config, out: Path, lambdas: Sequence[float], joint: bool) -> dict[str, Any]:
    """Every run of one seed under `out`, and the routing modes evaluated from its fssd run."""
    distill = {d: ensure_run(variant(cfg, {"method.distill": d}), out / f"distill_{d}") for d in DISTILLS}
    fssd_dir = out / "distill_fssd"
    routing = evaluate_routings(fssd_dir, (*ROUTINGS, ORACLE), cfg.device, out / "routing_eval.json")
    check_reproduces(distill["fssd"], routing, fssd_dir)
    res: dict[str, Any] = {"distill": distill, "routing": routing, "lambdas": {}}
    for lam in lambdas:
        if lam == cfg.method.lambda_fssd:
            res["lambdas"][lam] = distill["fssd"]  # the same run: reuse it
            continue
        c = variant(cfg, {"method.distill": "fssd", "method.lambda_fssd": lam})
        res["lambdas"][lam] = ensure_run(c, out / f"lambda_{lam:g}")
    if joint:  # every class of the protocol in one task: what incremental training is measured against
        classes = len(distill["fssd"]["classes"])
        res["joint"] = ensure_run(variant(cfg, {"data.protocol": f"{classes}x1", "data.task_file": None}),
                                  out / "joint")
    return res


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        cfg, out = base_config(args), Path(args.out)
        seeds = [run_seed(variant(cfg, {"seed": seed}), out / f"seed_{seed}", args.lambdas, not args.no_joint)
                 for seed in args.seeds]
    except StprError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = build_rows(seeds)
    md = to_markdown(rows, cfg, args.seeds, shlex.join(["python", "scripts/studies/ablate.py", *argv]))
    atomic_write_text(out / "ablation.csv", to_csv(rows))
    atomic_write_text(out / "ablation.md", md)
    note(f"wrote {out / 'ablation.md'} and ablation.csv in {time.perf_counter() - t0:.0f}s")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
