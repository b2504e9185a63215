"""The manifest fields every bundle carries before its files are listed: classes, routing,
preprocessing, dimensions, the tools that wrote it and the run it came from; and the
`files` table of every file's sha256. Torch-free: the head-only export uses it too."""
from __future__ import annotations

import datetime as dt
from importlib import metadata as md
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from stpr.runtime.bundle.manifest import SCHEMA_VERSION, sha256_file
from stpr.runtime.contract import ROUTING_ANCHORS
from stpr.train.config import routing_tau

if TYPE_CHECKING:
    from stpr.train.restore import Restored

EXPORT_TOOLS = ("stpr", "torch", "open_clip_torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt")


def tool_versions(dists: Sequence[str] = EXPORT_TOOLS) -> dict[str, str | None]:
    """The installed version of each distribution (None: not installed), for the manifest's `tools`."""
    out = {}
    for dist in dists:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def base_metadata(r: Restored, opset: int) -> dict[str, Any]:
    """What every artifact carries: the manifest minus file names and hashes."""
    m, cfg, pp = r.learner.model, r.cfg, r.preprocess
    return {
        "schema_version": SCHEMA_VERSION,
        "classes": list(r.checkpoint["classes"]),
        "class_to_expert": m.class_to_expert.tolist(),
        "routing": {"mode": cfg.method.routing, "tau": routing_tau(cfg.method),
                    "anchors": ROUTING_ANCHORS[cfg.method.routing]},
        "logit_scale": float(m.logit_scale),
        "preprocess": {"size": pp.size, "mean": list(pp.mean), "std": list(pp.std), "frames": cfg.data.num_frames,
                       "sampling": "tsn: T equal segments, segment centre", "resize": "shorter side to size, bicubic",
                       "crop": "centre", "channels": "RGB", "scale": "pixels / 255, then (x - mean) / std"},
        "dims": {"D": m.dim, "T": cfg.data.num_frames, "K": m.num_experts, "C": m.num_classes},
        "opset": opset,
        "tools": tool_versions(),
        "source": {"run_dir": str(r.checkpoint_file.parent.parent.resolve()), "task": r.task,
                   "checkpoint": r.checkpoint_file.name, "checkpoint_sha256": sha256_file(r.checkpoint_file),
                   "model_name": r.checkpoint["model_name"], "pretrained": r.checkpoint["pretrained"],
                   "backbone_fingerprint": r.checkpoint["backbone_fingerprint"]},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def file_hashes(tmp: Path) -> dict[str, str]:
    """The manifest's `files`: every file of the assembled bundle by its relative path, with its
    sha256 (TensorRT's timing cache is a build aid, not a bundle file)."""
    return {p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != "timing.cache"}
