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
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from stpr.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from stpr.runtime.errors import BundleError
from stpr.runtime.manifest import sha256_file
from stpr.runtime.sampling import CROPS, crop_view
from stpr.runtime.tower import OnnxTower, TowerSpec, tower_spec

from . import metrics as M
from .analytic_fit_numpy import NumpyHead, clip_key
from .config import Config, dump_config
from .data.protocol import run_tasks
from .data.registry import Splits, build_splits, check_dataset
from .errors import StprError, missing_extra
from .run_dir import CHECKPOINTS, NUMPY_CHECKPOINT, drop_stale_temp_files, run_config
from .seed import HEAD_SEED_SALT, derive_seed

log = logging.getLogger(__name__)

LOADER_THREADS = 4  # clips read and prepared ahead of the tower (cv2 and NumPy release the GIL)


def needs_torch(cfg: Config) -> str | None:
    """Why `cfg` cannot train without torch (None: it can): only the head alone on a frozen tower can."""
    if cfg.head.mode != "alone":
        what = "StPR (--head none)" if cfg.head.mode == "none" else f"--head {cfg.head.mode} (it scores through StPR)"
        return f"{what} trains with gradient steps"
    if cfg.head.tower != "frozen":
        return "head.tower adapted trains the adapters on the base task"
    return None


def tower_of(cfg: Config) -> TowerSpec:
    """The ONNX tower a torch-free run reads: `model.tower`, else the packaged one of `model.name`."""
    if cfg.model.tower:
        try:
            return tower_spec(cfg.model.tower, cfg.model.tower_size, cfg.model.tower_mean, cfg.model.tower_std)
        except BundleError as e:
            raise StprError(str(e)) from None
    from .pretrained import packaged_onnx_tower

    return packaged_onnx_tower(cfg.model.name, cfg.model.pretrained)


def onnx_device(spec: str) -> str:
    """`--device` as onnxruntime reads it: cpu, or cuda (CUDA or TensorRT providers)."""
    if spec == "auto":
        import onnxruntime as ort

        return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    if spec == "cpu" or spec.startswith("cuda"):
        return "cpu" if spec == "cpu" else "cuda"
    raise StprError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N")


@dataclass
class History:
    """Per finished task, per seen task: correct top-1, clips, head task identification."""
    correct: list[list[int]] = field(default_factory=list)
    total: list[list[int]] = field(default_factory=list)
    head_task_id_correct: list[list[int]] = field(default_factory=list)


@dataclass
class Setup:
    cfg: Config
    spec: TowerSpec
    splits: Splits
    tasks: list[list[int]]  # dataset class ids per task

    def global_ids(self, k: int) -> list[int]:
        start = sum(len(t) for t in self.tasks[:k])
        return list(range(start, start + len(self.tasks[k])))


def build(cfg: Config) -> Setup:
    """Tower, data and protocol from a config (no clip read yet)."""
    if cfg.model.tower and cfg.head.mode != "alone":
        raise StprError(f"--tower serves the analytic head alone; --head {cfg.head.mode} needs StPR's open_clip "
                        "tower (--model); use --head alone")
    reason = needs_torch(cfg)
    if reason:  # only the head alone on a frozen tower trains without torch
        extra = missing_extra(ModuleNotFoundError("torch", name="torch"), "stpr-train", "train")
        raise StprError(f"{reason}, so {str(extra)[0].lower()}{str(extra)[1:]}")
    check_dataset(cfg.data)
    spec = tower_of(cfg)
    try:  # shapes and preprocessing checked before any folder is written
        with OnnxTower(spec):
            pass
    except BundleError as e:
        raise StprError(str(e)) from None
    splits = build_splits(cfg.data, spec, cfg.seed)
    return Setup(cfg, spec, splits, run_tasks(cfg.data, splits, cfg.seed))


def task_clips(dataset: Any, class_ids: Sequence[int], global_ids: Sequence[int]) -> tuple[list[int], np.ndarray]:
    """The dataset indices of a task's clips and their global class ids (`TaskSubset`'s order)."""
    label_map = dict(zip(class_ids, global_ids))
    idx = [i for i, t in enumerate(dataset.targets) if t in label_map]
    return idx, np.asarray([label_map[dataset.targets[i]] for i in idx], np.int64)


@dataclass
class Batch:
    """One batch of clips through the tower: `feats[b]` the `(R, T, D)` frame features of every
    row under crop box b (the first: the whole frame), a row per temporal view of each clip;
    `clip[r]` the batch position of row r's clip, `own[r]` whether it is that clip's own row
    (its first view: the segment centres when there is one); `keys` each clip's `clip_key`
    (of its first view)."""
    pos: slice
    feats: list[np.ndarray]
    clip: np.ndarray
    own: np.ndarray
    keys: np.ndarray


def windows(tower: OnnxTower, load: Callable[[int], np.ndarray], indices: Sequence[int], batch: int,
            pool: ThreadPoolExecutor, boxes: Sequence[tuple[float, float, float]] = CROPS["none"]) -> Iterator[Batch]:
    """The `Batch`es of `indices`, in order; `load(i)` gives clip i's views `(V, T, 3, S, S)`,
    its own first. The next two batches' clips are read by `pool` while the tower runs this
    one, so reading overlaps it and at most three batches of frames are ever held. Crops
    (`head.crops`) and views (`head.views`) are the device's (`runtime/sampling.py`), so
    `stpr-learn --crops/--views` reads what training read."""
    starts = list(range(0, len(indices), batch))
    pending: deque = deque()

    def submit(start: int) -> None:
        pending.append((start, [pool.submit(load, i) for i in indices[start:start + batch]]))

    for start in starts[:3]:
        submit(start)
    for n, _ in enumerate(starts):
        start, futures = pending.popleft()
        per_clip = [f.result() for f in futures]
        if n + 3 < len(starts):
            submit(starts[n + 3])
        clips = np.concatenate(per_clip)  # (R, T, 3, S, S): every view of every clip
        R, T = clips.shape[:2]
        owner = np.repeat(np.arange(len(per_clip)), [len(v) for v in per_clip])
        own = np.concatenate([np.arange(len(v)) == 0 for v in per_clip])
        feats = []
        for box in boxes:
            x = clips if box == CROPS["none"][0] else np.stack([crop_view(c, box) for c in clips])
            feats.append(tower.features(x.reshape(R * T, *x.shape[2:])).reshape(R, T, -1))
        keys = np.asarray([clip_key(v[0]) for v in per_clip], np.int64)
        yield Batch(slice(start, start + len(per_clip)), feats, owner, own, keys)


def one_view(load: Callable[[int], np.ndarray]) -> Callable[[int], np.ndarray]:
    """A clip reader as `windows` reads it: the clip as its only view."""
    return lambda i: load(i)[None]


class FeatureCache:
    """Each test task's `(N, T, D)` window features, read once through the tower and kept in
    a file on disk (a memmap) for every later evaluation: memory flat in the clips."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=".tmp-features-", dir=run_dir))
        self.arrays: dict[int, np.ndarray] = {}

    def get(self, j: int, make: Callable[[Path], np.ndarray]) -> np.ndarray:
        if j not in self.arrays:
            self.arrays[j] = make(self.folder / f"test_{j:03d}.npy")
        return self.arrays[j]

    def close(self) -> None:
        self.arrays.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


class Trainer:
    """One run's tower, head and thread pool: `train_task` then `evaluate`, task by task."""

    def __init__(self, s: Setup, tower: OnnxTower, head: NumpyHead, run_dir: Path) -> None:
        self.s, self.tower, self.head, self.run_dir = s, tower, head, run_dir
        self.pool = ThreadPoolExecutor(LOADER_THREADS, thread_name_prefix="stpr-clips")
        self.cache = FeatureCache(run_dir)
        self.clips_read = 0

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.cache.close()

    def train_task(self, k: int) -> None:
        """Task k's training clips (test-time sampling) into the sums, then the solve."""
        s = self.s
        idx, labels = task_clips(s.splits.train_eval, s.tasks[k], s.global_ids(k))
        boxes, views, ds = CROPS[s.cfg.head.crops], s.cfg.head.views, s.splits.train_eval
        # each crop and view is a row of its own (it counts in the balance rule, as in the PyTorch learner)
        per_clip = np.asarray([ds.view_count(i, views) for i in idx]) if views > 1 else np.ones(len(idx), np.int64)
        spill = self.cache.folder / f"base_rows_{k:03d}.npy"
        self.head.begin_task(np.tile(np.repeat(labels, per_clip), len(boxes)), s.global_ids(k)[-1] + 1, spill=spill)
        load = (lambda i: np.stack(ds.views(i, views))) if views > 1 else one_view(ds.clip)
        for b in windows(self.tower, load, idx, s.cfg.optim.eval_batch_size, self.pool, boxes):
            for n, window in enumerate(b.feats):  # a crop's or view's row carries its clip's key, and is not primary
                self.head.add_rows(self.head.features(window), labels[b.pos][b.clip], b.keys[b.clip],
                                   b.own & (n == 0))
        self.clips_read += len(idx)
        self.head.end_task()

    def _test_windows(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.s
        idx, labels = task_clips(s.splits.test, s.tasks[j], s.global_ids(j))

        def make(path: Path) -> np.ndarray:
            arr = None
            for b in windows(self.tower, one_view(s.splits.test.clip), idx, s.cfg.optim.eval_batch_size, self.pool):
                if arr is None:
                    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                                    shape=(len(idx), *b.feats[0].shape[1:]))
                arr[b.pos] = b.feats[0]
            self.clips_read += len(idx)
            return arr

        return self.cache.get(j, make), labels

    def evaluate(self, k: int) -> tuple[list[int], list[int], list[int]]:
        """Correct top-1 over every seen class, clips and head task identification, per task 0..k."""
        from stpr.runtime.analytic import mode_probabilities

        s, head = self.s, self.head
        c2e = np.repeat(np.arange(len(s.tasks)), [len(t) for t in s.tasks])[:head.num_classes]
        correct, total, tid = [], [], []
        for j in range(k + 1):
            feats, labels = self._test_windows(j)
            c = t = n = 0
            for start in range(0, len(labels), 256):
                scores = head.scores(np.asarray(feats[start:start + 256]))
                probs = mode_probabilities("alone", scores=scores, class_to_expert=c2e, num_tasks=k + 1,
                                           tau=s.cfg.head.tau)
                y = labels[start:start + 256]
                c += int((probs.argmax(1) == y).sum())
                n += int((c2e[scores.argmax(1)] == c2e[y]).sum())
                t += len(y)
            correct.append(c)
            total.append(t)
            tid.append(n)
        return correct, total, tid


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
