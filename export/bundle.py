"""`stpr.export`: a run directory -> a self-contained bundle (the device-side contract).

Each step is one function that returns what it wrote, timed and logged. The bundle
is assembled in a temp folder beside the target and renamed into place only after
parity passes, so an interrupted or failed export never leaves a bundle that looks
valid.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata as md
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from stpr.runtime.analytic import PROJECTION_GENERATOR, projection_sha256
from stpr.runtime.atomic import atomic_write_json, make_temp_dir
from stpr.runtime.bundle_dir import prepare_target, remove_stale_temp, swap_into_place
from stpr.runtime.contract import (
    ANCHORS_FILE,
    BACKBONE_FILE,
    BUNDLE_ROUTING_MODES,
    CLIP_IMAGE_FILE,
    EXPERT_INPUT,
    FUSED_FILE,
    FUSED_KEY,
    HEAD_SUBSPACE_FILE,
    HEAD_TOWER_FILE,
    HEAD_WEIGHTS_FILE,
    MANIFEST_NAME,
    OPENSET_FILE,
    PARITY_FILE,
    ROUTING_ANCHORS,
    TD_CALIBRATION_FILE,
    TEXT_EMBEDDINGS_FILE,
    TEXT_TOWER_FILE,
    TOKENIZER_FILE,
    TOWER_INPUT,
    expert_file,
    fp16_twin,
    pack_td_calibration,
)
from stpr.runtime.head_sums import HeadSums, save_sums, sums_section
from stpr.runtime.manifest import SCHEMA_VERSION, BundleError, seal_manifest, sha256_file
from stpr.runtime.openset import head_subspace
from stpr.train.config import routing_tau
from stpr.train.errors import StprError
from stpr.train.restore import Restored, restore

from . import parity
from .calibrate import unknown_section
from .fp16 import to_fp16
from .fuse import fuse_experts
from .head_only import STORED_SUMS_TOLERANCE, check_stored_sums  # noqa: F401 (one rule, both exports)
from .int8 import to_int8
from .onnx_export import MIN_OPSET, export_backbone, export_expert, finish_onnx, max_opset
from .openset import head_openset_report, openset_report
from .text_export import (
    export_text_tower,
    text_manifest,
    text_parity,
    text_problems,
    write_tokenizer,
)

PLAIN_TOWERS_FP16_KEEP_FP32 = ("Transpose",)

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    bundle: Path
    files: dict[str, Path] = field(default_factory=dict)  # bundle file name -> final path
    parity: dict[str, Any] = field(default_factory=dict)
    openset: dict[str, Any] = field(default_factory=dict)  # empty: no open-set calibration
    manifest: dict[str, Any] = field(default_factory=dict)  # the bundle's sealed manifest
    timings_s: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def _step(result: ExportResult, name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    result.timings_s[name] = round(time.perf_counter() - t0, 3)
    log.info("export step %s: %.2fs", name, result.timings_s[name])


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in ("stpr", "torch", "open_clip_torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt"):
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
        "tools": _versions(),
        "source": {"run_dir": str(r.checkpoint_file.parent.parent.resolve()), "task": r.task,
                   "checkpoint": r.checkpoint_file.name, "checkpoint_sha256": sha256_file(r.checkpoint_file),
                   "model_name": r.checkpoint["model_name"], "pretrained": r.checkpoint["pretrained"],
                   "backbone_fingerprint": r.checkpoint["backbone_fingerprint"]},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def serves_stpr(r: Restored, stpr_files: bool) -> bool:
    """Whether the bundle ships StPR's adapted backbone and experts: every mode but the head
    alone runs them; for the head alone they are dead weight, shipped only on request."""
    return r.learner.head is None or r.cfg.head.mode != "alone" or stpr_files


def write_onnx(r: Restored, tmp: Path, meta: dict[str, Any], opset: int, res: ExportResult) -> dict[str, Any]:
    m = r.learner.model
    with _step(res, BACKBONE_FILE):
        finish_onnx(export_backbone(m.backbone, tmp / BACKBONE_FILE, r.preprocess.size, opset), meta)
    experts = []
    for k, expert in enumerate(m.experts):
        with _step(res, expert_file(k)):
            finish_onnx(export_expert(expert, tmp / expert_file(k), m.dim, opset), meta)
        experts.append(expert_file(k))
    return {"backbone": BACKBONE_FILE, "experts": experts}


def write_arrays(r: Restored, tmp: Path, res: ExportResult) -> dict[str, Any]:
    m, mode = r.learner.model, r.cfg.method.routing
    anchors = {"adapter": m.proto_adapter, "td": m.td_anchors}.get(mode, m.td_raw_anchors)
    out: dict[str, Any] = {"text_embeddings": TEXT_EMBEDDINGS_FILE, "anchors": ANCHORS_FILE}

    def save(name: str, a: np.ndarray) -> None:
        np.save(tmp / name, np.asarray(a, dtype=np.float32), allow_pickle=False)

    def numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().float().numpy()

    with _step(res, "arrays"):
        save(TEXT_EMBEDDINGS_FILE, numpy(m.text_embeddings))
        save(ANCHORS_FILE, numpy(anchors))
        if mode == "td":  # the calibrated router's per-expert statistics, unpacked by the runtime's contract
            save(TD_CALIBRATION_FILE, pack_td_calibration(numpy(m.td_center), numpy(m.td_var),
                                                          numpy(m.td_score_mean), numpy(m.td_score_std)))
            out["td_calibration"] = TD_CALIBRATION_FILE
    return out


def write_fp16(tmp: Path, names: dict[str, Any], res: ExportResult) -> dict[str, Any]:
    if "backbone" not in names:  # a head-alone bundle: the head writes its tower's twin
        return {}
    out: dict[str, Any] = {"experts_fp16": []}
    with _step(res, "fp16"):
        out["backbone_fp16"] = to_fp16(tmp / names["backbone"], tmp / fp16_twin(BACKBONE_FILE)).name
        for e in names["experts"]:
            out["experts_fp16"].append(to_fp16(tmp / e, tmp / fp16_twin(e)).name)
    return out


def write_fused(tmp: Path, names: dict[str, Any], int8: bool, res: ExportResult) -> dict[str, Any]:
    """The fused experts graph of each precision present, built from the per-expert files."""
    out: dict[str, Any] = {}
    if "experts" not in names:  # a head-alone bundle ships no expert
        return out
    with _step(res, "experts fused"):
        out[FUSED_KEY["fp32"]] = fuse_experts([tmp / e for e in names["experts"]], tmp / FUSED_FILE["fp32"]).name
        if "experts_fp16" in names:
            out[FUSED_KEY["fp16"]] = fuse_experts([tmp / e for e in names["experts_fp16"]],
                                                  tmp / FUSED_FILE["fp16"]).name
    if int8:
        with _step(res, "experts int8"):
            out[FUSED_KEY["int8"]] = to_int8(tmp / out[FUSED_KEY["fp32"]], tmp / FUSED_FILE["int8"]).name
    return out


def write_engines(tmp: Path, manifest: dict[str, Any], res: ExportResult) -> dict[str, Any]:
    """TensorRT engines from the fp16 ONNX, named by GPU and TensorRT version."""
    from stpr.runtime.trt_build import EngineSpec, build_engine

    T, D = manifest["dims"]["T"], manifest["dims"]["D"]
    size = manifest["preprocess"]["size"]
    engines, cache = {}, tmp / "engines" / "timing.cache"
    towers = [manifest[k] for k in ("backbone_fp16",) if k in manifest]
    towers += [t for t in [manifest.get("head", {}).get("tower_fp16")] if t and t not in towers]
    experts = [*manifest.get("experts_fp16", []), *([manifest[FUSED_KEY["fp16"]]] if FUSED_KEY["fp16"] in manifest
                                                    else [])]
    with _step(res, "engines"):
        specs = [EngineSpec(tmp / t, TOWER_INPUT, (1, 3, size, size), (T, 3, size, size), (4 * T, 3, size, size),
                            fp16=True) for t in towers]
        specs += [EngineSpec(tmp / e, EXPERT_INPUT, (1, T, D), (1, T, D), (8, T, D), fp16=True) for e in experts]
        for spec in specs:
            engines[spec.onnx_path.name] = str(build_engine(spec, tmp / "engines", cache).relative_to(tmp))
    return {"engines": engines}


def write_text(r: Restored, tmp: Path, meta: dict[str, Any], opset: int, fp16: bool,
               res: ExportResult) -> dict[str, Any]:
    """The frozen text tower (and its fp16 twin), the tokenizer and the run's prompt templates:
    what `stpr-classes` needs to add a class by name on the device."""
    clip = r.learner.clip_model
    with _step(res, "text tower"):
        finish_onnx(export_text_tower(clip, tmp / TEXT_TOWER_FILE, opset), meta)
        write_tokenizer(tmp / TOKENIZER_FILE)
        # The frozen image tower without adapters: the adapters, trained on the seen classes
        # only, erase what the tower knew of unseen ones (docs/results.md, "Zero-shot").
        finish_onnx(export_backbone(r.learner.model.backbone, tmp / CLIP_IMAGE_FILE, r.preprocess.size, opset,
                                    adapters=False), meta)
        # Transpose stays float32: onnxruntime's transpose optimiser crashes (SIGSEGV) on the
        # plain towers' fp16 attention transposes when it loads the graph (1.32 here).
        half = {"tower_fp16": to_fp16(tmp / TEXT_TOWER_FILE, tmp / fp16_twin(TEXT_TOWER_FILE),
                                      keep_fp32=PLAIN_TOWERS_FP16_KEEP_FP32).name,
                "image_tower_fp16": to_fp16(tmp / CLIP_IMAGE_FILE, tmp / fp16_twin(CLIP_IMAGE_FILE),
                                            keep_fp32=PLAIN_TOWERS_FP16_KEEP_FP32).name} if fp16 else {}
    return {"text": {**text_manifest(clip, r.cfg.model.templates), **half}}


def write_head(r: Restored, tmp: Path, manifest: dict[str, Any], meta: dict[str, Any], opset: int, fp16: bool,
               res: ExportResult, sums: str | None = "float64") -> dict[str, Any]:
    """The analytic head: its weights, the seed and hash of its projection, its tower and
    (unless `sums` is None) its sums, which `stpr-learn` needs (docs/bundle.md, `head`). The
    tower is a file the bundle already holds where it can be: the frozen image tower
    (`clip_backbone.onnx`) or, for the head alone on the adapted tower, StPR's own backbone
    (the adapters stop changing after the base task)."""
    learner, cfg = r.learner, r.cfg.head
    head = learner.head
    with _step(res, "head"):
        np.save(tmp / HEAD_WEIGHTS_FILE, head.weights.numpy().astype(np.float32), allow_pickle=False)
        fp16_name = None
        if cfg.tower == "frozen":
            tower = CLIP_IMAGE_FILE
            if not (tmp / tower).exists():  # exported with --no-text
                finish_onnx(export_backbone(learner.model.backbone, tmp / tower, r.preprocess.size, opset,
                                            adapters=False), meta)
            if fp16:
                fp16_name = manifest.get("text", {}).get("image_tower_fp16") or to_fp16(
                    tmp / tower, tmp / fp16_twin(tower), keep_fp32=PLAIN_TOWERS_FP16_KEEP_FP32).name
        elif cfg.mode == "alone" and "backbone" in manifest:
            tower, fp16_name = manifest["backbone"], manifest.get("backbone_fp16")
        else:  # beside StPR, or alone in a bundle without StPR's backbone: a tower file of its own
            tower = HEAD_TOWER_FILE
            # the head alone reads the adapters as they are (they stop changing after the base task)
            adapters = True if cfg.mode == "alone" else learner.head_adapters
            finish_onnx(export_backbone(learner.model.backbone, tmp / tower, r.preprocess.size, opset,
                                        adapters=adapters), meta)
            if fp16:
                fp16_name = to_fp16(tmp / tower, tmp / fp16_twin(tower)).name
    proj = head.projection.numpy()
    section = {
        "mode": cfg.mode, "tower": cfg.tower, "tower_file": tower, "frame_order": "oldest-first", "frame_norm": "l2",
        "projection": {"generator": PROJECTION_GENERATOR, "seed": head.seed, "in_dim": head.in_dim,
                       "out_dim": head.dim, "sha256": projection_sha256(proj)},
        "weights": HEAD_WEIGHTS_FILE, "lambda": float(head.lam), "balance": head.balance, "crops": cfg.crops,
        "views": cfg.views,
        "tau": float(cfg.tau), "fuse_weight": float(cfg.fuse_weight),
    }
    if fp16_name:
        section["tower_fp16"] = fp16_name
    if sums is not None:
        with _step(res, "head sums"):
            held = HeadSums(gram=head.gram.numpy(), cross=head.cross.numpy(), counts=head.counts.numpy(),
                            n_ref=float(head.n_ref), lam=float(head.lam), balance=head.balance, dtype=sums)
            check_stored_sums(held)
            save_sums(tmp, held)
            section["sums"] = sums_section(held, manifest["classes"])[0]
    return {"head": section}


def export_run(
    run_dir: str | Path, out: str | Path, *, fp16: bool = False, task: int | None = None,
    opset: int = MIN_OPSET, engine: bool = False, force: bool = False, parity_clips: int = 16,
    int8: bool = False, text: bool = True, head_sums: str | None = "float64", stpr_files: bool = False,
) -> ExportResult:
    """Export the model after `task` (default: the last) of `run_dir` to the bundle `out`.
    `text=False` leaves out what adding classes by name needs (text tower, frozen image
    tower, tokenizer): a smaller bundle that cannot add classes on the device.
    `head_sums` stores the analytic head's sums at that precision (None: not at all, a
    smaller bundle that `stpr-learn` refuses). A head-alone run's bundle ships only what the
    head serves; `stpr_files` adds StPR's adapted backbone and experts (parity-checked too)."""
    out = Path(out)
    if opset < MIN_OPSET:
        raise StprError(f"--opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
    if opset > max_opset():
        raise StprError(f"--opset {opset} is newer than this torch exports; give {MIN_OPSET} to {max_opset()}")
    if parity_clips < 1:
        raise StprError(f"--parity-clips {parity_clips}: the parity check needs at least 1 clip (default 16)")
    if engine and not fp16:
        raise StprError("--engine builds TensorRT engines from the fp16 ONNX; pass --fp16 with it")
    if engine:
        from stpr.runtime.trt_build import import_tensorrt

        try:
            import_tensorrt()
        except Exception as e:
            raise StprError(f"--engine needs TensorRT here: {e}\nWithout --engine, `stpr-run --backend trt` "
                            "builds the engines on the device at first start.") from None
    try:
        prepare_target(out, force)
    except BundleError as e:
        raise StprError(str(e)) from None
    res = ExportResult(bundle=out)
    with _step(res, "restore"):
        r = restore(run_dir, task)
    if r.cfg.method.routing not in BUNDLE_ROUTING_MODES:
        raise StprError(f"the run routes with {r.cfg.method.routing!r}, which a bundle cannot run "
                        f"(valid: {', '.join(BUNDLE_ROUTING_MODES)}); retrain or evaluate with --routing td")
    stpr = serves_stpr(r, stpr_files)
    if int8 and not stpr:
        raise StprError("--int8 writes int8 experts, and a head-alone bundle ships no expert; add --stpr-files "
                        "to ship StPR's files too, or drop --int8")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(out)
    # The pid in the name tells a later export whether this folder's owner is still alive.
    tmp = make_temp_dir(out.parent, f".tmp-{out.name}-{os.getpid()}-")
    try:
        meta = base_metadata(r, opset)
        manifest = {**meta, **(write_onnx(r, tmp, meta, opset, res) if stpr else {}), **write_arrays(r, tmp, res)}
        if text:
            manifest.update(write_text(r, tmp, meta, opset, fp16, res))
        if fp16:
            manifest.update(write_fp16(tmp, manifest, res))
        if r.learner.head is not None:
            manifest.update(write_head(r, tmp, manifest, meta, opset, fp16, res, head_sums))
        manifest.update(write_fused(tmp, manifest, int8, res))
        if engine:
            manifest.update(write_engines(tmp, manifest, res))
        res.parity = run_parity(r, tmp, manifest, parity_clips, res)
        atomic_write_json(tmp / PARITY_FILE, res.parity)
        manifest.update(write_openset(r, tmp, manifest, res))
        manifest["files"] = {p.relative_to(tmp).as_posix(): sha256_file(p)
                             for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != "timing.cache"}
        manifest = seal_manifest(manifest)
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res.files = {name: out / name for name in manifest["files"]} | {MANIFEST_NAME: out / MANIFEST_NAME}
    res.manifest = manifest
    return res


def run_parity(r: Restored, tmp: Path, manifest: dict[str, Any], count: int, res: ExportResult) -> dict[str, Any]:
    """PyTorch against every variant in the bundle (fp32, fp16, int8; per expert and fused)."""
    with _step(res, "parity"):
        clips, source = parity.parity_clips(r, count)
        ref = parity.torch_outputs(r, clips)
        report: dict[str, Any] = {"clips": int(clips.shape[0]), "source": source,
                                  "thresholds": {"fp32_min_top1_agreement": parity.FP32_MIN_AGREEMENT,
                                                 "fp32_max_feature_abs_diff": parity.FP32_MAX_FEATURE_DIFF,
                                                 "fp16_min_top1_agreement": parity.FP16_MIN_AGREEMENT,
                                                 "int8_min_top1_agreement": parity.INT8_MIN_AGREEMENT}}
        for name, got in parity.onnx_outputs(tmp, manifest, clips.numpy()).items():
            report[name] = parity.compare(ref, got)
        if "head" in manifest:
            report.update(parity.head_parity(r, tmp, manifest, clips))
        problems = parity.check(report)
        if "text" in manifest:
            report["text_tower"] = text_parity(r, tmp, manifest["text"])
            problems += text_problems(report["text_tower"])
        report["passed"] = not problems
    gated = {k: v for k, v in report.items() if isinstance(v, dict) and "top1_agreement" in v}
    log.debug("parity: %s", json.dumps(gated))  # the command prints each variant's line
    if problems:
        raise StprError("export failed its parity check: " + "; ".join(problems) +
                        " (see the numbers above; nothing was written)")
    return report


def write_openset(r: Restored, tmp: Path, manifest: dict[str, Any], res: ExportResult) -> dict[str, Any]:
    """`openset.json` and the manifest's `unknown` field (score, calibrated threshold);
    nothing when the run's held-out clips cannot be read here."""
    extra: dict[str, Any] = {}
    with _step(res, "openset"):
        if "head" in manifest:  # the head's own scores (runtime/openset.py), from G's subspace
            subspace, tail_inverse = head_subspace(r.learner.head.gram.numpy(), float(r.learner.head.lam))
            report = head_openset_report(r, tmp, manifest, subspace, tail_inverse)
            if report is not None:
                np.save(tmp / HEAD_SUBSPACE_FILE, subspace, allow_pickle=False)
                extra = {"subspace": HEAD_SUBSPACE_FILE, "tail_inverse": tail_inverse}
        else:
            report = openset_report(r, tmp, manifest)
    if report is None:
        return {}
    res.openset = report
    atomic_write_json(tmp / OPENSET_FILE, report)
    return {"unknown": unknown_section(report, extra)}
