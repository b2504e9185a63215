"""Load a bundle for the device: manifest verified, arrays read, shapes checked."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import unpack_td_calibration
from .head_bundle import Head, load_head
from .manifest import BundleError, verify_bundle


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    classes: list[str]
    class_to_expert: np.ndarray  # (C,) int
    text_embeddings: np.ndarray | None  # (C, D) float32; None in a head-only bundle (no StPR)
    anchors: np.ndarray | None  # (C, D) float32; None in a head-only bundle
    routing: str | None  # None in a head-only bundle
    tau: float | None
    calibration: dict[str, np.ndarray] | None  # calibrated td's per-expert statistics
    logit_scale: float | None
    size: int
    mean: np.ndarray  # (3,)
    std: np.ndarray  # (3,)
    frames: int  # T
    dim: int  # D
    unknown: dict[str, Any] | None = None  # manifest's open-set score and threshold; None: not calibrated
    head: Head | None = None  # the analytic head (docs/bundle.md); None: StPR alone

    def model_files(self, fp16: bool) -> tuple[str, list[str]]:
        """(backbone file, expert files) for the chosen precision."""
        if "backbone" not in self.manifest:
            raise BundleError(f"bundle {str(self.path)!r} ships no StPR files (the head alone serves it); export it "
                              "with stpr-export --stpr-files to run StPR")
        if not fp16:
            return self.manifest["backbone"], list(self.manifest["experts"])
        if "backbone_fp16" not in self.manifest:
            raise BundleError(f"bundle {str(self.path)!r} has no fp16 files; re-export it with --fp16 or drop --fp16")
        return self.manifest["backbone_fp16"], list(self.manifest["experts_fp16"])


def _array(path: Path, name: str, field: str) -> np.ndarray:
    """A float array with only finite values: a NaN or inf here would turn every score
    into NaN (and the jsonl into invalid JSON) instead of failing at load."""
    try:
        a = np.load(path / name, allow_pickle=False)
    except ValueError as e:  # pickled or malformed .npy
        raise BundleError(f"bundle file {name!r} ({field}) is not a plain .npy array ({e})") from e
    if not np.issubdtype(a.dtype, np.floating):
        raise BundleError(f"bundle file {name!r} ({field}) holds {a.dtype} values, not floats; re-export the bundle")
    if not np.isfinite(a).all():
        raise BundleError(f"bundle file {name!r} ({field}) holds {int((~np.isfinite(a)).sum())} NaN or inf "
                          "values; re-export the bundle")
    return a


def load_bundle(path: str | Path) -> Bundle:
    """Verify and load; any mismatch is a `BundleError` that names the problem."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle folder {str(path)!r} does not exist; pass the --out folder of stpr-export")
    m = verify_bundle(path)
    dims = m["dims"]
    C, D = dims["C"], dims["D"]  # counts, class->expert range and names: checked by verify_bundle
    pp = m["preprocess"]
    common = dict(path=path, manifest=m, classes=list(m["classes"]),
                  class_to_expert=np.asarray(m["class_to_expert"], dtype=np.int64), size=int(pp["size"]),
                  mean=np.asarray(pp["mean"], np.float32), std=np.asarray(pp["std"], np.float32),
                  frames=int(pp["frames"]), dim=int(D), unknown=m.get("unknown"), head=load_head(path, m, _array))
    if m.get("head_only"):  # the head alone on its own tower: none of StPR's arrays
        return Bundle(text_embeddings=None, anchors=None, routing=None, tau=None, calibration=None,
                      logit_scale=None, **common)
    text = _array(path, m["text_embeddings"], "text_embeddings")
    anchors = _array(path, m["anchors"], "anchors")
    problems = []
    if text.shape != (C, D):
        problems.append(f"text_embeddings is {text.shape}, manifest says ({C}, {D})")
    if anchors.shape != (C, D):
        problems.append(f"anchors is {anchors.shape}, manifest says ({C}, {D})")
    calibration = None
    if m["routing"]["mode"] == "td":  # verify_bundle checked that the manifest names the file
        try:
            arr = _array(path, m["td_calibration"], "td_calibration")
            calibration = unpack_td_calibration(arr, num_experts=dims["K"], dim=D)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise BundleError(f"bundle {str(path)!r} is inconsistent: " + "; ".join(problems) + "; re-export it")
    return Bundle(
        text_embeddings=text.astype(np.float32), anchors=anchors.astype(np.float32),
        routing=m["routing"]["mode"], tau=float(m["routing"]["tau"]), calibration=calibration,
        logit_scale=float(m["logit_scale"]), **common)
