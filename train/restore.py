"""Rebuild a trained model from a run directory (for export and analysis).

Needs the run's config and one checkpoint, not its data: the frozen tower comes
from the config (`--pretrained` and seed), the rest from the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import check_same_model, checkpoint_path, finished_tasks, load_checkpoint
from .config import Config
from .errors import StprError
from .learner import StPRLearner
from .model.clip_tower import Preprocess
from .run import build_learner
from .run_dir import pick_task, saved_config


@dataclass
class Restored:
    cfg: Config
    learner: StPRLearner
    preprocess: Preprocess
    checkpoint: dict[str, Any]
    checkpoint_file: Path
    task: int


def restore(run_dir: str | Path, task: int | None = None, device: str = "cpu") -> Restored:
    """The model as it stood after `task` (default: the last finished task)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StprError(f"run directory {str(run_dir)!r} does not exist")
    if not (run_dir / "config.yaml").is_file():  # saved_config's own message speaks of stpr-train --resume
        raise StprError(f"{str(run_dir)!r} is not a run directory (no config.yaml); pass the --out folder of "
                        "stpr-train")
    cfg = saved_config(run_dir)
    cfg.device = device
    task = pick_task(finished_tasks(run_dir), task, run_dir)
    path = checkpoint_path(run_dir, task)
    ckpt = load_checkpoint(path)
    learner, pp, fingerprint = build_learner(cfg)
    check_same_model(ckpt, cfg.model.name, fingerprint, path)
    learner.load_state_dict(ckpt["learner"])
    learner.model.eval()
    return Restored(cfg, learner, pp, ckpt, path, task)
