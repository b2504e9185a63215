"""The torch-free head run's work: clips through the ONNX tower into the sums, task by task.

Threads read and prepare the next clips while the tower runs (`windows`); each test task's
features are read once and kept on disk (`FeatureCache`), so memory stays flat in the
number of clips. Crops and temporal views of each training clip are the device's
(`runtime/model/sampling.py`).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from stpr.runtime.model.sampling import CROPS, crop_view
from stpr.runtime.model.tower import OnnxTower

from .analytic_fit_numpy import NumpyHead, clip_key
from .head_setup import Setup, task_clips

log = logging.getLogger(__name__)

LOADER_THREADS = 4  # clips read and prepared ahead of the tower (cv2 and NumPy release the GIL)


@dataclass
class History:
    """Per finished task, per seen task: correct top-1, clips, head task identification."""
    correct: list[list[int]] = field(default_factory=list)
    total: list[list[int]] = field(default_factory=list)
    head_task_id_correct: list[list[int]] = field(default_factory=list)


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
    (`head.crops`) and views (`head.views`) are the device's (`runtime/model/sampling.py`), so
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
        from stpr.runtime.model.analytic import mode_probabilities

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


