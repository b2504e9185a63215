"""`stpr-train --head alone` without torch: the analytic head on an ONNX image tower.

The head takes no gradient step: a frozen tower, a fixed projection and sums solved in
closed form (docs/method.md, "The analytic head"). So it needs no PyTorch: frames go
through the tower's ONNX file on onnxruntime, rows into float64 sums (`analytic_fit_numpy`,
the twin of the PyTorch fit), with the same protocol, lambda and balance rules. The tower
is the packaged tiny one (shipped as ONNX, hash-checked) or any encoder given with
`--tower FILE.onnx` (docs/towers.md). The run folder is the PyTorch run's, with `.npz`
checkpoints:

    run_dir/  config.yaml, checkpoints/task_NNN.npz, metrics.json, train.log,
              plots/*.png (where matplotlib is installed)

Clips stream through the sums (memory flat in their number); threads read and prepare
the next clips while the tower runs.
"""
from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from stpr.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from stpr.runtime.bundle.manifest import sha256_file
from stpr.runtime.errors import BundleError
from stpr.runtime.model.tower import OnnxTower, TowerSpec

from . import metrics as M
from .analytic_fit_numpy import NumpyHead
from .config import Config, dump_config
from .errors import StprError
from .head_setup import Setup, build, onnx_device
from .head_trainer import History, Trainer
from .run_dir import CHECKPOINTS, NUMPY_CHECKPOINT, drop_stale_temp_files, run_config
from .seed import HEAD_SEED_SALT, derive_seed

log = logging.getLogger(__name__)


def metrics_from_history(s: Setup, h: History, tower: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: the head's accuracy matrix, Acc and BWF (the keys of a PyTorch run's head
    metrics; no StPR, routing or frame-mean entries: nothing here computes them)."""
    K, R = len(s.tasks), len(h.correct)
    sizes = [len(t) for t in s.tasks]
    total = M.pad_rows(h.total, K)
    out = M.summary(M.pad_rows(h.correct, K), total, sizes)
    out["modes"] = {"alone": dict(out)}
    out["head_task_id_accuracy"] = M.pooled_accuracy(M.pad_rows(h.head_task_id_correct, K)[-1, :R], total[-1, :R])
    out["head"] = "alone"
    out["backend"] = "onnxruntime (torch-free)"
    out["tower"] = tower
    out.update(M.protocol_fields(s.splits.classes, s.tasks, h.correct, h.total))
    return out


def write_plots(run_dir: Path, metrics: dict[str, Any], said: list[bool]) -> bool:
    """The accuracy plots, where matplotlib is installed (it is not in the base install);
    False (and one log line per run: `said`) where it is not."""
    try:
        from . import plots
    except ModuleNotFoundError:
        if not said:
            log.warning("plots skipped: matplotlib is not installed (pip install matplotlib, or the [train] extra)")
            said.append(True)
        return False
    A = np.array([[np.nan if v is None else v for v in row] for row in metrics["accuracy_matrix"]], dtype=float)
    plots.plot_accuracy_curve({"analytic head (alone)": metrics["acc_curve"]},
                              run_dir / "plots" / "accuracy_over_tasks.png")
    plots.plot_task_accuracy(A, run_dir / "plots" / "task_accuracy_over_time.png")
    plots.plot_accuracy_matrix(A, run_dir / "plots" / "accuracy_matrix.png")
    return True


def checkpoint_path(run_dir: Path, task: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"task_{task:03d}{NUMPY_CHECKPOINT}"


def finished_tasks(run_dir: Path) -> list[int]:
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(int(p.stem[5:]) for p in folder.glob(f"task_[0-9][0-9][0-9]{NUMPY_CHECKPOINT}"))


def save_checkpoint(path: Path, head: NumpyHead, meta: dict[str, Any]) -> None:
    """The head's arrays and a JSON `meta` (task, classes, history, tower) in one `.npz`, atomically."""
    buf = io.BytesIO()
    np.savez(buf, meta=np.str_(json.dumps(meta)), **head.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """`(head arrays, meta)`; a damaged file is one clear error."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as e:
        raise StprError(f"checkpoint {str(path)!r} is unreadable ({e}); delete it to resume from the task "
                        "before") from None
    return arrays, meta


def tower_record(spec: TowerSpec, tower: OnnxTower) -> dict[str, Any]:
    """What the run read frames with: the checkpoints, metrics.json and the export carry it."""
    io_ = tower.io
    return {"file": str(spec.file.resolve()), "sha256": sha256_file(spec.file), "size": spec.size,
            "mean": list(spec.mean), "std": list(spec.std), "dim": io_.dim, "input": io_.input,
            "output": io_.output, "pool": io_.pool}


def run(cfg: Config | None, run_dir: str | Path, resume: bool = False, device: str | None = None) -> dict[str, Any]:
    """Train every task of the protocol with the head alone on an ONNX tower (continuing after
    the last checkpoint on resume). Everything is checked before the folder is written."""
    run_dir = Path(run_dir)
    cfg = run_config(cfg, run_dir, resume)
    if device is not None:
        cfg.device = device
    s = build(cfg)
    h, start, head_state = History(), 0, None
    done = finished_tasks(run_dir) if resume else []
    if done:
        arrays, meta = load_checkpoint(checkpoint_path(run_dir, done[-1]))
        if meta["tower"]["sha256"] != sha256_file(s.spec.file):
            raise StprError(f"--resume: {str(run_dir)!r} was trained on another tower file "
                            f"({meta['tower']['file']}); resume it with that file")
        head_state = (arrays, meta["lambda_report"])
        h = History(**meta["history"])
        start = done[-1] + 1
        log.info("resuming %s after task %d", run_dir, done[-1])
    if resume:
        drop_stale_temp_files(run_dir)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    metrics: dict[str, Any] = {}
    try:
        tower = OnnxTower(s.spec, onnx_device(cfg.device)).__enter__()
    except BundleError as e:
        raise StprError(str(e)) from None
    with tower:
        record = tower_record(s.spec, tower)
        T, D = cfg.data.num_frames, tower.dim
        if head_state is not None:
            head = NumpyHead.from_state(*head_state)
            if head.in_dim != T * D:
                raise StprError(f"--resume: the checkpoint's head reads {head.in_dim} numbers per clip, the tower "
                                f"gives {T} x {D}; resume with the tower it was trained on")
        else:
            head = NumpyHead(in_dim=T * D, dim=cfg.head.dim, seed=derive_seed(cfg.seed, HEAD_SEED_SALT),
                             balance=cfg.head.balance, ridge=cfg.head.ridge)
        if h.correct:
            metrics = metrics_from_history(s, h, record)
        trainer = Trainer(s, tower, head, run_dir)
        said: list[bool] = []  # the missing-matplotlib line, once
        try:
            for k in range(start, len(s.tasks)):
                t0 = time.perf_counter()
                trainer.train_task(k)
                correct, total, tid = trainer.evaluate(k)
                h.correct.append(correct)
                h.total.append(total)
                h.head_task_id_correct.append(tid)
                log.info("task %d done in %.1fs: accuracy per task %s", k, time.perf_counter() - t0,
                         [round(100 * c / max(t, 1), 2) for c, t in zip(correct, total)])
                meta = {"format": "stpr-head-checkpoint", "version": 1, "task": k, "config": cfg.to_dict(),
                        "classes": [s.splits.classes[c] for t in s.tasks[: k + 1] for c in t],
                        "task_classes": [[s.splits.classes[c] for c in t] for t in s.tasks[: k + 1]],
                        "preprocess": {"size": s.spec.size, "mean": list(s.spec.mean), "std": list(s.spec.std),
                                       "frames": T, "sampling": "tsn-centre"},
                        "tower": record, "lambda_report": head.lambda_report,
                        "history": {"correct": h.correct, "total": h.total,
                                    "head_task_id_correct": h.head_task_id_correct}}
                save_checkpoint(checkpoint_path(run_dir, k), head, meta)
                metrics = metrics_from_history(s, h, record)
                atomic_write_json(run_dir / "metrics.json", metrics)
                write_plots(run_dir, metrics, said)
        finally:
            trainer.close()
    return metrics
