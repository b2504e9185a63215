"""ONNX export of the frozen CLIP text tower and the tokenizer files a bundle needs to add
classes by name on the device (docs/bundle.md, "Zero-shot classes"), the step that writes
them with the frozen image tower (`write_text`), and their parity with PyTorch.

The graph is exactly what `stpr.train.model.text.encode_class_names` computes per
prompt template: token ids -> `normalize(clip.encode_text(tokens))`. The runtime averages
over templates itself, so one graph serves any number of them.
"""
from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip import tokenizer as oc_tokenizer
from torch import nn

from stpr.runtime.atomic import atomic_write_text
from stpr.runtime.contract import (
    CLIP_IMAGE_FILE,
    TEXT_INPUT,
    TEXT_OUTPUT,
    TEXT_TOWER_FILE,
    TOKENIZER_FILE,
    fp16_twin,
)
from stpr.runtime.text.tokenizer import MERGES_USED, SPECIAL_TOKENS, byte_vocab
from stpr.train.restore import Restored

from .fp16 import PLAIN_TOWERS_FP16_KEEP_FP32, to_fp16
from .onnx_export import export_backbone, finish_onnx
from .result import ExportResult, timed_step


class _TextTower(nn.Module):
    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.clip = clip_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)  # (N, D) unit


def context_length(clip_model: nn.Module) -> int:
    """The token count the model's text tower takes (open_clip pads and cuts to it)."""
    return int(clip_model.context_length)


def export_text_tower(clip_model: nn.Module, path: Path, opset: int) -> Path:
    """tokens `(N, L)` int64 -> unit text embeddings `(N, D)` float32; N dynamic, L the model's."""
    L = context_length(clip_model)
    example = torch.zeros(2, L, dtype=torch.long)
    example[:, 0], example[:, 1] = 49406, 49407  # <start_of_text> <end_of_text>
    module = _TextTower(clip_model).eval()
    # Grad on keeps nn.MultiheadAttention off its fused inference kernel (no ONNX mapping);
    # the token ids cannot require grad, so the tracer needs grad enabled alone.
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=[TEXT_INPUT], output_names=[TEXT_OUTPUT],
                          dynamic_axes={TEXT_INPUT: {0: "N"}, TEXT_OUTPUT: {0: "N"}}, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    return path


def write_tokenizer(path: Path) -> Path:
    """open_clip's BPE (`bpe_simple_vocab_16e6.txt.gz`) as plain JSON: the merges it uses, in
    rank order, and the vocabulary they give (id = index). The runtime checks the two agree."""
    lines = gzip.open(oc_tokenizer.default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1:MERGES_USED + 1]  # what SimpleTokenizer reads: the first line is a header
    vocab = byte_vocab() + ["".join(m.split()) for m in merges] + list(SPECIAL_TOKENS)
    atomic_write_text(path, json.dumps({"source": "open_clip bpe_simple_vocab_16e6.txt.gz",
                                        "merges": merges, "vocab": vocab}, ensure_ascii=False))
    return path


@torch.no_grad()
def torch_text_embeddings(clip_model: nn.Module, model_name: str, prompts: Sequence[str]) -> np.ndarray:
    """The reference: open_clip's tokenizer and the PyTorch tower, one unit row per prompt."""
    tokens = open_clip.get_tokenizer(model_name)(list(prompts))
    return F.normalize(clip_model.encode_text(tokens).float(), dim=-1).numpy()


def text_manifest(clip_model: nn.Module, templates: Sequence[str]) -> dict[str, Any]:
    return {"tower": TEXT_TOWER_FILE, "tokenizer": TOKENIZER_FILE, "image_tower": CLIP_IMAGE_FILE,
            "context_length": context_length(clip_model), "templates": list(templates), "clean": "lower"}


def write_text(r: Restored, tmp: Path, meta: dict[str, Any], opset: int, fp16: bool,
               res: ExportResult) -> dict[str, Any]:
    """The frozen text tower (and its fp16 twin), the tokenizer and the run's prompt templates:
    what `stpr-classes` needs to add a class by name on the device."""
    clip = r.learner.clip_model
    with timed_step(res, "text tower"):
        finish_onnx(export_text_tower(clip, tmp / TEXT_TOWER_FILE, opset), meta)
        write_tokenizer(tmp / TOKENIZER_FILE)
        # The frozen image tower without adapters: the adapters, trained on the seen classes
        # only, erase what the tower knew of unseen ones (docs/results.md, "Zero-shot").
        finish_onnx(export_backbone(r.learner.model.backbone, tmp / CLIP_IMAGE_FILE, r.preprocess.size, opset,
                                    adapters=False), meta)
        # The plain towers keep Transpose in float32 (fp16.PLAIN_TOWERS_FP16_KEEP_FP32 says why).
        half = {"tower_fp16": to_fp16(tmp / TEXT_TOWER_FILE, tmp / fp16_twin(TEXT_TOWER_FILE),
                                      keep_fp32=PLAIN_TOWERS_FP16_KEEP_FP32).name,
                "image_tower_fp16": to_fp16(tmp / CLIP_IMAGE_FILE, tmp / fp16_twin(CLIP_IMAGE_FILE),
                                            keep_fp32=PLAIN_TOWERS_FP16_KEEP_FP32).name} if fp16 else {}
    return {"text": {**text_manifest(clip, r.cfg.model.templates), **half}}


TEXT_FP32_MAX_ABS_DIFF = 1e-4  # the ONNX tower against PyTorch, per embedding value
TEXT_FP16_MIN_TOP1 = 1.0  # every class prompt's fp16 embedding is nearest its own fp32 one


def text_parity(r: Restored, tmp: Path, text: dict[str, Any]) -> dict[str, Any]:
    """The bundle's text tower(s), fed by the runtime tokenizer, against open_clip + PyTorch on
    the run's own class prompts (every template)."""
    from stpr.runtime.text.encoder import TextEncoder
    from stpr.train.model.text import clean_class_name

    names = [clean_class_name(c) for c in r.checkpoint["classes"]]
    prompts = [t.format(n) for t in text["templates"] for n in names]
    ref = torch_text_embeddings(r.learner.clip_model, r.cfg.model.name, prompts)
    out: dict[str, Any] = {"prompts": len(prompts), "thresholds": {"fp32_max_abs_diff": TEXT_FP32_MAX_ABS_DIFF,
                                                                   "fp16_min_top1_agreement": TEXT_FP16_MIN_TOP1}}
    for variant in ("fp32", "fp16") if "tower_fp16" in text else ("fp32",):
        with TextEncoder(tmp, text, variant == "fp16") as enc:
            got = enc.embed_prompts(prompts)
        top1 = (got @ ref.T).argmax(1) == np.arange(len(prompts))
        out[variant] = {"max_abs_diff": float(np.abs(got - ref).max()), "top1_agreement": float(top1.mean())}
    return out


def text_problems(report: dict[str, Any]) -> list[str]:
    problems = []
    if report["fp32"]["max_abs_diff"] > TEXT_FP32_MAX_ABS_DIFF:
        problems.append(f"text tower fp32 differs from PyTorch by {report['fp32']['max_abs_diff']:.2e} "
                        f"(> {TEXT_FP32_MAX_ABS_DIFF})")
    if "fp16" in report and report["fp16"]["top1_agreement"] < TEXT_FP16_MIN_TOP1:
        problems.append(f"text tower fp16 keeps the top-1 of only {report['fp16']['top1_agreement']:.0%} "
                        "of the class prompts")
    return problems
