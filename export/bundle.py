"""`stpr.export`: a run directory -> a self-contained bundle (the device-side contract).

Each step is one function that returns the manifest fields of what it wrote, timed and
logged (`result.timed_step`): StPR's files (`stpr_files`), the text and frozen image
towers (`text_export.write_text`), the head's files (`head_files`), the precision
variants (`variant_files`), then the checks on the assembled bundle (`bundle_checks`:
parity, open-set) and the manifest (`metadata`). The bundle is assembled in a temp folder
beside the target and renamed into place only after parity passes, so an interrupted or
failed export never leaves a bundle that looks valid.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from stpr.runtime.atomic import atomic_write_json, make_temp_dir
from stpr.runtime.bundle.bundle_dir import prepare_target, remove_stale_temp, swap_into_place
from stpr.runtime.bundle.manifest import BundleError, seal_manifest
from stpr.runtime.contract import BUNDLE_ROUTING_MODES, MANIFEST_NAME, PARITY_FILE
from stpr.train.errors import StprError
from stpr.train.restore import restore

from .bundle_checks import run_parity, write_openset
from .head_files import write_head
from .metadata import base_metadata, file_hashes
from .onnx_export import MIN_OPSET, max_opset
from .result import ExportResult, timed_step
from .stpr_files import serves_stpr, write_arrays, write_onnx
from .text_export import write_text
from .variant_files import write_engines, write_fp16, write_fused


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
        from stpr.runtime.engine.trt_build import import_tensorrt

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
    with timed_step(res, "restore"):
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
        manifest["files"] = file_hashes(tmp)
        manifest = seal_manifest(manifest)
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res.files = {name: out / name for name in manifest["files"]} | {MANIFEST_NAME: out / MANIFEST_NAME}
    res.manifest = manifest
    return res
