"""Load an open_clip model by name, with the project's own tiny config registered.

`--pretrained` takes `none` (random init, seeded), `openai` (OpenAI's weights via
open_clip's cache or the network), a tag of weights packaged with stpr (`stpr-tiny`'s
`synthetic-shapes`, hash-checked), or a path to a local weights file. Offline, `openai`
fails with a message that says how to pass a local file instead.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import open_clip
import torch
from torch import nn

from ..errors import StprError
from ..pretrained import is_sparse_token_file, load_sparse, packaged_file, packaged_tags

log = logging.getLogger(__name__)

_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
_registered = False

OPENAI_URL_HINT = (
    "https://openaipublic.azureedge.net/clip/models/"
    "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt"
)


@dataclass(frozen=True)
class Preprocess:
    """How frames must be prepared for the image tower (also written into bundles)."""

    size: int  # square input side in pixels
    mean: tuple[float, float, float]  # per-channel RGB mean, on [0, 1] pixels
    std: tuple[float, float, float]  # per-channel RGB std


def register_builtin_configs() -> None:
    """Make `stpr-tiny` (and any JSON under model_configs/) known to open_clip."""
    global _registered
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


def available_models() -> list[str]:
    register_builtin_configs()
    return list(open_clip.list_models())


def load_clip(model_name: str, pretrained: str, seed: int = 0) -> tuple[nn.Module, Preprocess]:
    """Build the open_clip model `model_name` with weights from `pretrained`.

    `pretrained='none'` initialises randomly from `seed` without touching the global
    RNG, so a resumed run rebuilds the very same frozen tower.
    """
    register_builtin_configs()
    if model_name not in open_clip.list_models():
        raise StprError(
            f"unknown model {model_name!r}; valid names include 'ViT-B-16-quickgelu' (the "
            f"paper's), 'ViT-B-16' and 'stpr-tiny' (tests, demo). All: {', '.join(open_clip.list_models())}"
        )
    if pretrained == "none":
        model = _random_model(model_name, seed)
    elif pretrained in packaged_tags(model_name):  # shipped with stpr, sha256 checked
        model = _random_model(model_name, seed)
        load_sparse(model, packaged_file(model_name, pretrained))
    elif pretrained == "openai":
        model = _load_openai(model_name)
    else:
        model = _load_file(model_name, pretrained)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    visual = model.visual
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else int(visual.image_size)
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return model, Preprocess(size=int(size), mean=mean, std=std)  # type: ignore[arg-type]


def _random_model(model_name: str, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]), _quiet_root_warnings():
        torch.manual_seed(seed)
        return open_clip.create_model(model_name, pretrained=None)


@contextlib.contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    # open_clip warns on the root logger that no weights were loaded: asked for here.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _load_openai(model_name: str) -> nn.Module:
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if "openai" not in tags:
        raise StprError(
            f"model {model_name!r} has no 'openai' weights (its tags: {tags or 'none'}); "
            "use --model ViT-B-16-quickgelu for OpenAI's ViT-B/16, or --pretrained none | PATH"
        )
    if not model_name.endswith("quickgelu"):
        log.warning("OpenAI weights were trained with QuickGELU; use %s-quickgelu for the paper's model", model_name)
    try:
        return open_clip.create_model(model_name, pretrained="openai")
    except (RuntimeError, OSError) as e:  # open_clip wraps hub/URL failures in RuntimeError
        raise StprError(
            f"could not get OpenAI weights for {model_name!r}: {e}\n"
            "No network and no local cache? On a machine with network, either fill the cache with\n"
            f"  python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='openai')\"\n"
            f"and copy ~/.cache/huggingface here, or download {OPENAI_URL_HINT}\n"
            "and pass it as --pretrained /path/to/ViT-B-16.pt"
        ) from e


def _load_file(model_name: str, path: str) -> nn.Module:
    if not os.path.isfile(path):
        tags = ", ".join(repr(t) for t in packaged_tags(model_name)) or "none for this model"
        raise StprError(
            f"--pretrained {path!r} is neither 'none', 'openai', a packaged tag ({tags}) nor an "
            "existing file; pass a local open_clip or OpenAI weights file (e.g. ViT-B-16.pt)"
        )
    if is_sparse_token_file(path):  # written by scripts/data/pretrain_tiny_clip.py
        model = _random_model(model_name, 0)
        load_sparse(model, path)
        return model
    try:
        return open_clip.create_model(model_name, pretrained=path)
    except Exception as e:  # a wrong file can fail in many ways inside open_clip
        raise StprError(f"could not load weights {path!r} into {model_name!r}: {e}") from e


def backbone_fingerprint(model: nn.Module) -> str:
    """A short hash of the frozen image tower, to refuse checkpoints made on another one."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.visual.state_dict().items()):
        h.update(name.encode())
        flat = p.detach().float().flatten()
        # A strided sample keeps this cheap on ViT-B while still telling weights apart.
        h.update(flat[:: max(1, flat.numel() // 256)].cpu().numpy().tobytes())
    return h.hexdigest()[:16]
