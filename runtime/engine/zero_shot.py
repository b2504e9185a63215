"""Scoring classes added by name, which have no expert and no anchor.

An added class is scored on the frozen CLIP image tower (the bundle's `clip_backbone.onnx`,
no adapters): its frame-mean feature `g` against the class texts. The adapters, trained on
the seen classes only, erase what the tower knew of unseen ones (on the demo, the adapted
frame mean puts 1.6 % of ring clips nearest a ring text, the frozen tower 100 %), and the
trained classes' logits come from the routed feature `v`, on another scale. So an added
class competes by rank, not by raw cosine:

    logit_z = max_c logit_c + logit_scale * (cos(g, t_z) - max_c cos(g, t_c))

It takes top-1 exactly when the frozen tower puts its text above every trained class's
text, and then by the margin it wins by; the trained logits are unchanged.
scripts/studies/zero_shot_demo.py measures this rule against the raw cosines.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundle.class_overlay import StaleOverlay, default_overlay_path, read_overlay
from ..bundle.load import Bundle
from ..model.router import normalize
from ..text.encoder import TextEncoder, text_section

log = logging.getLogger(__name__)


@dataclass
class ZeroShot:
    names: list[str]
    embeddings: np.ndarray  # (Z, D) unit text embeddings
    source: Path  # the overlay file


def zero_shot_logits(g: np.ndarray, trained_text: np.ndarray, added_text: np.ndarray, trained_logits: np.ndarray,
                     logit_scale: float) -> np.ndarray:
    """Frozen-tower frame means `g (B, D)`, texts `(C, D)` and `(Z, D)`, trained logits `(B, C)` -> `(B, Z)`."""
    g = normalize(g)
    cos_added, cos_trained = g @ normalize(added_text).T, g @ normalize(trained_text).T
    margin = cos_added - cos_trained.max(axis=1, keepdims=True)
    return (trained_logits.max(axis=1, keepdims=True) + logit_scale * margin).astype(np.float32)


def load_zero_shot(bundle: Bundle, overlay: str | Path | None) -> ZeroShot | None:
    """The overlay's classes embedded with the bundle's text tower. `overlay=None` takes
    `<bundle>.classes.json` if it exists (and nothing otherwise). An overlay written for
    another bundle (a publish or re-export since) is skipped with one warning: the bundle
    serves without added names rather than not at all."""
    path = Path(overlay) if overlay is not None else default_overlay_path(bundle.path)
    if overlay is None and not path.is_file():
        return None
    try:
        names = read_overlay(path, bundle.manifest)
    except StaleOverlay as e:
        log.warning("%s: skipped, so %s serves without classes added by name; add them to it with "
                    "`stpr-classes add %s NAME`", e, bundle.path, bundle.path)
        return None
    if not names:
        return None
    with TextEncoder(bundle.path, text_section(bundle.manifest, bundle.path)) as enc:
        return ZeroShot(names, enc.embed_names(names), path)
