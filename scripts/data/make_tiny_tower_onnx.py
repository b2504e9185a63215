"""Write the packaged tiny tower as ONNX, for the torch-free head (`stpr-train --head alone`
with only the base install): `train/pretrained/stpr-tiny-synthetic-shapes.onnx`, the frozen
image tower of the packaged safetensors (no adapters), and its sha256 into registry.json.

    python scripts/data/make_tiny_tower_onnx.py          # needs the [export] extra, once

The file is the one `stpr-export` writes as `clip_backbone.onnx` for a demo run:
frames `(N, 3, 32, 32)`, normalised -> features `(N, D)`. Its preprocessing (size, mean,
std) goes into the registry entry beside it, so the torch-free side needs no open_clip.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

MODEL, TAG = "stpr-tiny", "synthetic-shapes"


EPILOG = """Prints one JSON line: the ONNX file, its bytes and its largest difference to the PyTorch tower;
writes it and its sha256 into train/pretrained/. Takes about 30 s on this machine (2 CPU cores),
mostly importing torch."""


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG).parse_args()
    import numpy as np  # after parsing: --help answers without loading torch
    import torch

    from stpr.export.onnx_export import export_backbone, finish_onnx
    from stpr.runtime.atomic import atomic_write_bytes, atomic_write_json
    from stpr.runtime.bundle.manifest import sha256_file
    from stpr.train.model.backbone import AdaptedVisionTower
    from stpr.train.model.clip_tower import load_clip
    from stpr.train.pretrained import PACKAGE_DIR, REGISTRY

    clip, pp = load_clip(MODEL, TAG)
    tower = AdaptedVisionTower(clip.visual).eval()
    name = f"{MODEL}-{TAG}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        finish_onnx(export_backbone(tower, path, pp.size, adapters=False), {"source": f"{MODEL}:{TAG}"})
        # The exported graph must give the PyTorch tower's features before it ships.
        import onnxruntime as ort

        x = torch.randn(4, 3, pp.size, pp.size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = tower(x, adapters=False).numpy()
        got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"frames": x.numpy()})[0]
        gap = float(np.abs(got - ref).max())
        if gap > 1e-4:
            sys.exit(f"the ONNX tower differs from PyTorch by {gap:.2g}; not written")
        atomic_write_bytes(PACKAGE_DIR / name, path.read_bytes())
    entries = json.loads(REGISTRY.read_text())
    for e in entries:
        if e["model"] == MODEL and e["tag"] == TAG:
            e["onnx"] = {"file": name, "sha256": sha256_file(PACKAGE_DIR / name), "size": pp.size,
                         "mean": list(pp.mean), "std": list(pp.std), "dim": int(ref.shape[1]),
                         "max_abs_diff_to_torch": gap}
    atomic_write_json(REGISTRY, entries)
    print(json.dumps({"file": name, "bytes": (PACKAGE_DIR / name).stat().st_size, "max_abs_diff": gap}))


if __name__ == "__main__":
    main()
