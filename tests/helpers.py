"""Small configs and runs shared by the pipeline tests."""
from __future__ import annotations

from pathlib import Path

from stpr.train.config import Config, dump_config, load_config

# A whole protocol in a couple of seconds: 3 tasks of 4 classes, one epoch each.
FAST = {
    "data.protocol": "4+4x2",
    "data.clips_per_class_train": 8,
    "data.clips_per_class_test": 4,
    "optim.epochs_base": 1,
    "optim.epochs_incremental": 1,
    "optim.batch_size": 8,
    "device": "cpu",
}


def fast_config(**overrides: object) -> Config:
    return load_config("demo", {**FAST, **overrides})


def start_run_dir(path: Path, cfg: Config) -> None:
    """A run directory as `stpr-train` leaves it before its first task finishes."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(cfg))
