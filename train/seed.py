"""One place for seeds and devices, so neither is ever silently ignored."""
from __future__ import annotations

import random

import numpy as np
import torch

from .errors import StprError


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from several integers (run seed, task index, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise StprError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StprError(f"--device {spec} was asked for but no CUDA GPU is visible; use --device cpu")
    return dev
