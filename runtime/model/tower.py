"""Any ONNX image tower: frames `(N, 3, H, W)` -> frame features `(N, D)`, checked at load.

The analytic head needs only a tower's frame features (docs/method.md, "The analytic head"),
so any image encoder exported to ONNX can serve it: `stpr-train --tower FILE.onnx`, and the
bundle carries the file with its preprocessing (docs/towers.md). A tower whose output has
more than two axes is pooled, by a rule decided from its rank and written into the bundle so
the device pools alike: `(N, L, D)` token outputs by their mean over L, `(N, D, h, w)` maps
(channels first, ONNX's layout) by their mean over h and w.

torch-free: training without torch, `stpr-export` of such a run and `stpr-run` all use it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError

POOL_RULES = ("none", "mean-tokens", "mean-spatial")  # by output rank: 2, 3 (N, L, D), 4 (N, D, h, w)
_POOL_OF_RANK = {2: "none", 3: "mean-tokens", 4: "mean-spatial"}
PROBE_BATCH = 2  # frames in the load-time check: a batch axis fixed to 1 is caught too


@dataclass(frozen=True)
class TowerSpec:
    """An ONNX tower file and how frames must be prepared for it."""
    file: Path
    size: int  # square input side in pixels (frames are resized, centre-cropped to it)
    mean: tuple[float, float, float]  # per-channel RGB mean on [0, 1] pixels
    std: tuple[float, float, float]


@dataclass(frozen=True)
class TowerIO:
    """What a loaded tower is: its tensor names, how its output is pooled, its width D."""
    input: str
    output: str
    pool: str  # one of POOL_RULES
    dim: int


def sidecar(file: Path) -> Path:
    """The small JSON beside a tower that may give its preprocessing: `x.onnx` -> `x.json`."""
    return file.with_suffix(".json")


def _channels(value: Any, name: str, positive: bool, source: str) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        for v in value)
    if not ok:
        need = "3 finite numbers > 0" if positive else "3 finite numbers"
        raise BundleError(f"{source} {name} is {value!r}: give {need} (R, G, B), e.g. "
                          f"--tower-{name} {'0.229,0.224,0.225' if positive else '0.485,0.456,0.406'}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def tower_spec(file: str | Path, size: int | None = None, mean: Any = None, std: Any = None) -> TowerSpec:
    """The tower `file` with its preprocessing: the values given, else those in the JSON
    beside it (`sidecar`); a `BundleError` naming what is missing and how to give it."""
    file = Path(file)
    if file.suffix != ".onnx" or not file.is_file():
        raise BundleError(f"--tower {str(file)!r} is not an .onnx file; export your encoder to ONNX "
                          "(docs/towers.md) and pass its path")
    side: dict[str, Any] = {}
    js = sidecar(file)
    if js.is_file():
        try:
            side = json.loads(js.read_text())
        except ValueError as e:
            raise BundleError(f"{str(js)!r} is not valid JSON ({e}); fix it or pass --tower-size, "
                              "--tower-mean and --tower-std") from None
        if not isinstance(side, dict):
            raise BundleError(f"{str(js)!r} must be an object with size, mean and std")
    source = f"--tower {file.name}:"
    size = size if size is not None else side.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise BundleError(f"{source} input size is {size!r}: pass --tower-size (the side the encoder was trained "
                          f"at, e.g. 224) or write it into {js.name}")
    if mean is None and "mean" not in side or std is None and "std" not in side:
        raise BundleError(f"{source} its normalisation is not given: pass --tower-mean and --tower-std (3 values "
                          f"each, on [0, 1] pixels) or write them into {js.name}")
    return TowerSpec(file=file, size=int(size),
                     mean=_channels(mean if mean is not None else side["mean"], "mean", False, source),
                     std=_channels(std if std is not None else side["std"], "std", True, source))


def pool_features(out: np.ndarray, pool: str) -> np.ndarray:
    """A tower's raw output -> `(N, D)` float32 by the rule `pool`."""
    if pool == "mean-tokens":
        out = out.mean(axis=1)
    elif pool == "mean-spatial":
        out = out.mean(axis=(2, 3))
    return np.asarray(out, dtype=np.float32)


def pool_rule(rank: int) -> str | None:
    """The pooling for an output of `rank` axes (None: no rule, the tower is refused)."""
    return _POOL_OF_RANK.get(rank)


def check_tower(session: Any, name: str, size: int) -> TowerIO:
    """A loaded onnxruntime session as an image tower for `size` x `size` frames: one float
    input `(N, 3, H, W)` with N dynamic and H, W equal to `size` where fixed, an output of
    rank 2 to 4, pooled to `(N, D)`; a probe batch must run and give finite features.
    Anything else is a `BundleError` naming the problem and the fix."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise BundleError(f"tower {name!r} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                          "an image tower takes one, frames (N, 3, H, W): export the image encoder alone")
    x = inputs[0]
    shape = list(x.shape)
    if x.type != "tensor(float)" or len(shape) != 4:
        raise BundleError(f"tower {name!r} takes {x.type} {shape}, not float frames (N, 3, H, W); export it with "
                          "a float32 input of 4 axes, channels first")
    if isinstance(shape[0], int) and shape[0] != -1:
        raise BundleError(f"tower {name!r} has a fixed batch of {shape[0]}; export it with a dynamic first axis "
                          "(torch.onnx.export(..., dynamic_axes={'input': {0: 'N'}}))")
    if isinstance(shape[1], int) and shape[1] != 3:
        raise BundleError(f"tower {name!r} takes {shape[1]} channels, not 3 (RGB); export an RGB image encoder")
    fixed = [s for s in shape[2:] if isinstance(s, int) and s > 0]
    if any(s != size for s in fixed):
        raise BundleError(f"tower {name!r} takes {shape[2]}x{shape[3]} frames but its preprocessing size is {size}; "
                          f"pass --tower-size {fixed[0]} (or fix size in its JSON)")
    probe = np.zeros((PROBE_BATCH, 3, size, size), np.float32)
    try:
        raw = session.run([outputs[0].name], {x.name: probe})[0]
    except Exception as e:  # onnxruntime's own error types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise BundleError(f"tower {name!r} fails on frames ({PROBE_BATCH}, 3, {size}, {size}) ({first}); check "
                          "--tower-size against the size it was exported at") from None
    pool = pool_rule(raw.ndim)
    if pool is None or raw.shape[0] != PROBE_BATCH:
        raise BundleError(f"tower {name!r} gives {outputs[0].name} of shape {list(raw.shape)} for "
                          f"{PROBE_BATCH} frames; an image tower gives (N, D), (N, L, D) or (N, D, h, w): "
                          "export the encoder's feature output")
    feats = pool_features(raw, pool)
    if feats.shape[1] < 1 or not np.isfinite(feats).all():
        raise BundleError(f"tower {name!r} gives non-finite or empty features {list(feats.shape)} on a blank "
                          "frame; export it in float32 and check it runs in onnxruntime")
    return TowerIO(input=x.name, output=outputs[0].name, pool=pool, dim=int(feats.shape[1]))


class OnnxTower:
    """An image tower on onnxruntime: `features(frames (N, 3, S, S)) -> (N, D)` float32.
    CPU unless `device='cuda'` (then CUDA or TensorRT providers where present)."""

    def __init__(self, spec: TowerSpec, device: str = "cpu", threads: int = 0) -> None:
        from .backends import OrtRunner

        self.spec = spec
        self.runner = OrtRunner(spec.file, device, threads)
        self.io: TowerIO | None = None

    def __enter__(self) -> "OnnxTower":
        try:
            self.runner.__enter__()
        except BundleError as e:  # OrtRunner words it for a bundle; this is the user's own file
            cause = str(e.__cause__ or e).strip().splitlines() or [type(e).__name__]
            raise BundleError(f"onnxruntime cannot load the tower {str(self.spec.file)!r} ({cause[0][:300]}); "
                              "export the encoder to ONNX again (docs/towers.md)") from None
        try:
            self.io = check_tower(self.runner.session, self.spec.file.name, self.spec.size)
        except BaseException:
            self.runner.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.__exit__(*exc)

    @property
    def dim(self) -> int:
        assert self.io is not None, "enter the tower first"
        return self.io.dim

    def features(self, frames: np.ndarray) -> np.ndarray:
        assert self.io is not None, "enter the tower first"
        return pool_features(self.runner.infer({self.io.input: frames})[self.io.output], self.io.pool)
