"""Weights that ship inside the package: the demo's tiny CLIP, pretrained on captioned
synthetic stills by `scripts/data/pretrain_tiny_clip.py`.

`registry.json` beside this file names each `(model, tag)`'s safetensors file and its
sha256; a file whose hash differs is refused, so a tampered or truncated file never
loads. The files store the text tower's token-embedding rows only for the tokens the
captions used (every other row is zero: a word the tower never read carries no
meaning), which keeps a 49,408-token vocabulary out of a file of a few hundred kB.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from stpr.runtime.bundle.manifest import sha256_file

from ..errors import StprError

if TYPE_CHECKING:  # torch only where weights are built: the ONNX tower below is read without it
    import torch
    from torch import nn

    from stpr.runtime.model.tower import TowerSpec

PACKAGE_DIR = Path(__file__).resolve().parent
REGISTRY = PACKAGE_DIR / "registry.json"
_TOKEN_KEY = "token_embedding.weight"
_IDS_KEY, _ROWS_KEY = "token_embedding.ids", "token_embedding.rows"


def packaged_tags(model_name: str) -> dict[str, dict]:
    """`{tag: entry}` of the packaged weights for `model_name` (entry: file, sha256, ...)."""
    if not REGISTRY.is_file():
        return {}
    entries = json.loads(REGISTRY.read_text())
    return {e["tag"]: e for e in entries if e["model"] == model_name}


def packaged_file(model_name: str, tag: str) -> Path:
    """The verified path of a packaged weights file; raises `StprError` if its hash differs."""
    entry = packaged_tags(model_name)[tag]
    path = PACKAGE_DIR / entry["file"]
    if not path.is_file():
        raise StprError(f"packaged weights {entry['file']!r} for {model_name}:{tag} are missing from "
                        f"{str(PACKAGE_DIR)!r}; reinstall stpr, or rebuild them with "
                        "scripts/data/pretrain_tiny_clip.py")
    check_sha256(path, entry["sha256"])
    return path


def check_sha256(path: Path, expected: str) -> None:
    got = sha256_file(path)
    if got != expected:
        raise StprError(f"refusing weights {str(path)!r}: sha256 {got} does not match the expected {expected} "
                        "(the file was changed or damaged); reinstall stpr or rebuild it with "
                        "scripts/data/pretrain_tiny_clip.py")


def is_sparse_token_file(path: str | Path) -> bool:
    """Whether `path` is a safetensors file in this module's sparse-token layout."""
    if not str(path).endswith(".safetensors"):
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return _IDS_KEY in f.keys()


def save_sparse(model: nn.Module, used_token_ids: torch.Tensor, path: str | Path, metadata: dict[str, str]) -> None:
    """Write `model`'s state as safetensors, keeping only the used token-embedding rows."""
    import torch
    from safetensors.torch import save_file

    from stpr.runtime.atomic import atomic_path

    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    table = state.pop(_TOKEN_KEY)
    ids = torch.unique(used_token_ids.long().flatten())
    state[_IDS_KEY] = ids.contiguous()
    state[_ROWS_KEY] = table[ids].contiguous()
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def load_sparse(model: nn.Module, path: str | Path) -> None:
    """Load a file written by `save_sparse` into `model` (strict: every key must match)."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(path))
    ids, rows = state.pop(_IDS_KEY), state.pop(_ROWS_KEY)
    table = model.state_dict()[_TOKEN_KEY]
    if ids.numel() and (int(ids.max()) >= table.shape[0] or rows.shape != (ids.numel(), table.shape[1])):
        raise StprError(f"weights {str(path)!r} do not fit this model's token embedding {tuple(table.shape)}")
    full = torch.zeros_like(table)
    full[ids] = rows.to(full.dtype)
    state[_TOKEN_KEY] = full
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise StprError(f"weights {str(path)!r} do not fit this model: {e}") from e


def packaged_onnx_tower(model_name: str, tag: str) -> "TowerSpec":
    """The packaged tower of `(model_name, tag)` as ONNX (scripts/data/make_tiny_tower_onnx.py), hash-checked,
    with its preprocessing: what the torch-free head runs on. `StprError` if none ships."""
    from stpr.runtime.model.tower import TowerSpec

    entry = packaged_tags(model_name).get(tag, {}).get("onnx")
    if entry is None:
        raise StprError(f"no ONNX tower ships for --model {model_name} --pretrained {tag}; without torch the head "
                        "runs on the packaged stpr-tiny (synthetic-shapes) or on --tower FILE.onnx (docs/towers.md), "
                        "or install the [train] extra")
    path = PACKAGE_DIR / entry["file"]
    if not path.is_file():
        raise StprError(f"packaged tower {entry['file']!r} is missing from {str(PACKAGE_DIR)!r}; reinstall stpr, "
                        "or rebuild it with scripts/data/make_tiny_tower_onnx.py")
    check_sha256(path, entry["sha256"])
    return TowerSpec(file=path, size=int(entry["size"]), mean=tuple(entry["mean"]), std=tuple(entry["std"]))
