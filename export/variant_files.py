"""The precision variants of the ONNX files a bundle already holds: fp16 twins, the fused
experts graph (fp32, fp16, int8) and TensorRT engines built from the fp16 graphs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from stpr.runtime.contract import BACKBONE_FILE, EXPERT_INPUT, FUSED_FILE, FUSED_KEY, TOWER_INPUT, fp16_twin

from .fp16 import to_fp16
from .fuse import fuse_experts
from .int8 import to_int8
from .result import ExportResult, timed_step


def write_fp16(tmp: Path, names: dict[str, Any], res: ExportResult) -> dict[str, Any]:
    if "backbone" not in names:  # a head-alone bundle: the head writes its tower's twin
        return {}
    out: dict[str, Any] = {"experts_fp16": []}
    with timed_step(res, "fp16"):
        out["backbone_fp16"] = to_fp16(tmp / names["backbone"], tmp / fp16_twin(BACKBONE_FILE)).name
        for e in names["experts"]:
            out["experts_fp16"].append(to_fp16(tmp / e, tmp / fp16_twin(e)).name)
    return out


def write_fused(tmp: Path, names: dict[str, Any], int8: bool, res: ExportResult) -> dict[str, Any]:
    """The fused experts graph of each precision present, built from the per-expert files."""
    out: dict[str, Any] = {}
    if "experts" not in names:  # a head-alone bundle ships no expert
        return out
    with timed_step(res, "experts fused"):
        out[FUSED_KEY["fp32"]] = fuse_experts([tmp / e for e in names["experts"]], tmp / FUSED_FILE["fp32"]).name
        if "experts_fp16" in names:
            out[FUSED_KEY["fp16"]] = fuse_experts([tmp / e for e in names["experts_fp16"]],
                                                  tmp / FUSED_FILE["fp16"]).name
    if int8:
        with timed_step(res, "experts int8"):
            out[FUSED_KEY["int8"]] = to_int8(tmp / out[FUSED_KEY["fp32"]], tmp / FUSED_FILE["int8"]).name
    return out


def write_engines(tmp: Path, manifest: dict[str, Any], res: ExportResult) -> dict[str, Any]:
    """TensorRT engines from the fp16 ONNX, named by GPU and TensorRT version."""
    from stpr.runtime.engine.trt_build import EngineSpec, build_engine

    T, D = manifest["dims"]["T"], manifest["dims"]["D"]
    size = manifest["preprocess"]["size"]
    engines, cache = {}, tmp / "engines" / "timing.cache"
    towers = [manifest[k] for k in ("backbone_fp16",) if k in manifest]
    towers += [t for t in [manifest.get("head", {}).get("tower_fp16")] if t and t not in towers]
    experts = [*manifest.get("experts_fp16", []), *([manifest[FUSED_KEY["fp16"]]] if FUSED_KEY["fp16"] in manifest
                                                    else [])]
    with timed_step(res, "engines"):
        specs = [EngineSpec(tmp / t, TOWER_INPUT, (1, 3, size, size), (T, 3, size, size), (4 * T, 3, size, size),
                            fp16=True) for t in towers]
        specs += [EngineSpec(tmp / e, EXPERT_INPUT, (1, T, D), (1, T, D), (8, T, D), fp16=True) for e in experts]
        for spec in specs:
            engines[spec.onnx_path.name] = str(build_engine(spec, tmp / "engines", cache).relative_to(tmp))
    return {"engines": engines}
