"""ONNX export of the adapted backbone and of each expert (one step per function)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from stpr.runtime.contract import EXPERT_INPUT, EXPERT_OUTPUT, TOWER_INPUT, TOWER_OUTPUT
from stpr.train.model.backbone import AdaptedVisionTower
from stpr.train.model.expert import TemporalExpert

MIN_OPSET = 17  # LayerNormalization is one node from opset 17 on


def max_opset() -> int:
    """The newest opset this torch's TorchScript exporter (the one `_trace` uses) writes."""
    from torch.onnx import _constants

    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET))


class _Backbone(nn.Module):
    def __init__(self, tower: AdaptedVisionTower, adapters: bool = True) -> None:
        super().__init__()
        self.tower, self.adapters = tower, adapters

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.tower(frames, adapters=self.adapters)  # (N, D)


def _trace(module: nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str],
           dynamic: dict[str, dict[int, str]], opset: int) -> None:
    module = module.eval()
    # Grad on and an input that requires it keep nn.MultiheadAttention (open_clip's
    # blocks) off its fused inference kernel, which has no ONNX mapping.
    example = example.clone().requires_grad_(True)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about the legacy exporter
        torch.onnx.export(
            module, (example,), str(path), input_names=[names[0]], output_names=[names[1]],
            dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True,
        )


def finish_onnx(path: Path, metadata: dict[str, Any]) -> Path:
    """Full checker + shape inference, then the bundle metadata into `metadata_props`."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def export_backbone(tower: AdaptedVisionTower, path: Path, image_size: int, opset: int = MIN_OPSET,
                    adapters: bool = True) -> Path:
    """frames `(N, 3, H, W)` float32, normalised -> features `(N, D)`; N dynamic. `adapters=False`:
    the frozen CLIP image tower alone (what zero-shot classes are scored with)."""
    example = torch.zeros(2, 3, image_size, image_size)
    _trace(_Backbone(tower, adapters), example, path, (TOWER_INPUT, TOWER_OUTPUT),
           {TOWER_INPUT: {0: "N"}, TOWER_OUTPUT: {0: "N"}}, opset)
    return path


def export_expert(expert: TemporalExpert, path: Path, dim: int, opset: int = MIN_OPSET) -> Path:
    """frame features `(B, T, D)` -> `z (B, D)`; B dynamic, T fixed by the expert."""
    example = torch.zeros(2, expert.num_frames, dim)
    _trace(expert, example, path, (EXPERT_INPUT, EXPERT_OUTPUT), {EXPERT_INPUT: {0: "B"}, EXPERT_OUTPUT: {0: "B"}},
           opset)
    return path
