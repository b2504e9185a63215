#!/usr/bin/env python3
"""Classes learned on the device (`stpr-learn`) against the same classes trained on the workstation.

Per seed it trains the demo without its last shape (protocol 4+4x3: 16 classes, the
ring's four motions held out) and the full demo (4+4x4, the ring as the last task, 48
clips per class), and exports both. Then, for every k of --clips, it hands the first k
of the ring classes' 48 training clips (PNG frame folders, lossless) to `stpr-learn
--data`, run as a child process in which `import torch` fails, and reads back on the
run's own test clips, through the device code:

- the four learned classes' recall, against their recall in the full demo's bundle
  (`ratio_to_workstation`: the target is >= 0.9 at k = 16);
- the 16 trained classes' accuracy before and after (the target: they lose <= 1 point);
- the wall seconds of the child (process start, tower on every clip, solve, write);
- the largest gap between the device's weights and the training side's solve on the
  same features (`AnalyticHead.add_task`), which must be ~0: it is the same solve.

`--balance` picks the head's balance rule of the base runs (`weight`: each clip weighs
n_ref / its class's count; `none`: plain ridge), the imbalance comparison. `--learn-args`
passes options to every `stpr-learn` (e.g. "--views 2 --crops corners") on the same runs,
and `--tag` names that variant's folders and JSON, so variants share the trained runs.
`--set KEY=VALUE` trains the base and full runs with another config (e.g.
`head.crops=corners`: the workstation's clips give crop rows too); use another `--out`.

    python scripts/studies/learn_study.py --out runs/learn_study --seeds 0 1 2 --clips 2 4 8 16 32
    python scripts/studies/learn_study.py --out runs/learn_study_seeded --order seeded --clips 4 8 16 32
    python scripts/studies/learn_study.py --out runs/learn_photo --dataset folder --data-root runs/photo_motion \
        --clips 4 8 16 32

With `--order seeded` the held-out task mixes shapes and motions; with a folder dataset
(e.g. `scripts/data/make_photo_motion.py`'s photos) the held-out classes' clips are the
dataset's own training clips and the test clips are read as the device reads them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ablate.py beside this script

from ablate import ensure_run, note, variant  # noqa: E402

from stpr.runtime.atomic import atomic_write_json  # noqa: E402
from stpr.train.config_load import load_config, parse_set  # noqa: E402

HELD_OUT_TASK = 4  # the fifth task (the demo's ring: its default order is shape-major)
CHILD = "import sys; sys.modules['torch'] = None; from stpr.runtime.cli.learn_cli import main; main()"


def export(run_dir: Path, out: Path) -> Path:
    if not (out / "manifest.json").is_file():
        from stpr.export.bundle import export_run

        export_run(run_dir, out, force=True)
    return out


def write_clips(ds: Any, classes: list[str], per_class: int, root: Path) -> None:
    """The first `per_class` training clips of each class as PNG frame folders: root/<class>/<i>/."""
    for c, name in enumerate(ds.classes):
        if name not in classes:
            continue
        idx = [i for i, t in enumerate(ds.targets) if t == c][:per_class]
        for j, i in enumerate(idx):
            folder = root / name / f"{j:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for f, frame in enumerate(ds.raw_clip(i)):
                cv2.imwrite(str(folder / f"{f:02d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


def subset(root: Path, k: int, dest: Path) -> Path:
    """DIR/<class>/<clips> with the first k clips of each class of `root` (symlinks)."""
    shutil.rmtree(dest, ignore_errors=True)
    for cls in sorted(root.iterdir()):
        (dest / cls.name).mkdir(parents=True)
        for clip in sorted(cls.iterdir())[:k]:
            (dest / cls.name / clip.name).symlink_to(clip.resolve())
    return dest


def predict(bundle: Path, test: list[tuple[Callable[[], list[np.ndarray]], str]]) -> tuple[list[str], list[str]]:
    """(predicted class, true class) for every test clip (its BGR frames, its class), through the device's code."""
    from stpr.runtime.bundle.load import load_bundle
    from stpr.runtime.engine.recognizer import Recognizer
    from stpr.runtime.model.preprocess import preprocess

    b = load_bundle(bundle)
    pred, truth = [], []
    with Recognizer(b) as rec:
        for frames, name in test:
            x = np.stack([preprocess(f, b.size, b.mean, b.std) for f in frames()])
            probs = rec.classify(rec.frame_features(x)[None])["probs"][0]
            pred.append(rec.names[int(probs.argmax())])
            truth.append(name)
    return pred, truth


def synthetic_clips(cfg: Any, out: Path, held: list[str]) -> tuple[Path, list]:
    """The demo: (DIR/<held-out class>/<48 PNG frame folders>, test clips)."""
    from stpr.train.data.synthetic import SyntheticActions

    common = dict(num_frames=cfg.data.num_frames, image_size=32, seed=cfg.seed)
    train, test = SyntheticActions("train", **common), SyntheticActions("test", **common)
    root = out / "clips"  # all 48 training clips of each held-out class; each k takes its first k
    if not (root / held[0] / f"{train.clips_per_class - 1:03d}").is_dir():
        shutil.rmtree(root, ignore_errors=True)
        write_clips(train, held, train.clips_per_class, root)

    def frames(i: int) -> Callable[[], list[np.ndarray]]:
        return lambda: [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in test.raw_clip(i)]

    return root, [(frames(i), test.classes[t]) for i, t in enumerate(test.targets)]


def folder_clips(cfg: Any, out: Path, held: list[str]) -> tuple[Path, list]:
    """A folder dataset (e.g. scripts/data/make_photo_motion.py's photos): the same, with the held-out
    classes' training clips linked from the dataset, and its test split read as the device reads."""
    from stpr.runtime.learn.learn_clips import read_clip
    from stpr.train.data.folder import folder_dataset

    kw = dict(holdout=cfg.data.holdout, seed=cfg.seed, num_frames=cfg.data.num_frames, size=32,
              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    train, test = folder_dataset(Path(cfg.data.root), True, **kw), folder_dataset(Path(cfg.data.root), False, **kw)
    classes = list(train.classes)
    root = out / "clips"
    shutil.rmtree(root, ignore_errors=True)
    for path, label in train.samples:
        if classes[label] in held:
            (root / classes[label]).mkdir(parents=True, exist_ok=True)
            (root / classes[label] / path.name).symlink_to(path.resolve())
    T = cfg.data.num_frames
    return root, [((lambda p=p: read_clip(p, T)), classes[y]) for p, y in test.samples]


def accuracy(pred: list[str], truth: list[str], classes: list[str]) -> float:
    hits = [p == t for p, t in zip(pred, truth) if t in classes]
    return 100.0 * float(np.mean(hits)) if hits else float("nan")


def workstation_gap(run_dir: Path, bundle: Path, learned: Path) -> float:
    """max |W_device - W_training| / max |W_training|: the training side's `add_task` on the rows
    the device computed (the same features), against the learned bundle's weights."""
    import torch

    from stpr.train.analytic_fit import AnalyticHead
    from stpr.train.restore import restore

    r = restore(run_dir, None)
    head = AnalyticHead.from_state(r.learner.head.state_dict())
    m = json.loads((learned / "manifest.json").read_text())
    rows = np.load(learned / m["head"]["learned"]["rows"], allow_pickle=False)
    labels = np.concatenate([[m["classes"].index(c)] * k for c, k in zip(m["head"]["learned"]["classes"],
                                                                         m["head"]["learned"]["clips"])])
    head.add_task(torch.from_numpy(rows), torch.from_numpy(labels), len(m["classes"]))
    w_dev = np.load(learned / m["head"]["weights"], allow_pickle=False)
    w_ws = head.weights.numpy()
    return float(np.abs(w_dev - w_ws).max() / np.abs(w_ws).max())


def one_seed(cfg: Any, out: Path, clips: Sequence[int], learn_args: Sequence[str] = (),
             tag: str = "") -> dict[str, Any]:
    base_cfg, full_cfg = variant(cfg, {"data.protocol": "4+4x3"}), variant(cfg, {"data.protocol": "4+4x4"})
    base_run, full_run = out / "base", out / "full"
    ensure_run(base_cfg, base_run)
    ensure_run(full_cfg, full_run)
    base, full = export(base_run, out / "bundle_base"), export(full_run, out / "bundle_full")
    order = json.loads((full_run / "metrics.json").read_text())["classes"]  # the protocol's order, task by task
    held, trained = order[4 * HELD_OUT_TASK:4 * HELD_OUT_TASK + 4], order[:4 * HELD_OUT_TASK]
    root, test = (synthetic_clips if cfg.data.dataset == "synthetic" else folder_clips)(cfg, out, held)
    available = min(len(list((root / c).iterdir())) for c in held)
    clips = [k for k in clips if k <= available]
    before, truth = predict(base, test)
    ws_pred, _ = predict(full, test)
    res: dict[str, Any] = {
        "trained_acc_before": accuracy(before, truth, trained),
        "workstation": {"clips": available, "new_recall": accuracy(ws_pred, truth, held),
                        "trained_acc": accuracy(ws_pred, truth, trained)},
        "device": {},
    }
    for k in clips:
        learned = out / f"bundle{tag}_k{k}"
        shutil.rmtree(learned, ignore_errors=True)
        data = subset(root, k, out / f"data{tag}_k{k}")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, "--bundle", str(base), "--out", str(learned),
                               "--data", str(data), "--min-clips", "1", *learn_args], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"stpr-learn failed at k={k}: {proc.stderr.strip()}")
        pred, _ = predict(learned, test)
        recall = accuracy(pred, truth, held)
        res["device"][str(k)] = {
            "new_recall": recall,
            "ratio_to_workstation": recall / max(1e-9, res["workstation"]["new_recall"]),
            "trained_acc_after": accuracy(pred, truth, trained),
            "trained_change": accuracy(pred, truth, trained) - res["trained_acc_before"],
            "wall_s": wall, "gap_to_training_solve": workstation_gap(base_run, base, learned),
        }
        note(f"seed {cfg.seed} k={k}: {json.dumps(res['device'][str(k)])}")
    return res


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    def ms(values: list[float]) -> list[float]:
        return [round(float(np.mean(values)), 2), round(float(np.std(values)), 2)]

    out: dict[str, Any] = {"trained_acc_before": ms([s["trained_acc_before"] for s in per_seed]),
                           "workstation_new_recall": ms([s["workstation"]["new_recall"] for s in per_seed]),
                           "device": {}}
    for k in per_seed[0]["device"]:
        rows = [s["device"][k] for s in per_seed]
        out["device"][k] = {key: ms([r[key] for r in rows]) for key in rows[0]}
        out["device"][k]["gap_to_training_solve"] = max(r["gap_to_training_solve"] for r in rows)
    return out


EPILOG = """Prints one JSON object (per seed and clip count: recall of the learned classes, trained-class
accuracy before and after, stpr-learn's seconds, the gap to the training side's solve) and
writes it under --out. Takes about 5 min on this machine (2 CPU cores) with the defaults, an
estimate: per seed two demo runs of about 10 s and two exports, then about 2 s per stpr-learn
(docs/learn.md); under a load of 10 one base run alone took 216 s."""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--out", type=Path, default=Path("runs/learn_study"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--clips", type=int, nargs="+", default=[2, 4, 8, 16, 32], help="clips per learned class")
    p.add_argument("--balance", choices=["weight", "none"], default="weight", help="the head's balance rule")
    p.add_argument("--dataset", default="synthetic", help="synthetic (the demo) or folder")
    p.add_argument("--order", default="auto", help="data.class_order: auto (the dataset's) or seeded (shuffled)")
    p.add_argument("--data-root", help="the folder dataset's ROOT/<class>/<clips>")
    p.add_argument("--learn-args", default="", help="options for every stpr-learn, e.g. \"--views 2\"")
    p.add_argument("--tag", default="", help="names this variant's bundles and JSON (default: none)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a config key of the base and full runs (repeatable), e.g. head.crops=corners")
    args = p.parse_args(argv)
    per_seed = {}
    for seed in args.seeds:
        keys = {"seed": seed, "head.balance": args.balance, "data.class_order": args.order}
        if args.dataset != "synthetic":
            keys.update({"data.dataset": args.dataset, "data.root": args.data_root})
        keys.update(parse_set(args.sets))
        cfg = variant(load_config("demo"), keys)
        per_seed[str(seed)] = one_seed(cfg, args.out / f"{args.balance}_s{seed}", args.clips,
                                       args.learn_args.split(), f"_{args.tag}" if args.tag else "")
    result = {"balance": args.balance, "seeds": args.seeds, "learn_args": args.learn_args, "per_seed": per_seed,
              "mean_std": aggregate(list(per_seed.values())),
              "machine": f"{os.cpu_count()} CPU cores"}
    atomic_write_json(args.out / f"learn_study_{args.balance}{f'_{args.tag}' if args.tag else ''}.json", result)
    print(json.dumps(result["mean_std"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
