"""Clips from real videos: the shared base of the dataset readers.

A sample is a video file (decoded with OpenCV) or a folder of pre-extracted frames (jpg/png,
in name order). ``VideoClips`` scans every sample's frame count once at construction, drops
unreadable or empty ones (a few broken files are normal in public datasets) and refuses
to train when too many are broken, since that means a bad download or extraction rather
than a handful of bad files. Frames are preprocessed exactly as on the device.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from stpr.runtime.io.clip import fill_from_earlier, grab_frames
from stpr.runtime.io.frame_folder import IMAGE_EXTS, frame_files  # one rule for training and the device
from stpr.runtime.model.preprocess import preprocess
from stpr.runtime.model.sampling import view_indices

from ..errors import StprError
from .sampling import tsn_indices

__all__ = ["IMAGE_EXTS", "VIDEO_EXTS", "VideoClips", "frame_files", "prefer_frames", "read_frames", "scan"]

log = logging.getLogger(__name__)

VIDEO_EXTS = frozenset({".avi", ".mp4", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".m4v", ".flv", ".3gp"})
# Memory only: train and train_eval are built from the same videos, so the second scan is
# free; keyed by mtime and size so a re-extracted sample is scanned again.
_SCAN_CACHE: dict[tuple[str, int, int], tuple[int, str | None]] = {}


def prefer_frames(video: Path) -> Path:
    """``video`` without its extension when that is a folder of extracted frames, else ``video``
    (which may not exist: the scan then reports it missing)."""
    folder = video.with_suffix("")
    return folder if folder.is_dir() else video


def _scan_uncached(path: Path) -> tuple[int, str | None]:
    if path.is_dir():
        n = len(frame_files(path))
        return n, None if n else "empty"
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0, "unreadable"
        # Decode one frame: a valid container around a broken stream must fail here, not
        # in the middle of training.
        if not cap.read()[0]:
            return 0, "empty"
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:  # some containers carry no frame count: count by reading
            n = 1
            while cap.grab():
                n += 1
        return n, None
    finally:
        cap.release()


def scan(path: Path) -> tuple[int, str | None]:
    """``(frame count, None)`` for a readable sample, else ``(0, reason)`` with reason
    ``missing``, ``unreadable`` or ``empty``."""
    try:
        st = path.stat()
    except OSError:
        return 0, "missing"
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _SCAN_CACHE:
        _SCAN_CACHE[key] = _scan_uncached(path)
    return _SCAN_CACHE[key]


def read_frames(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    """BGR uint8 frames at ``indices`` (non-decreasing, repeats allowed) of a sample.

    Videos are read sequentially up to the last index, since OpenCV seeking is not frame
    accurate for many codecs; frames not needed are only grabbed, not converted.
    """
    if path.is_dir():
        files = frame_files(path)
        if not files or max(indices) >= len(files):
            raise StprError(f"frame folder {path} now holds {len(files)} frames, fewer than when the dataset was "
                            f"built; re-extract it (scripts/data/extract_frames.py) or remove it")
        cache: dict[int, np.ndarray] = {}
        for i in dict.fromkeys(indices):
            img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
            if img is None:
                raise StprError(f"could not read frame {files[i]}; re-extract {path} or remove it")
            cache[i] = img
        return [cache[i] for i in indices]
    cap = cv2.VideoCapture(str(path))
    try:
        cache, _ = grab_frames(cap, indices)
    finally:
        cap.release()
    if not cache:
        raise StprError(f"could not decode {path}, which read fine when the dataset was built; has it changed? "
                        f"Re-download or re-extract it, or remove it")
    return fill_from_earlier(indices, cache)


class VideoClips:
    """``(T, 3, size, size)`` float clips with TSN sampling from ``(path, label)`` samples.

    ``classes[label]`` is the raw class name. Train mode draws a random frame in each of
    the T segments, test mode takes segment centres (deterministic). Unreadable or empty
    samples are dropped and listed in ``skipped`` as ``(path, reason)``; with
    ``count_missing=False`` absent files are listed too but left out of the
    ``max_unreadable`` share (Kinetics: clips vanish from YouTube, that is expected).
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        classes: Sequence[str],
        num_frames: int,
        train: bool,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        max_unreadable: float = 0.05,
        seed: int = 0,
        count_missing: bool = True,
    ) -> None:
        if num_frames < 1 or size < 1:
            raise ValueError(f"num_frames and size must be positive, got {num_frames}, {size}")
        self.classes: list[str] = list(classes)
        self.num_frames, self.train, self.size, self.seed = int(num_frames), bool(train), int(size), int(seed)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3)
        self.std = np.asarray(std, dtype=np.float32).reshape(3)
        samples = [(Path(p), int(y)) for p, y in samples]
        bad = [y for _, y in samples if not 0 <= y < len(self.classes)]
        if bad:
            raise ValueError(f"labels {sorted(set(bad))[:5]} outside [0, {len(self.classes)})")
        workers = min(32, 4 * (os.cpu_count() or 1))  # cv2 releases the GIL while decoding
        with ThreadPoolExecutor(workers) as pool:
            counts = list(pool.map(scan, (p for p, _ in samples)))
        self.samples: list[tuple[Path, int]] = []
        self.frame_counts: list[int] = []
        self.skipped: list[tuple[Path, str]] = []
        for (path, label), (n, reason) in zip(samples, counts):
            if reason is None:
                self.samples.append((path, label))
                self.frame_counts.append(n)
            else:
                self.skipped.append((path, reason))
        self.targets: list[int] = [y for _, y in self.samples]
        self._check_skipped(len(samples), float(max_unreadable), count_missing)
        self._draws = 0  # a plain int: picklable for spawned DataLoader workers

    def _check_skipped(self, total: int, max_unreadable: float, count_missing: bool) -> None:
        counted = [(p, r) for p, r in self.skipped if count_missing or r != "missing"]
        missing = len(self.skipped) - len(counted)
        if missing:
            log.warning("%d of %d listed videos are missing on disk and were skipped (e.g. %s)",
                        missing, total, next(p for p, r in self.skipped if r == "missing"))
        if counted:
            log.warning("skipped %d unreadable or empty samples: %s", len(counted),
                        "; ".join(f"{p} ({r})" for p, r in counted[:10]) + (" ..." if len(counted) > 10 else ""))
        denom = total - missing
        if denom and len(counted) / denom > max_unreadable:
            first = ", ".join(f"{p} ({r})" for p, r in counted[:3])
            raise StprError(
                f"{len(counted)} of {denom} videos ({100 * len(counted) / denom:.1f}%) are unreadable, empty or "
                f"missing, more than data.max_unreadable={max_unreadable:g}; first: {first}. Check or re-download "
                f"the files, re-extract frame folders (scripts/data/extract_frames.py), or raise data.max_unreadable "
                f"to train without them")
        if not self.samples:
            why = f"e.g. {self.skipped[0][0]} ({self.skipped[0][1]})" if self.skipped else "the split lists none"
            raise StprError(f"no readable videos among {total} samples ({why}); check the dataset root and layout")

    def __len__(self) -> int:
        return len(self.samples)

    def indices(self, i: int) -> np.ndarray:
        """The frame indices sample ``i`` reads this time (random per call in train mode)."""
        rng = None
        if self.train:
            # Worker-safe: DataLoader workers differ in torch.initial_seed() (new every epoch);
            # the draw counter varies the offsets between epochs also with workers=0, where
            # initial_seed() stays fixed.
            import torch  # random offsets are the PyTorch loader's (train mode); test mode is torch-free

            rng = np.random.default_rng([self.seed, i, torch.initial_seed() % 2**32, self._draws])
            self._draws += 1
        return tsn_indices(self.frame_counts[i], self.num_frames, self.train, rng)

    def clip(self, i: int) -> np.ndarray:
        """Sample ``i``'s frames ``(T, 3, size, size)`` float32, normalised (torch-free)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        frames = read_frames(self.samples[i][0], self.indices(i).tolist())
        return np.stack([preprocess(f, self.size, self.mean, self.std) for f in frames])

    def view_count(self, i: int, views: int) -> int:
        """How many distinct temporal views `views` gives sample ``i`` (`sampling.view_indices`)."""
        return len(view_indices(self.frame_counts[i], self.num_frames, views))

    def views(self, i: int, views: int) -> list[np.ndarray]:
        """Sample ``i``'s distinct temporal views (`head.views`), each ``(T, 3, size, size)``
        as `clip` gives it, the first the segment centres (`clip(i)` in test mode): the views
        `stpr-learn --views` reads on the device, so both stay one solve. Each frame is read
        and preprocessed once."""
        picks = view_indices(self.frame_counts[i], self.num_frames, views)
        wanted = sorted({int(f) for v in picks for f in v})
        frames = dict(zip(wanted, read_frames(self.samples[i][0], wanted)))
        done = {f: preprocess(img, self.size, self.mean, self.std) for f, img in frames.items()}
        return [np.stack([done[int(f)] for f in v]) for v in picks]

    def __getitem__(self, i: int) -> tuple[Any, int]:  # (torch.Tensor, label)
        import torch  # the training loader's tensors; the torch-free head reads `clip`

        return torch.from_numpy(self.clip(i)), self.samples[i % len(self)][1]
