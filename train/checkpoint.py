"""One checkpoint per finished task: learner state, metrics so far, and identity.

Never the frozen CLIP weights: only adapters, experts, class-indexed tensors, FSSD
weights, and a fingerprint of the tower they were trained on. Written atomically,
read with `weights_only=True`.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from stpr.runtime.atomic import atomic_write_bytes

from .errors import StprError

FORMAT = "stpr-checkpoint"
VERSION = 1
_NAME = re.compile(r"^task_(\d{3})\.pt$")


def checkpoint_path(run_dir: Path, task: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"task_{task:03d}.pt"


def save_checkpoint(run_dir: Path, task: int, payload: dict[str, Any]) -> Path:
    path = checkpoint_path(run_dir, task)
    # Serialised in memory, then written by Python: a full disk is then an OSError with its
    # errno and file (torch.save to a path says only "[enforce fail at inline_container.cc]").
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def finished_tasks(run_dir: Path) -> list[int]:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint; a corrupt or foreign file is a clear error, not a traceback."""
    path = Path(path)
    if not path.is_file():
        raise StprError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle refused by weights_only, ...
        raise StprError(
            f"checkpoint {str(path)!r} is unreadable ({type(e).__name__}: {e}); "
            "delete it to resume from the task before"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise StprError(f"{str(path)!r} is not an stpr checkpoint")
    if ckpt.get("version") != VERSION:
        raise StprError(f"checkpoint {str(path)!r} has version {ckpt.get('version')}, this stpr reads {VERSION}")
    return ckpt


def check_same_model(ckpt: dict[str, Any], model_name: str, fingerprint: str, path: Path) -> None:
    """Refuse a checkpoint trained on another image tower (other name or weights)."""
    if ckpt["model_name"] != model_name:
        raise StprError(
            f"checkpoint {str(path)!r} was trained on model {ckpt['model_name']!r}, not {model_name!r}; "
            f"use --model {ckpt['model_name']} or another run directory"
        )
    if ckpt["backbone_fingerprint"] != fingerprint:
        raise StprError(
            f"checkpoint {str(path)!r} was trained on other {model_name} weights "
            f"(pretrained={ckpt.get('pretrained')!r}, seed={ckpt.get('seed')}); "
            "load it with the same --pretrained and --seed it was trained with"
        )
