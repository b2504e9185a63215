"""The analytic head's part of the bundle: the manifest's `head` section, checked and loaded.

docs/bundle.md lists every field. The projection is regenerated from its seed by
`analytic.projection_matrix` and must hash to `projection.sha256`; the weights file is
hashed like every bundle file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import HEAD_BALANCES, HEAD_CROPS, HEAD_MODES, HEAD_TOWERS
from ..errors import BundleError
from ..model.analytic import PROJECTION_GENERATOR, projection_matrix, projection_sha256
from ..model.head_sums import check_sums_fields
from ..model.tower import POOL_RULES, TowerIO


@dataclass
class Head:
    mode: str  # one of HEAD_MODES
    tower: str  # one of HEAD_TOWERS
    tower_file: str  # the ONNX image tower whose frame features the head reads
    tower_fp16: str | None
    projection: np.ndarray  # (T * D, M) float32
    weights: np.ndarray  # (M, C) float32
    tau: float
    fuse_weight: float
    subspace: np.ndarray | None = None  # (M + 1, r) for the Mahalanobis unknown score (openset.head_leverage)
    tail_inverse: float | None = None
    tower_io: TowerIO | None = None  # a tower from --tower: its tensor names and pooling (None: stpr's own)

    @property
    def needs_stpr(self) -> bool:
        """Whether the mode also runs StPR's backbone, experts and router."""
        return self.mode != "alone"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def check_head_fields(m: dict[str, Any], problems: list[str]) -> None:
    """Type and range of every field of `head` (present only in bundles with the head)."""
    h = m["head"]
    if not isinstance(h, dict):
        problems.append("head must be an object (mode, tower, tower_file, projection, weights, ...)")
        return
    if h.get("mode") not in HEAD_MODES:
        problems.append(f"head.mode is {h.get('mode')!r}: must be one of {', '.join(HEAD_MODES)}")
    if h.get("tower") not in HEAD_TOWERS:
        problems.append(f"head.tower is {h.get('tower')!r}: must be one of {', '.join(HEAD_TOWERS)}")
    for key in ("tower_file", "weights") + (("tower_fp16",) if "tower_fp16" in h else ()):
        if h.get(key) not in (m.get("files") or {}):
            problems.append(f"head.{key} is {h.get(key)!r}: must name a file listed under files")
    if h.get("frame_order") != "oldest-first" or h.get("frame_norm") != "l2":
        problems.append("head.frame_order must be 'oldest-first' and head.frame_norm 'l2' "
                        "(what this stpr-run computes)")
    p = h.get("projection")
    if not isinstance(p, dict) or p.get("generator") != PROJECTION_GENERATOR or \
            not all(isinstance(p.get(k), int) and not isinstance(p.get(k), bool) and p[k] >= 0
                    for k in ("seed", "in_dim", "out_dim")) or not isinstance(p.get("sha256"), str):
        problems.append(f"head.projection is {p!r}: must give generator {PROJECTION_GENERATOR!r}, integer seed, "
                        "in_dim, out_dim and the matrix's sha256")
    for key, lo, hi in (("tau", 0, np.inf), ("fuse_weight", 0, 1), ("lambda", 0, np.inf)):
        v = h.get(key)
        if not _is_number(v) or not (lo < v <= hi if key != "fuse_weight" else lo <= v <= hi):
            problems.append(f"head.{key} is {v!r}: must be a finite number in {'[' if key == 'fuse_weight' else '('}"
                            f"{lo}, {hi}]")
    if h.get("balance", "weight") not in HEAD_BALANCES:
        problems.append(f"head.balance is {h.get('balance')!r}: must be one of {', '.join(HEAD_BALANCES)}")
    if h.get("crops", "none") not in HEAD_CROPS:
        problems.append(f"head.crops is {h.get('crops')!r}: must be one of {', '.join(HEAD_CROPS)}")
    views = h.get("views", 1)
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        problems.append(f"head.views is {views!r}: must be a whole number >= 1")
    io = h.get("tower_io")
    if io is not None and not (isinstance(io, dict) and isinstance(io.get("input"), str) and io["input"] and
                               isinstance(io.get("output"), str) and io["output"] and io.get("pool") in POOL_RULES):
        problems.append(f"head.tower_io is {io!r}: must give the tower's input and output tensor names and its "
                        f"pool ({', '.join(POOL_RULES)})")
    check_sums_fields(m, problems)


def load_head(path: Path, m: dict[str, Any], load_array: Any) -> Head | None:
    """The bundle's head (None without one), with its projection regenerated and checked.
    `load_array(path, name, field)` reads a plain finite float `.npy` (bundle.load._array)."""
    h = m.get("head")
    if h is None:
        return None
    p = h["projection"]
    T, D, C = m["dims"]["T"], m["dims"]["D"], m["dims"]["C"]
    if p["in_dim"] != T * D:
        raise BundleError(f"head.projection.in_dim is {p['in_dim']}, but T * D is {T * D}; re-export the bundle")
    proj = projection_matrix(p["seed"], p["in_dim"], p["out_dim"])
    if projection_sha256(proj) != p["sha256"]:
        raise BundleError("the head's projection, regenerated from its seed by this NumPy "
                          f"({np.__version__}), does not match the bundle's sha256; run stpr-run with the NumPy "
                          "the bundle was exported with, or re-export it here")
    weights = load_array(path, h["weights"], "head.weights")
    if weights.shape != (p["out_dim"], C):
        raise BundleError(f"bundle {str(path)!r} is inconsistent: head weights are {weights.shape}, "
                          f"expected ({p['out_dim']}, {C}); re-export it")
    subspace, tail_inverse = None, None
    u = m.get("unknown") or {}
    if "subspace" in u:
        subspace = load_array(path, u["subspace"], "unknown.subspace")
        if subspace.ndim != 2 or subspace.shape[0] != p["out_dim"] + 1:
            raise BundleError(f"bundle {str(path)!r} is inconsistent: unknown.subspace is {subspace.shape}, "
                              f"expected ({p['out_dim'] + 1}, rank); re-export it")
        tail_inverse = float(u["tail_inverse"])
    io = h.get("tower_io")
    return Head(mode=h["mode"], tower=h["tower"], tower_file=h["tower_file"], tower_fp16=h.get("tower_fp16"),
                projection=proj, weights=weights.astype(np.float32), tau=float(h["tau"]),
                fuse_weight=float(h["fuse_weight"]), subspace=subspace, tail_inverse=tail_inverse,
                tower_io=None if io is None else TowerIO(input=io["input"], output=io["output"], pool=io["pool"],
                                                         dim=int(D)))
