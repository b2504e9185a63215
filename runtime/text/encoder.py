"""Class names -> unit text embeddings on the device: the bundle's tokenizer and text tower.

The device-side twin of `stpr.train.model.text.encode_class_names`: the same name
cleaning, every prompt template, one unit embedding per prompt, averaged over templates
and normalised again. Torch-free (pure-Python tokenizer, onnxruntime).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..contract import TEXT_INPUT, TEXT_OUTPUT
from ..errors import BundleError
from ..model.backends import OrtRunner
from ..model.router import normalize
from .text_clean import clean_class_name
from .tokenizer import ClipTokenizer


def text_section(manifest: dict[str, Any], bundle: str | Path) -> dict[str, Any]:
    """The manifest's `text` section, or the error an older bundle gets."""
    text = manifest.get("text")
    if not isinstance(text, dict):
        raise BundleError(f"bundle {str(bundle)!r} has no text tower (exported with --no-text, or by an stpr-export "
                          "older than adding classes by name); export it again without --no-text to add classes by "
                          "name")
    return text


class TextEncoder:
    """Context manager around the text tower's onnxruntime session (fp32 or the fp16 twin)."""

    def __init__(self, bundle: str | Path, text: dict[str, Any], fp16: bool = False, device: str = "cpu") -> None:
        bundle = Path(bundle)
        if fp16 and "tower_fp16" not in text:
            raise BundleError(f"bundle {str(bundle)!r} has no fp16 text tower; re-export it with --fp16 or drop --fp16")
        self.templates: list[str] = list(text["templates"])
        self.tokenizer = ClipTokenizer.from_file(bundle / text["tokenizer"], int(text["context_length"]))
        self.runner = OrtRunner(bundle / text["tower_fp16" if fp16 else "tower"], device)

    def __enter__(self) -> "TextEncoder":
        self.runner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.__exit__(*exc)

    def embed_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """`(N, D)` float32 unit embeddings, one per prompt (what the tower computes per template)."""
        return self.runner.infer({TEXT_INPUT: self.tokenizer(list(prompts))})[TEXT_OUTPUT].astype(np.float32)

    def embed_names(self, names: Sequence[str]) -> np.ndarray:
        """`(C, D)` class embeddings: each template filled with the cleaned name, averaged, unit."""
        words = [clean_class_name(n) for n in names]
        per_template = [self.embed_prompts([t.format(w) for w in words]) for t in self.templates]
        return normalize(np.mean(per_template, axis=0)).astype(np.float32)
