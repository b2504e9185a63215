"""The spatial encoder: open_clip's frozen image tower with one shared adapter per block.

The forward pass is written out here rather than patched into open_clip's modules, so
the adapters live in their own `ModuleList` (what checkpoints store) and the frozen
tower stays untouched. Placement is AdaptFormer's parallel form (docs/method.md, "Frame features"):
`h = x + MHSA(LN1(x))`, then `x' = h + FFN(LN2(h)) + A(h)`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import StprError
from .adapter import Adapter


class AdaptedVisionTower(nn.Module):
    """Frames `(N, 3, H, W)` -> frame features `(N, D)`, D the joint image-text width."""

    def __init__(self, visual: nn.Module, bottleneck: int = 64, scale: float = 0.1, dropout: float = 0.1) -> None:
        super().__init__()
        _check_supported(visual)
        self.visual = visual  # frozen; its weights are never saved in our checkpoints
        width = visual.conv1.out_channels
        self.adapters = nn.ModuleList(
            Adapter(width, bottleneck, scale, dropout) for _ in visual.transformer.resblocks
        )
        self.width = width
        self.out_dim = visual.proj.shape[1] if visual.proj is not None else width

    def train(self, mode: bool = True) -> "AdaptedVisionTower":
        super().train(mode)
        self.visual.eval()  # frozen CLIP never uses train-mode behaviour (patch dropout)
        return self

    def forward(self, frames: torch.Tensor, adapters: nn.ModuleList | None | bool = True) -> torch.Tensor:
        """`adapters`: True for the shared set, False for plain CLIP, or another set
        of the same shape (the FSSD teacher runs through here with its frozen copy)."""
        if adapters is True:
            adapters = self.adapters
        v = self.visual
        x = v._embeds(frames)  # (N, L, W)
        for i, block in enumerate(v.transformer.resblocks):
            h = x + block.ls_1(block.attention(q_x=block.ln_1(x)))
            x = h + block.ls_2(block.mlp(block.ln_2(h)))
            if adapters is not False and adapters is not None:
                x = x + adapters[i](h)
        pooled, _ = v._pool(x)  # (N, W): LN_post of the CLS token
        return pooled @ v.proj if v.proj is not None else pooled  # (N, D)


def _check_supported(visual: nn.Module) -> None:
    # The written-out forward covers CLIP-style ViTs (CLS token, batch-first blocks).
    problems = []
    if not hasattr(visual, "transformer") or not hasattr(visual, "_embeds"):
        problems.append("not an open_clip VisionTransformer")
    else:
        if getattr(visual, "attn_pool", None) is not None:
            problems.append("attention pooling")
        if getattr(visual, "pool_type", "tok") not in ("tok", "avg"):
            problems.append(f"pool_type={visual.pool_type!r}")
        if not getattr(visual.transformer, "batch_first", True):
            problems.append("sequence-first transformer")
    if problems:
        raise StprError(
            f"the image tower is not supported ({', '.join(problems)}); use a CLIP ViT such as "
            "'ViT-B-16-quickgelu', 'ViT-B-16' or 'stpr-tiny'"
        )
