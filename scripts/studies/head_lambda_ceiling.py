#!/usr/bin/env python3
"""The joint head's accuracy over a lambda grid, scored on the test split: a ceiling for
"the best head fitted on every class at once", not a result (it tunes on test data).

Reads the `joint-head` runs of scripts/studies/head_study.py (their G and C), re-extracts the
test clips' head features, and prints JSON: per seed the g the base-task rule chose and
the test accuracy at each g (lambda = g tr(G) / M).

    python scripts/studies/head_lambda_ceiling.py --study runs/photo_study --order seeded \\
        --set data.dataset=folder --set data.root=runs/photo_motion
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

GRID = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


EPILOG = """Prints JSON: per seed the g the base-task rule chose and the test accuracy at each g. Takes
about 90 s per seed on this machine (2 CPU cores, measured on the demo's joint-head run while
shared with other jobs, torch's import included); needs head_study's joint-head runs."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--study", type=Path, required=True)
    p.add_argument("--order", default="seeded")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", dest="sets", action="append", default=[])
    args = p.parse_args(argv)
    import torch  # after parsing: --help answers without loading torch

    from stpr.train import run as R
    from stpr.train.checkpoint import checkpoint_path, load_checkpoint
    from stpr.train.config_load import load_config, parse_set

    out = {}
    for seed in args.seeds:
        run_dir = args.study / args.order / f"seed_{seed}" / "joint-head"
        ck = load_checkpoint(checkpoint_path(run_dir, 0))
        cfg = load_config("demo", {**parse_set(args.sets), "head.mode": "alone", "seed": seed,
                                   "data.protocol": ck["config"]["data"]["protocol"]})
        s = R.build(cfg)
        s.learner.load_state_dict(ck["learner"])
        head = s.learner.head
        H, Y = [], []
        with torch.no_grad():
            for frames, labels in R._loader(s, s.splits.test, 0, train=False):
                # the head alone reads the features the tower already computed (learner_head.head_window)
                feats = s.learner.model.frame_features(frames)
                H.append(head.features(s.learner.head_window(frames, feats)))
                Y.append(labels)
        H, Y = torch.cat(H).double(), torch.cat(Y)
        acc = {}
        for g in GRID:
            lam = g * float(torch.trace(head.gram)) / head.dim
            W = torch.linalg.solve(head.gram + lam * torch.eye(head.dim, dtype=torch.float64), head.cross)
            acc[str(g)] = 100 * float(((H @ W).argmax(1) == Y).double().mean())
        out[seed] = {"chosen_g": head.lambda_report.get("g"), "test_acc_by_g": acc, "best": max(acc.values())}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
