"""The run folder, whichever side trains into it (PyTorch or the torch-free head): a new
run's folder checked, a saved run's config read, stale temp files dropped. torch-free."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from .config import Config
from .config_load import apply_overrides, check_ranges, flatten_keys
from .errors import StprError

CHECKPOINTS = "checkpoints"
TORCH_CHECKPOINT = ".pt"  # a PyTorch run's per-task checkpoint (train/checkpoint.py)
NUMPY_CHECKPOINT = ".npz"  # the torch-free head's (train/head_run.py)


def saved_config(run_dir: Path) -> Config:
    """The config a run was started with (what --resume continues)."""
    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.is_file():
        raise StprError(f"--resume: {str(run_dir)!r} holds no run (no config.yaml); start it without --resume")
    return apply_overrides(Config(), flatten_keys(yaml.safe_load(cfg_path.read_text())))


def checkpoint_kinds(run_dir: Path) -> set[str]:
    """The kinds of per-task checkpoint a run folder holds (`.pt`, `.npz`)."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return set()
    return {p.suffix for p in folder.glob("task_*") if p.suffix in (TORCH_CHECKPOINT, NUMPY_CHECKPOINT)}


def pick_task(done: list[int], task: int | None, run_dir: Path) -> int:
    """The finished task to export (`task`, or the last): a refusal naming the finished ones."""
    if not done:
        raise StprError(f"{str(run_dir)!r} has no finished task yet (no checkpoints/task_NNN); train first")
    if task is None:
        return done[-1]
    if task not in done:
        raise StprError(f"task {task} is not finished in {str(run_dir)!r}; finished tasks: {done}")
    return task


def check_fresh_run_dir(run_dir: Path) -> None:
    """A new run goes into a new or empty folder, never beside someone's files."""
    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").exists() or checkpoint_kinds(run_dir):
        raise StprError(f"{str(run_dir)!r} already holds a run; pass --resume to continue it, or choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise StprError(f"--out {str(run_dir)!r} is a file; choose a new or empty folder")
    # train.log alone is what a run refused while building leaves: still a fresh folder.
    others = sorted(p.name for p in run_dir.iterdir() if p.name != "train.log") if run_dir.is_dir() else []
    if others:
        raise StprError(f"--out {str(run_dir)!r} is not empty ({', '.join(others[:3])}"
                        f"{', ...' if len(others) > 3 else ''}) and holds no run; choose a new or empty folder")


def run_config(cfg: Config | None, run_dir: Path, resume: bool) -> Config:
    """The config a run goes on with: the saved one on resume; else `cfg`, checked (also when
    built in Python, not only through load_config), into a fresh folder. Both training loops
    (PyTorch and torch-free) start here."""
    if resume:
        return saved_config(run_dir)
    if cfg is None:
        raise ValueError("a new run needs a config")
    check_ranges(cfg)
    check_fresh_run_dir(run_dir)
    return cfg


def drop_stale_temp_files(run_dir: Path) -> None:
    # Left by a process killed mid-write; never valid, and never read.
    for tmp in sorted(Path(run_dir).rglob(".tmp-*"), reverse=True):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
