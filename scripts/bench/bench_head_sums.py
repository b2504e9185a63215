#!/usr/bin/env python3
"""What the head's sums cost a bundle: bytes on disk, the device's solve, and float32's error. Prints JSON.

Sizes are of the files `stpr-export` writes (`head_gram.npy`, `head_cross.npy`, through
the same `save_sums`), for M = 2048 and 4096 at float64 and float32, for ViT-B/16 on
UCF101 (C = 101) and HMDB51 (C = 51) and for the demo (C = 20); they depend on M and C
only, not on the tower. Beside them: one `ridge_solve` of (M, M) by (M, C) on this
machine, and, with --bundle, how far the weights move when a real bundle's sums are
stored as float32 (the device always solves in float64).

    python scripts/bench/bench_head_sums.py [--bundle runs/learn_study/weight_s0/bundle_base]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stpr.runtime.bundle.load import _array, load_bundle
from stpr.runtime.model.head_sums import HEAD_CROSS_FILE, HEAD_GRAM_FILE, HeadSums, load_sums, ridge_solve, save_sums

CASES = {"ViT-B/16, UCF101": 101, "ViT-B/16, HMDB51": 51, "demo": 20}


def sizes(dim: int, classes: int, dtype: str) -> dict[str, float]:
    """MiB of G and C as saved."""
    sums = HeadSums(gram=np.zeros((dim, dim)), cross=np.zeros((dim, classes)), counts=np.zeros(classes), n_ref=1.0,
                    lam=1.0, balance="weight", dtype=dtype)
    with tempfile.TemporaryDirectory() as d:
        save_sums(Path(d), sums)
        g, c = (os.path.getsize(Path(d) / f) / 2**20 for f in (HEAD_GRAM_FILE, HEAD_CROSS_FILE))
    return {"gram_MiB": round(g, 2), "cross_MiB": round(c, 3), "total_MiB": round(g + c, 2)}


def solve_seconds(dim: int, classes: int) -> float:
    rng = np.random.default_rng(0)
    h = rng.standard_normal((dim // 2, dim))
    gram, cross = h.T @ h, h.T @ rng.standard_normal((dim // 2, classes))
    t0 = time.perf_counter()
    ridge_solve(gram, cross, 1e-3 * float(np.trace(gram)) / dim)
    return round(time.perf_counter() - t0, 3)


def float32_error(bundle: Path) -> dict[str, float]:
    b = load_bundle(bundle)
    sums = load_sums(b.path, b.manifest, _array)
    w64 = ridge_solve(sums.gram, sums.cross, sums.lam)
    w32 = ridge_solve(sums.gram.astype(np.float32).astype(np.float64),
                      sums.cross.astype(np.float32).astype(np.float64), sums.lam)
    return {"max_rel_diff": float(np.abs(w32 - w64).max() / np.abs(w64).max()), "lambda": sums.lam,
            "dim": sums.dim, "classes": sums.num_classes}


EPILOG = """Prints one JSON object: the sums' sizes per M, C and dtype, the device's solve seconds, and
(--bundle) float32's error. Takes about 20 s on this machine (2 CPU cores, shared with other
jobs)."""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--bundle", type=Path, help="a bundle exported with its head sums, for float32's error")
    args = p.parse_args()
    out: dict = {"machine": f"{os.cpu_count()} CPU cores", "sizes": {}, "solve_s": {}}
    for name, classes in CASES.items():
        for dim in (2048, 4096):
            for dtype in ("float64", "float32"):
                out["sizes"][f"{name}, M={dim}, {dtype}"] = sizes(dim, classes, dtype)
    for dim in (2048, 4096):
        out["solve_s"][f"M={dim}, C=101"] = solve_seconds(dim, 101)
    if args.bundle is not None:
        out["float32_sums_weight_error"] = float32_error(args.bundle)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
