"""Parity: PyTorch and onnxruntime on the same clips, through the whole pipeline
(backbone, every expert, NumPy router, cosine classifier)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stpr.runtime.contract import FUSED_KEY, PER_EXPERT_KEY, TOWER_INPUT, TOWER_OUTPUT, unpack_td_calibration
from stpr.runtime.model.analytic import head_scores, projection_matrix
from stpr.runtime.model.analytic import mode_probabilities as np_mode_probabilities
from stpr.runtime.model.analytic import own_expert_logits as np_own_expert_logits
from stpr.runtime.model.backends import OrtRunner
from stpr.runtime.model.experts import ExpertsRunner, expert_files
from stpr.runtime.model.router import classify
from stpr.train.config import routing_tau
from stpr.train.data.registry import build_splits
from stpr.train.model.analytic import mode_probabilities, own_expert_logits
from stpr.train.restore import Restored

log = logging.getLogger(__name__)

FP32_MIN_AGREEMENT = 1.0  # top-1 agreement required of the fp32 bundle
FP32_MAX_FEATURE_DIFF = 1e-3  # max abs difference of frame features
FP16_MIN_AGREEMENT = 0.99
INT8_MIN_AGREEMENT = 0.99  # the int8 experts against the PyTorch fp32 model, like fp16
TIE_TOLERANCE = 1e-4  # top-1 scores this close (relative to the logits' scale) are a tie, not a disagreement


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


def variants(manifest: dict[str, Any]) -> dict[str, tuple[str, list[str], bool]]:
    """Each precision the bundle holds -> (backbone file, expert files, fused): what parity runs."""
    out = {}
    for name, backbone, variant, fused in (("fp32", "backbone", "fp32", False),
                                           ("fp32_fused", "backbone", "fp32", True),
                                           ("fp16", "backbone_fp16", "fp16", False),
                                           ("fp16_fused", "backbone_fp16", "fp16", True),
                                           ("int8", "backbone", "int8", True)):
        key = FUSED_KEY[variant] if fused else PER_EXPERT_KEY.get(variant)
        if backbone in manifest and key in manifest:
            out[name] = (manifest[backbone], *expert_files(manifest, variant, fused))
    return out


def load_calibration(bundle: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The calibrated td router's statistics, as the runtime reads them (None for other routers)."""
    if "td_calibration" not in manifest:
        return None
    arr = np.load(bundle / manifest["td_calibration"], allow_pickle=False)
    return unpack_td_calibration(arr, num_experts=manifest["dims"]["K"], dim=manifest["dims"]["D"])


def route_and_classify(bundle: Path, manifest: dict[str, Any], feats: np.ndarray, z: np.ndarray,
                       calibration: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The runtime's NumPy router and classifier on a bundle's arrays: logits, weights, route scores."""
    return classify(
        feats, z, np.load(bundle / manifest["text_embeddings"], allow_pickle=False),
        np.asarray(manifest["class_to_expert"]), np.load(bundle / manifest["anchors"], allow_pickle=False),
        manifest["routing"]["mode"], manifest["routing"]["tau"], manifest["logit_scale"], calibration,
    )


def onnx_outputs(bundle: Path, manifest: dict[str, Any], clips: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The device's path for every variant: the runtime's onnxruntime backend and NumPy router."""
    B, T = clips.shape[:2]
    feats_of: dict[str, np.ndarray] = {}  # backbone file -> (B, T, D): each backbone runs once
    calibration = load_calibration(bundle, manifest)
    out = {}
    for name, (backbone, files, fused) in variants(manifest).items():
        if backbone not in feats_of:
            with OrtRunner(bundle / backbone) as runner:
                flat = clips.reshape(B * T, *clips.shape[2:])
                feats_of[backbone] = runner.infer({TOWER_INPUT: flat})[TOWER_OUTPUT].reshape(B, T, -1)
        feats = feats_of[backbone]
        with ExpertsRunner([OrtRunner(bundle / f) for f in files], fused) as experts:
            z = experts.infer(feats)  # (B, K, D)
        out[name] = {"features": feats, "logits": route_and_classify(bundle, manifest, feats, z, calibration)["logits"]}
    return out


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> float:
    """Share of rows whose top class agrees. A row where the bundle's top class scores within
    TIE_TOLERANCE of the logits' scale of PyTorch's top (in PyTorch's logits) is a tie, not a
    disagreement: classes whose texts coincide (photos of one motion) tie exactly in PyTorch,
    and float noise alone picks between them."""
    tol = TIE_TOLERANCE * max(1.0, float(np.abs(ref).max()))
    r, g = ref.argmax(1), got.argmax(1)
    rows = np.arange(len(ref))
    return float(((r == g) | (ref[rows, r] - ref[rows, g] <= tol)).mean())


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    d_f = np.abs(ref["features"] - got["features"])
    d_l = np.abs(ref["logits"] - got["logits"])
    return {
        "feature_max_abs_diff": float(d_f.max()), "feature_mean_abs_diff": float(d_f.mean()),
        "logit_max_abs_diff": float(d_l.max()), "logit_mean_abs_diff": float(d_l.mean()),
        "top1_agreement": top1_agreement(ref["logits"], got["logits"]),
    }


def check(report: dict[str, Any]) -> list[str]:
    """What fails the export (an empty list means it passes). Every variant meets its
    precision's gate: the fused graphs the same as their per-expert files."""
    problems = []
    for name, got in report.items():
        if not isinstance(got, dict) or "top1_agreement" not in got:
            continue
        need = {"fp32": FP32_MIN_AGREEMENT, "fp16": FP16_MIN_AGREEMENT, "int8": INT8_MIN_AGREEMENT}[name.split("_")[0]]
        if got["top1_agreement"] < need:
            problems.append(f"{name} top-1 agreement {got['top1_agreement']:.2%} < {need:.0%}")
        if name.startswith("fp32") and got["feature_max_abs_diff"] > FP32_MAX_FEATURE_DIFF:
            problems.append(f"{name} feature max abs diff {got['feature_max_abs_diff']:.2e} > "
                            f"{FP32_MAX_FEATURE_DIFF:.0e}")
    return problems


@torch.no_grad()
def torch_head_outputs(r: Restored, clips: torch.Tensor) -> dict[str, np.ndarray]:
    """PyTorch's head on `clips`: its tower's frame features and the configured mode's probabilities."""
    learner, meth, h = r.learner, r.cfg.method, r.cfg.head
    m = learner.model.eval()
    feats = m.frame_features(clips)
    out = m.classify_features(feats, meth.routing, routing_tau(meth))
    window = learner.head_window(clips, feats)
    own = own_expert_logits(fbar=out["fbar"], z=out["z"], text=m.text_embeddings, class_to_expert=m.class_to_expert,
                            logit_scale=m.logit_scale)
    probs = mode_probabilities(h.mode, scores=learner.head.scores(window), class_to_expert=m.class_to_expert,
                               num_tasks=m.num_experts, tau=h.tau, own_logits=own, stpr_logits=out["logits"],
                               fuse_weight=h.fuse_weight)
    return {"features": window.numpy(), "logits": probs.float().numpy()}


def _tower_features(bundle: Path, file: str, clips: np.ndarray) -> np.ndarray:
    B, T = clips.shape[:2]
    with OrtRunner(bundle / file) as runner:
        return runner.infer({TOWER_INPUT: clips.reshape(B * T, *clips.shape[2:])})[TOWER_OUTPUT].reshape(B, T, -1)


def head_arrays(bundle: Path, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The head's projection, regenerated from its seed as the runtime does, and its weights."""
    h = manifest["head"]
    p = h["projection"]
    return projection_matrix(p["seed"], p["in_dim"], p["out_dim"]), np.load(bundle / h["weights"], allow_pickle=False)


def bundle_head_outputs(bundle: Path, manifest: dict[str, Any], clips: np.ndarray, fp16: bool) -> dict[str, np.ndarray]:
    """The device's head path on a bundle's files: the head's tower, the regenerated
    projection, the weights and (for the modes that use StPR) the fused experts and router."""
    h = manifest["head"]
    window = _tower_features(bundle, h["tower_fp16" if fp16 else "tower_file"], clips)
    scores = head_scores(window, *head_arrays(bundle, manifest))
    c2e, K = np.asarray(manifest["class_to_expert"]), manifest["dims"]["K"]
    own = stpr_logits = None
    if h["mode"] != "alone":
        feats = _tower_features(bundle, manifest["backbone_fp16" if fp16 else "backbone"], clips)
        files, fused = expert_files(manifest, "fp16" if fp16 else "fp32", True)
        with ExpertsRunner([OrtRunner(bundle / f) for f in files], fused) as experts:
            z = experts.infer(feats)
        stpr_logits = route_and_classify(bundle, manifest, feats, z, load_calibration(bundle, manifest))["logits"]
        own = np_own_expert_logits(fbar=feats.mean(axis=1), z=z, text=np.load(bundle / manifest["text_embeddings"]),
                                   class_to_expert=c2e, logit_scale=manifest["logit_scale"])
    probs = np_mode_probabilities(h["mode"], scores=scores, class_to_expert=c2e, num_tasks=K, tau=h["tau"],
                                  own_logits=own, stpr_logits=stpr_logits, fuse_weight=h["fuse_weight"])
    return {"features": window, "logits": probs.astype(np.float32)}


def head_parity(r: Restored, bundle: Path, manifest: dict[str, Any], clips: torch.Tensor) -> dict[str, Any]:
    """`fp32_head` (and `fp16_head` with an fp16 tower): PyTorch's head against the bundle's,
    under the same gates as the other variants of that precision."""
    ref = torch_head_outputs(r, clips)
    out = {"fp32_head": compare(ref, bundle_head_outputs(bundle, manifest, clips.numpy(), fp16=False))}
    if "tower_fp16" in manifest["head"]:
        out["fp16_head"] = compare(ref, bundle_head_outputs(bundle, manifest, clips.numpy(), fp16=True))
    return out
