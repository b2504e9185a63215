"""Parity: PyTorch and onnxruntime on the same clips, through the whole pipeline
(backbone, every expert, NumPy router, cosine classifier)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stpr.runtime.backends import OrtRunner
from stpr.runtime.router import calibration_from_array, classify
from stpr.train.data.registry import build_splits
from stpr.train.config import routing_tau
from stpr.train.restore import Restored

log = logging.getLogger(__name__)

FP32_MIN_AGREEMENT = 1.0  # top-1 agreement required of the fp32 bundle
FP32_MAX_FEATURE_DIFF = 1e-3  # max abs difference of frame features
FP16_MIN_AGREEMENT = 0.99


def parity_clips(r: Restored, count: int = 16) -> tuple[torch.Tensor, str]:
    """Held-out clips of the run's dataset when it can be read here, else generated ones."""
    try:
        test = build_splits(r.cfg.data, r.preprocess, r.cfg.seed).test
        seen = set(r.checkpoint["classes"])
        idx = [i for i, t in enumerate(test.targets) if test.classes[t] in seen]
        step = max(1, len(idx) // count)
        clips = torch.stack([test[i][0] for i in idx[::step][:count]])
        return clips, f"held-out clips of {r.cfg.data.dataset!r}"
    except Exception as e:  # no data on this machine: parity still runs, on generated clips
        log.warning("parity on generated clips (the run's data could not be read: %s)", e)
        g = torch.Generator().manual_seed(0)
        T, size = r.cfg.data.num_frames, r.preprocess.size
        return torch.randn(count, T, 3, size, size, generator=g), "generated clips"


@torch.no_grad()
def torch_outputs(r: Restored, clips: torch.Tensor) -> dict[str, np.ndarray]:
    m, meth = r.learner.model.eval(), r.cfg.method
    feats = m.frame_features(clips)
    out = m.classify_features(feats, meth.routing, routing_tau(meth))
    return {"features": feats.numpy(), "logits": out["logits"].numpy()}


def onnx_outputs(bundle: Path, manifest: dict[str, Any], clips: np.ndarray, fp16: bool) -> dict[str, np.ndarray]:
    """The device's path: the runtime's onnxruntime backend and NumPy router."""
    key = "_fp16" if fp16 else ""
    B, T = clips.shape[:2]
    with OrtRunner(bundle / manifest[f"backbone{key}"]) as backbone:
        feats = backbone.infer({"frames": clips.reshape(B * T, *clips.shape[2:])})["features"].reshape(B, T, -1)
    z = []
    for name in manifest[f"experts{key}"]:
        with OrtRunner(bundle / name) as expert:
            z.append(expert.infer({"features": feats})["z"])
    calibration = None
    if "td_calibration" in manifest:
        arr = np.load(bundle / manifest["td_calibration"], allow_pickle=False)
        calibration = calibration_from_array(arr, len(z), feats.shape[-1])
    out = classify(
        feats, np.stack(z, axis=1), np.load(bundle / manifest["text_embeddings"], allow_pickle=False),
        np.asarray(manifest["class_to_expert"]), np.load(bundle / manifest["anchors"], allow_pickle=False),
        manifest["routing"]["mode"], manifest["routing"]["tau"], manifest["logit_scale"], calibration,
    )
    return {"features": feats, "logits": out["logits"]}


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    d_f = np.abs(ref["features"] - got["features"])
    d_l = np.abs(ref["logits"] - got["logits"])
    return {
        "feature_max_abs_diff": float(d_f.max()), "feature_mean_abs_diff": float(d_f.mean()),
        "logit_max_abs_diff": float(d_l.max()), "logit_mean_abs_diff": float(d_l.mean()),
        "top1_agreement": float((ref["logits"].argmax(1) == got["logits"].argmax(1)).mean()),
    }


def check(report: dict[str, Any]) -> list[str]:
    """What fails the export (an empty list means it passes)."""
    problems = []
    fp32 = report["fp32"]
    if fp32["top1_agreement"] < FP32_MIN_AGREEMENT:
        problems.append(f"fp32 top-1 agreement {fp32['top1_agreement']:.2%} < {FP32_MIN_AGREEMENT:.0%}")
    if fp32["feature_max_abs_diff"] > FP32_MAX_FEATURE_DIFF:
        problems.append(f"fp32 feature max abs diff {fp32['feature_max_abs_diff']:.2e} > {FP32_MAX_FEATURE_DIFF:.0e}")
    if "fp16" in report and report["fp16"]["top1_agreement"] < FP16_MIN_AGREEMENT:
        problems.append(f"fp16 top-1 agreement {report['fp16']['top1_agreement']:.2%} < {FP16_MIN_AGREEMENT:.0%}")
    return problems
