"""The contract between training, export and the device, written once.

Every enumeration a config, a click option, the exporter or the runtime checks against,
every bundle file and ONNX tensor name, and the packing of each calibration array live
here, torch-free, so the training side, `stpr-export` and `stpr-run` import one answer.
docs/bundle.md describes the files; CONTRIBUTING.md says what to touch to add a mode or
a file.
"""
from __future__ import annotations

import numpy as np

# ---- enumerations -------------------------------------------------------------------
ROUTING_MODES = ("td", "td-raw", "avg", "clip", "adapter", "oracle")  # what training can route with
# What a bundle can run: clip needs a second (plain CLIP) tower, oracle needs the labels.
BUNDLE_ROUTING_MODES = ("td", "td-raw", "avg", "adapter")
ROUTING_ANCHORS = {  # what anchors.npy holds for each bundle routing mode (the manifest says it)
    "td": "calibrated td anchors (class means of the centred residual)",
    "td-raw": "td anchors mu_c (the paper's Eq. 11)",
    "adapter": "adapted frame-mean prototypes",
    "avg": "unused by avg",
}
DISTILL_MODES = ("fssd", "uniform", "none")
HEAD_MODES = ("alone", "route-hard", "route-soft", "fuse")  # what a bundle's head can serve
HEAD_CHOICES = ("none",) + HEAD_MODES  # training: none is StPR alone, the paper
HEAD_TOWERS = ("frozen", "adapted")  # frozen CLIP tower | the adapters as the base task left them
HEAD_BALANCES = ("weight", "none")  # each clip n_ref / n_c | plain ridge
HEAD_CROPS = ("none", "corners")  # head rows per clip: its frames | also their 4 corners (runtime/model/sampling.py)
PRECISIONS = ("fp32", "fp16", "int8")  # the experts' variants (int8: CPU only)
SUMS_DTYPES = ("float64", "float32")  # how a bundle stores the head's sums

MAX_SEED = 2**32 - 1  # a run's seed: NumPy and SeedSequence take non-negative seeds; --seed and the config check it

# ---- bundle files ---------------------------------------------------------------------
MANIFEST_NAME = "manifest.json"
# A manifest value ending so names a bundle file: it must be listed, with its sha256, under `files`
# (runtime/bundle/manifest_fields.py checks every one, so a new file needs no check of its own there).
BUNDLE_FILE_SUFFIXES = (".onnx", ".npy", ".json")
NOT_BUNDLE_FIELDS = ("files", "tools", "source", "lineage")  # fields whose strings are not bundle files
PARITY_FILE = "parity.json"
OPENSET_FILE = "openset.json"
BACKBONE_FILE = "backbone.onnx"
TEXT_EMBEDDINGS_FILE = "text_embeddings.npy"
ANCHORS_FILE = "anchors.npy"
TD_CALIBRATION_FILE = "td_calibration.npy"  # (K, 2D + 2): centre, channel spread, own-score mean and std
PER_EXPERT_KEY = {"fp32": "experts", "fp16": "experts_fp16"}  # manifest key: the per-expert files
FUSED_KEY = {"fp32": "experts_fused", "fp16": "experts_fused_fp16", "int8": "experts_fused_int8"}
FUSED_FILE = {"fp32": "experts.onnx", "fp16": "experts.fp16.onnx", "int8": "experts.int8.onnx"}
TEXT_TOWER_FILE = "text_tower.onnx"
TOKENIZER_FILE = "tokenizer.json"
CLIP_IMAGE_FILE = "clip_backbone.onnx"  # the image tower without adapters
HEAD_WEIGHTS_FILE = "head_weights.npy"  # (M, C) float32 ridge weights
HEAD_TOWER_FILE = "head_backbone.onnx"  # tower 'adapted' beside StPR: the adapters as the base task left them
HEAD_SUBSPACE_FILE = "head_subspace.npy"  # (M + 1, r): G's top eigenvectors, then 1 / (eigenvalue + lambda)
HEAD_GRAM_FILE = "head_gram.npy"  # G (M, M): the workstation's clip-weighted sum of h h^T
HEAD_CROSS_FILE = "head_cross.npy"  # C (M, C): the workstation's clip-weighted sum of h y^T
HEAD_ROWS_FILE = "head_learned_rows.npy"  # (N, M) float32: every clip learned on the device, grouped by class
HEAD_ONLY_TOWER_FILE = "head_tower.onnx"  # a head-only bundle's image tower: the ONNX file its run read
# What a head-only bundle (`head_only: true`, exported from a run without torch) has none of: StPR's parts.
STPR_KEYS = ("experts", "backbone", "routing", "logit_scale", "text_embeddings", "anchors")


def expert_file(k: int, precision: str = "fp32") -> str:
    """The per-expert ONNX file of expert k."""
    return f"expert_{k}.onnx" if precision == "fp32" else f"expert_{k}.{precision}.onnx"


def fp16_twin(name: str) -> str:
    """`x.onnx` -> `x.fp16.onnx`."""
    return name.replace(".onnx", ".fp16.onnx")


# ---- ONNX tensor names ----------------------------------------------------------------
TOWER_INPUT, TOWER_OUTPUT = "frames", "features"  # image towers: (N, 3, S, S) -> (N, D)
EXPERT_INPUT, EXPERT_OUTPUT = "features", "z"  # experts: (B, T, D) -> (B, D); fused (B, K, D)
TEXT_INPUT, TEXT_OUTPUT = "tokens", "embeddings"  # the text tower: (N, L) int64 -> (N, D)


# ---- calibration arrays ---------------------------------------------------------------
def pack_td_calibration(center: np.ndarray, var: np.ndarray, score_mean: np.ndarray,
                        score_std: np.ndarray) -> np.ndarray:
    """The calibrated router's per-expert statistics -> `td_calibration.npy` `(K, 2D + 2)` float32:
    centre `(K, D)`, channel spread `(K, D)`, own-score mean `(K,)` and spread `(K,)`, in that order."""
    return np.concatenate([center, var, np.asarray(score_mean)[:, None], np.asarray(score_std)[:, None]],
                          axis=1).astype(np.float32)


def unpack_td_calibration(arr: np.ndarray, *, num_experts: int, dim: int) -> dict[str, np.ndarray]:
    """`td_calibration.npy` -> `center (K, D)`, `var (K, D)`, `score_mean (K,)`, `score_std (K,)`;
    a `ValueError` for a wrong shape, a non-finite value or a spread <= 0."""
    if arr.shape != (num_experts, 2 * dim + 2):
        raise ValueError(f"td calibration is {arr.shape}, expected ({num_experts}, {2 * dim + 2})")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or (arr[:, dim:2 * dim] <= 0).any() or (arr[:, -1] <= 0).any():
        raise ValueError("td calibration holds a non-finite value, a channel spread <= 0 or a score spread <= 0")
    return {"center": arr[:, :dim], "var": arr[:, dim:2 * dim], "score_mean": arr[:, -2], "score_std": arr[:, -1]}
