"""One spatiotemporal expert per task (docs/method.md, "One temporal expert per task"; Eq. 2, App. B.3).

A small pre-LN transformer over the T frame features with its own CLS token:
`z_k = E_k([c_k; f_1 .. f_T] + P_k)[0]`. Written out (no nn.TransformerEncoder)
so the ONNX export sees plain ops and no fast-path branches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"expert width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3x (B, h, L, d)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, d)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-LN transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TemporalExpert(nn.Module):
    """Frame features `(B, T, D)` -> clip feature `z (B, D)`."""

    def __init__(self, dim: int, num_frames: int, layers: int = 3, heads: int = 2, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.cls = nn.Parameter(torch.zeros(dim))
        self.pos = nn.Parameter(torch.zeros(num_frames + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(layers))
        self.ln_final = nn.LayerNorm(dim)
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        B, T, D = feats.shape
        if T != self.num_frames:
            raise ValueError(f"expert expects {self.num_frames} frames, got {T}")
        x = torch.cat([self.cls.expand(B, 1, D), feats], dim=1) + self.pos  # (B, T+1, D)
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x[:, 0])  # (B, D): the CLS output
