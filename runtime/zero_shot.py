"""Scoring classes added by name (no expert, no anchor): the frame-mean feature against
their text embedding, at the bundle's logit scale, appended after the trained logits.

Why `fbar` and not `v`: a zero-shot class owns no expert, and `v = fbar + sum_k w_k z_k`
moves the feature toward the trained class the router picked; `fbar` is the adapted
image feature the spatial loss aligns with the class texts (docs/method.md), so it
compares with a new text on the same terms. scripts/zero_shot_demo.py measures both.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundle import Bundle
from .class_overlay import default_overlay_path, read_overlay
from .router import normalize
from .text import TextEncoder, text_section

ZERO_SHOT_QUERIES = ("fbar", "v")


@dataclass
class ZeroShot:
    names: list[str]
    embeddings: np.ndarray  # (Z, D) unit text embeddings
    source: Path  # the overlay file


def zero_shot_logits(fbar: np.ndarray, embeddings: np.ndarray, logit_scale: float) -> np.ndarray:
    """`logit_scale * cos(fbar, t_z)`: `(B, D) x (Z, D) -> (B, Z)`, as the trained logits."""
    return (logit_scale * normalize(fbar) @ normalize(embeddings).T).astype(np.float32)


def load_zero_shot(bundle: Bundle, overlay: str | Path | None) -> ZeroShot | None:
    """The overlay's classes embedded with the bundle's text tower. `overlay=None` takes
    `<bundle>.classes.json` if it exists (and nothing otherwise)."""
    path = Path(overlay) if overlay is not None else default_overlay_path(bundle.path)
    if overlay is None and not path.is_file():
        return None
    names = read_overlay(path, bundle.manifest)
    if not names:
        return None
    with TextEncoder(bundle.path, text_section(bundle.manifest, bundle.path)) as enc:
        return ZeroShot(names, enc.embed_names(names), path)
