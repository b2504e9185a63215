"""`stpr-export` of a torch-free head run (train/head_run.py): a head-only bundle, without torch.

The bundle holds the ONNX tower the run read (copied, hash-checked against the run's
record), its preprocessing, the head's weights and sums, and none of StPR's parts
(`head_only: true`, docs/bundle.md). Before the bundle takes its name, the runtime loads
it as `stpr-run` will and scores test clips of the run: its probabilities must be the
run's own head's (the parity check).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from stpr.runtime.atomic import atomic_write_json, make_temp_dir
from stpr.runtime.bundle.bundle_dir import prepare_target, remove_stale_temp, swap_into_place
from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.bundle.manifest import SCHEMA_VERSION, seal_manifest, sha256_file
from stpr.runtime.contract import (
    HEAD_ONLY_TOWER_FILE,
    HEAD_SUBSPACE_FILE,
    HEAD_WEIGHTS_FILE,
    MANIFEST_NAME,
    OPENSET_FILE,
    PARITY_FILE,
)
from stpr.runtime.engine.recognizer import Recognizer
from stpr.runtime.errors import BundleError, StprError
from stpr.runtime.model.analytic import PROJECTION_GENERATOR, mode_probabilities, projection_sha256
from stpr.runtime.model.head_sums import HeadSums, save_sums, sums_section
from stpr.runtime.model.tower import OnnxTower, TowerSpec

from .head_only_openset import write_head_openset
from .metadata import tool_versions

HEAD_ONLY_TOOLS = ("stpr", "numpy", "onnxruntime", "onnxruntime-gpu")  # what a torch-free export runs on

log = logging.getLogger(__name__)

STORED_SUMS_TOLERANCE = 1e-4  # max |W from the stored sums - W| / max |W|; stpr-learn refuses more (learn.py)
PARITY_MAX_PROB_DIFF = 1e-5  # the bundle on the runtime against the run's head, same tower file: float32 noise


def check_stored_sums(sums: HeadSums) -> None:
    """float32 sums are refused when their rounding moves the solve: with a small lambda
    (the demo's is ~1e-6 of G's scale) it flips G's near-null directions and the weights
    come out ~1000x off; float64 is exact."""
    if sums.dtype == "float64":
        return
    w = sums.solve()
    stored = HeadSums(**{**sums.__dict__, "gram": sums.gram.astype(sums.dtype).astype(np.float64),
                         "cross": sums.cross.astype(sums.dtype).astype(np.float64)})
    gap = float(np.abs(stored.solve() - w).max() / max(1e-12, float(np.abs(w).max())))
    if gap > STORED_SUMS_TOLERANCE:
        raise StprError(f"--head-sums {sums.dtype} would move the head's weights by {gap:.2g} (relative; lambda "
                        f"{sums.lam:.3g} is small next to the rounding of G); use --head-sums float64")


def is_head_run(run_dir: Path) -> bool:
    """Whether `run_dir` was trained by the torch-free head (its checkpoints are `.npz`)."""
    from stpr.train.run_dir import NUMPY_CHECKPOINT, checkpoint_kinds

    return NUMPY_CHECKPOINT in checkpoint_kinds(run_dir)


def _restore(run_dir: Path, task: int | None) -> tuple[Any, dict[str, Any], Path]:
    from stpr.train.analytic_fit_numpy import NumpyHead
    from stpr.train.head_run import checkpoint_path, finished_tasks, load_checkpoint
    from stpr.train.run_dir import pick_task

    task = pick_task(finished_tasks(run_dir), task, run_dir)
    path = checkpoint_path(run_dir, task)
    arrays, meta = load_checkpoint(path)
    return NumpyHead.from_state(arrays, meta["lambda_report"]), meta, path


def _tower_file(meta: dict[str, Any]) -> Path:
    t = meta["tower"]
    path = Path(t["file"])
    if not path.is_file():
        raise StprError(f"the run's tower {str(path)!r} is gone; put it back (sha256 {t['sha256'][:12]}...) to export")
    if sha256_file(path) != t["sha256"]:
        raise StprError(f"the run's tower {str(path)!r} changed since training (its sha256 differs); export with "
                        "the file the run read")
    return path


def export_head_run(run_dir: str | Path, out: str | Path, *, task: int | None = None, force: bool = False,
                    parity_clips: int = 16, head_sums: str | None = "float64", openset: bool = True) -> dict[str, Any]:
    """Write the head-only bundle `out` from torch-free run `run_dir`; returns
    `{"bundle", "files", "parity", "openset", "timings_s"}` (`openset`: the calibration's
    report, None when the run's held-out clips cannot be read or `openset` is False)."""
    run_dir, out = Path(run_dir), Path(out)
    if parity_clips < 1:
        raise StprError(f"--parity-clips {parity_clips}: the parity check needs at least 1 clip (default 16)")
    try:
        prepare_target(out, force)
    except BundleError as e:
        raise StprError(str(e)) from None
    t0 = time.perf_counter()
    head, meta, ckpt = _restore(run_dir, task)
    tower = _tower_file(meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(out)
    tmp = make_temp_dir(out.parent, f".tmp-{out.name}-{os.getpid()}-")
    try:
        shutil.copyfile(tower, tmp / HEAD_ONLY_TOWER_FILE)
        np.save(tmp / HEAD_WEIGHTS_FILE, head.weights.astype(np.float32), allow_pickle=False)
        manifest = _manifest(head, meta, ckpt, run_dir)
        if head_sums is not None:
            held = HeadSums(gram=head.gram, cross=head.cross, counts=head.counts, n_ref=float(head.n_ref),
                            lam=float(head.lam), balance=head.balance, dtype=head_sums)
            check_stored_sums(held)
            save_sums(tmp, held)
            manifest["head"]["sums"] = sums_section(held, manifest["classes"])[0]
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(tmp / MANIFEST_NAME, seal_manifest(manifest))
        parity = head_parity(tmp, head, meta, parity_clips)
        atomic_write_json(tmp / PARITY_FILE, parity)
        manifest["files"][PARITY_FILE] = sha256_file(tmp / PARITY_FILE)
        atomic_write_json(tmp / MANIFEST_NAME, seal_manifest(manifest))
        openset = write_head_openset(tmp, head, meta) if openset else None
        if openset is not None:  # the bundle says `unknown` as one the PyTorch export wrote does
            manifest["unknown"] = openset[0]
            manifest["files"].update({f: sha256_file(tmp / f) for f in (HEAD_SUBSPACE_FILE, OPENSET_FILE)})
            atomic_write_json(tmp / MANIFEST_NAME, seal_manifest(manifest))
        load_bundle(tmp)  # as stpr-run will load it, before it takes the name
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = {name: out / name for name in manifest["files"]} | {MANIFEST_NAME: out / MANIFEST_NAME}
    return {"bundle": out, "files": files, "parity": parity, "openset": openset and openset[1],
            "timings_s": {"total": time.perf_counter() - t0}}


def _manifest(head: Any, meta: dict[str, Any], ckpt: Path, run_dir: Path) -> dict[str, Any]:
    t, pp = meta["tower"], meta["preprocess"]
    sizes = [len(c) for c in meta["task_classes"]]
    return {
        "schema_version": SCHEMA_VERSION, "head_only": True,
        "classes": list(meta["classes"]),
        "class_to_expert": [k for k, n in enumerate(sizes) for _ in range(n)],  # each class's task (no experts)
        "preprocess": {"size": pp["size"], "mean": pp["mean"], "std": pp["std"], "frames": pp["frames"],
                       "sampling": "tsn: T equal segments, segment centre", "resize": "shorter side to size, bicubic",
                       "crop": "centre", "channels": "RGB", "scale": "pixels / 255, then (x - mean) / std"},
        "dims": {"D": t["dim"], "T": pp["frames"], "K": len(sizes), "C": len(meta["classes"])},
        "head": {
            "mode": "alone", "tower": "frozen", "tower_file": HEAD_ONLY_TOWER_FILE,
            "tower_io": {"input": t["input"], "output": t["output"], "pool": t["pool"]},
            "frame_order": "oldest-first", "frame_norm": "l2",
            "projection": {"generator": PROJECTION_GENERATOR, "seed": head.seed, "in_dim": head.in_dim,
                           "out_dim": head.dim, "sha256": projection_sha256(head.projection)},
            "weights": HEAD_WEIGHTS_FILE, "lambda": float(head.lam), "balance": head.balance,
            "crops": meta["config"]["head"].get("crops", "none"), "views": int(meta["config"]["head"].get("views", 1)),
            "tau": float(meta["config"]["head"]["tau"]), "fuse_weight": float(meta["config"]["head"]["fuse_weight"]),
        },
        "tools": tool_versions(HEAD_ONLY_TOOLS),
        "source": {"run_dir": str(run_dir.resolve()), "task": meta["task"], "checkpoint": ckpt.name,
                   "checkpoint_sha256": sha256_file(ckpt), "tower_file": t["file"], "tower_sha256": t["sha256"],
                   "trained_without": "torch"},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _test_clips(meta: dict[str, Any], count: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Up to `count` test clips of the exported classes, spread over them (None: the data is gone)."""
    from stpr.train.config import Config
    from stpr.train.config_load import apply_overrides, flatten_keys
    from stpr.train.data.registry import build_splits

    cfg = apply_overrides(Config(), flatten_keys(meta["config"]))
    pp = meta["preprocess"]
    spec = TowerSpec(file=Path(meta["tower"]["file"]), size=pp["size"], mean=tuple(pp["mean"]), std=tuple(pp["std"]))
    try:
        test = build_splits(cfg.data, spec, cfg.seed).test
    except StprError as e:
        log.warning("parity: the run's test clips cannot be read here (%s); checked on blank frames only", e)
        return None
    names = {n: i for i, n in enumerate(meta["classes"])}
    idx = [i for i, y in enumerate(test.targets) if test.classes[y] in names]
    idx = idx[:: max(1, len(idx) // count)][:count]
    return np.stack([test.clip(i) for i in idx]), np.asarray([names[test.classes[test.targets[i]]] for i in idx])


def head_parity(bundle: Path, head: Any, meta: dict[str, Any], count: int) -> dict[str, Any]:
    """The bundle on the runtime (`Recognizer`, as `stpr-run` runs it) against the run's head
    (`OnnxTower` + `NumpyHead`, as training scored): probabilities and top-1 on the run's
    test clips. Gated: a bundle that disagrees is not written."""
    clips = _test_clips(meta, count)
    pp = meta["preprocess"]
    if clips is None:
        frames = np.zeros((1, pp["frames"], 3, pp["size"], pp["size"]), np.float32)
        clips = (frames, np.zeros(1, np.int64))
    x, labels = clips
    B, T = x.shape[:2]
    flat = x.reshape(B * T, *x.shape[2:])
    b = load_bundle(bundle)
    with Recognizer(b) as rec:
        got = rec.classify(rec.frame_features(flat).reshape(B, T, -1))["probs"]
    spec = TowerSpec(file=Path(meta["tower"]["file"]), size=pp["size"], mean=tuple(pp["mean"]), std=tuple(pp["std"]))
    with OnnxTower(spec) as tower:
        scores = head.scores(tower.features(flat).reshape(B, T, -1))
    c2e = np.asarray(b.class_to_expert)
    ref = mode_probabilities("alone", scores=scores, class_to_expert=c2e, num_tasks=int(c2e.max()) + 1,
                             tau=float(meta["config"]["head"]["tau"]))
    report = {"clips": int(B), "source": "the run's test clips" if len(labels) > 1 else "a blank clip",
              "fp32_head": {"prob_max_abs_diff": float(np.abs(got - ref).max()),
                            "top1_agreement": float(np.mean(got.argmax(1) == ref.argmax(1))),
                            "top1_accuracy": float(np.mean(got.argmax(1) == labels))},
              "thresholds": {"fp32_head_prob_max_abs_diff": PARITY_MAX_PROB_DIFF, "fp32_head_min_top1_agreement": 1.0}}
    r = report["fp32_head"]
    report["passed"] = r["prob_max_abs_diff"] <= PARITY_MAX_PROB_DIFF and r["top1_agreement"] == 1.0
    log.info("parity: %s", r)
    if not report["passed"]:
        raise StprError(f"export failed its parity check: the bundle's head gives probabilities "
                        f"{r['prob_max_abs_diff']:.2g} away from the run's (top-1 agreement "
                        f"{r['top1_agreement']:.0%}); nothing was written")
    return report
