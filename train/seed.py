"""One place for seeds and devices, so neither is ever silently ignored."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

from .errors import StprError

if TYPE_CHECKING:  # derive_seed is torch-free: the head trains without torch (train/head_run.py)
    import torch

HEAD_SEED_SALT = 0x4EAD  # the analytic head's projection seed: derive_seed(run seed, HEAD_SEED_SALT)


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from several integers (run seed, task index, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str) -> "torch.device":
    """`auto` picks CUDA when present; asking for CUDA without one is an error."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise StprError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StprError(f"--device {spec} was asked for but no CUDA GPU is visible; use --device cpu")
    return dev
