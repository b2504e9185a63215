"""The text classifier (docs/method.md, "Classifier"): frozen CLIP text tower, prompts, clean names."""
from __future__ import annotations

from typing import Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from stpr.runtime.text.text_clean import clean_class_name  # one cleaning for training and the device

DEFAULT_TEMPLATES = ("a video of a person {}.",)


@torch.no_grad()
def encode_class_names(
    clip_model: nn.Module, model_name: str, names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> torch.Tensor:
    """`(C, D)` unit text embeddings, one per class, averaged over prompt templates."""
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"each prompt template needs a '{{}}' for the class name, got {list(templates)}")
    tokenizer = open_clip.get_tokenizer(model_name)
    device = next(clip_model.parameters()).device
    per_template = []
    for template in templates:
        tokens = tokenizer([template.format(clean_class_name(n)) for n in names]).to(device)
        per_template.append(F.normalize(clip_model.encode_text(tokens).float(), dim=-1))  # (C, D)
    return F.normalize(torch.stack(per_template).mean(0), dim=-1)


def cosine_logits(v: torch.Tensor, text: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """`logit_scale * cos(v, t_c)`: `(B, D) x (C, D) -> (B, C)`."""
    return logit_scale * F.normalize(v, dim=-1) @ F.normalize(text, dim=-1).T


TEXT_COLLISION_COS = 0.99  # above this two class texts are one class to a cosine classifier (demo max: 0.88)


def text_collisions(names: Sequence[str], text: torch.Tensor,
                    threshold: float = TEXT_COLLISION_COS) -> list[tuple[str, str, float]]:
    """Pairs of classes whose text embeddings `(C, D)` have cosine >= `threshold`, closest first.

    A tower that never learned a word maps it to nothing (the packaged tiny tower stores
    zero rows for words its captions never used), so "digit 0 moving left" and "digit 3
    moving left" get one text: no video feature can pick between them by cosine."""
    t = F.normalize(text.float().cpu(), dim=-1)  # C x C is small; the CPU indices must index it on its device
    sim = t @ t.T
    i, j = torch.triu_indices(len(names), len(names), offset=1)
    close = sim[i, j] >= threshold
    pairs = [(names[a], names[b], float(c)) for a, b, c in zip(i[close].tolist(), j[close].tolist(), sim[i, j][close])]
    return sorted(pairs, key=lambda p: -p[2])
