"""The analytic head inside the PyTorch learner: which head a config builds, what its
tower sees, and the rows `end_task` folds into its sums.

The head takes no gradient step (docs/method.md, "The analytic head"): the learner only
hands it the frame features of each training clip (and of its crops, `head.crops`) once
per task; `AnalyticHead` (train/analytic_fit.py) solves it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from stpr.runtime.model.sampling import CROPS, crop_view

from .analytic_fit import AnalyticHead
from .analytic_fit_numpy import clip_key
from .config import Config
from .seed import HEAD_SEED_SALT, derive_seed

if TYPE_CHECKING:
    from .learner import StPRLearner


def head_seed(cfg: Config) -> int:
    """The seed of the head's random projection: from the run's seed, like every random choice."""
    return derive_seed(cfg.seed, HEAD_SEED_SALT)


def make_head(cfg: Config, num_frames: int, dim: int) -> AnalyticHead | None:
    """The head `cfg.head` asks for (None: StPR alone) on windows of `num_frames` features of width `dim`."""
    h = cfg.head
    if h.mode == "none":
        return None
    return AnalyticHead(in_dim=num_frames * dim, dim=h.dim, seed=head_seed(cfg), balance=h.balance, ridge=h.ridge)


def head_modes(cfg: Config, head: AnalyticHead | None) -> tuple[str, ...]:
    """What `evaluate` can score: StPR and every head mode, or the head alone when StPR is
    not trained."""
    if head is None:
        return ("stpr",)
    if cfg.head.mode == "alone":
        return ("alone",)
    return ("stpr", "alone", "route-hard", "route-soft", "fuse")


def head_window(learner: "StPRLearner", frames: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """The head's tower's frame features `(B, T, D)`: frozen CLIP, or the adapters as the
    base task left them (the current ones while they still are)."""
    if learner.cfg.head.mode == "alone":
        # No gradient step after the base task (tower adapted) or at all (tower frozen: the
        # adapters keep their zero up projection, so the adapted tower is CLIP's, exactly):
        # the features already computed are the head's, no second tower pass.
        return feats.float()
    if learner.cfg.head.tower == "frozen":
        return learner.model.frame_features(frames, adapters=False).float()
    if learner.head_adapters is None:
        return feats.float()  # the base task: its adapters are the ones the head keeps
    return learner.model.frame_features(frames, adapters=learner.head_adapters).float()


class HeadRows:
    """This rank's head rows of one task, gathered batch by batch in `end_task`: `h` per clip
    (then its crops), its global label, its clip's key and whether it is the clip's own row.
    Dropped once folded into the head's sums."""

    def __init__(self, learner: "StPRLearner") -> None:
        self.learner = learner
        self.rows: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.keys: list[torch.Tensor] = []
        self.primary: list[torch.Tensor] = []

    @staticmethod
    def clip_keys(frames: torch.Tensor) -> torch.Tensor:
        """The lambda rule's holdout is drawn by the frames' hash (clip_key), as in the NumPy fit."""
        return torch.tensor([clip_key(f) for f in frames.cpu().numpy()], dtype=torch.int64)

    def add(self, frames: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor) -> None:
        """One batch: its clips' rows, then (`head.crops`) their crops' rows."""
        learner = self.learner
        with learner.autocast():  # the tower in bf16 on GPU; the projection stays float32
            window = head_window(learner, frames, feats)
        self._append(learner.head.features(window), labels, keys, primary=True)
        self._crop_rows(frames, labels, keys)

    def add_view(self, frames: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor, own: torch.Tensor) -> None:
        """One batch of temporal views (`head.views`, `data.tasks.HeadViews`): their rows, each
        carrying its clip's key and primary where it is its clip's first view, then their crops'."""
        learner = self.learner
        with learner.autocast():
            window = head_window(learner, frames, learner.model.frame_features(frames).float())
        self._append(learner.head.features(window), labels, keys, primary=own.cpu().bool())
        self._crop_rows(frames, labels, keys)

    def _crop_rows(self, frames: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor) -> None:
        """`head.crops`: the head rows of each crop of the clips' frames, with the device's
        crop function (`runtime/model/sampling.py`), so `stpr-learn --crops` reads what training read.
        A crop row carries its clip's key and is not primary: the lambda rule leaves it out."""
        learner = self.learner
        for box in CROPS[learner.cfg.head.crops][1:]:
            x = frames.float().cpu().numpy()
            cropped = torch.from_numpy(np.stack([crop_view(clip, box) for clip in x])).to(frames.device)
            with learner.autocast():
                window = head_window(learner, cropped, learner.model.frame_features(cropped).float())
            self._append(learner.head.features(window), labels, keys, primary=False)

    def _append(self, rows: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor, *,
                primary: bool | torch.Tensor) -> None:
        self.rows.append(rows.cpu())
        self.labels.append(labels.cpu())
        self.keys.append(keys)
        self.primary.append(primary if isinstance(primary, torch.Tensor) else
                            torch.full((len(labels),), primary, dtype=torch.bool))

    def fold_into(self, head: AnalyticHead, num_classes: int) -> None:
        """The task's rows into the head's sums (the head solves its weights there)."""
        head.add_task(torch.cat(self.rows), torch.cat(self.labels), num_classes, torch.cat(self.keys),
                      torch.cat(self.primary))
