"""AdaptFormer adapter (docs/method.md, "Frame features"; Eq. 1): one per block, shared by all tasks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Adapter(nn.Module):
    """`A(h) = s * W_up(ReLU(W_down h + b_down)) + b_up`, zero at init."""

    def __init__(self, width: int, bottleneck: int = 64, scale: float = 0.1, dropout: float = 0.1) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.scale = scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # AdaptFormer's init: the up projection is zero, so the adapted model is CLIP.
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        hidden = self.drop(self.act(self.down(h)))  # (..., r)
        # Only W_up is scaled by s; b_up is added as is (Eq. 1).
        return self.scale * F.linear(hidden, self.up.weight) + self.up.bias
