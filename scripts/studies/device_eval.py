#!/usr/bin/env python3
"""A bundle on fresh synthetic clips, through the device's own code with torch blocked. Prints JSON.

Renders a fresh test set of the bundle's classes (a seed the run never used) as MJPG
videos, each action lasting L frames for every L of --lengths (training's clips are T
frames: longer L is slower motion, shorter L faster). Then, in a child process where
`import torch` fails, it runs:

- `--clip` (what `stpr-run --clip` runs: decode, TSN segment centres, classify), whose
  accuracy is compared with the run's own test Acc from metrics.json;
- streaming (what `stpr-run` runs: one tower pass per frame into the ring), with the
  still scene of the clip's first frame before it, as a camera would see it, scored at the step whose
  window ends on the clip's last frame, at `--stride 1` and at the matched stride
  `max(1, round(L / T))` (the window then spans the action as TSN spans a clip).

The parent also runs the PyTorch model on the same L = T clips and reports how often the
device's top-1 agrees with it.

    python scripts/studies/device_eval.py --bundle bundles/demo [--lengths 4 8 16 32] [--per-class 8]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys
sys.modules["torch"] = None  # as on a device without torch: any import of it fails here
from pathlib import Path
import numpy as np
from stpr.runtime.cli.app import classify_clip
from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.io.clip import clip_frames
from stpr.runtime.model.preprocess import preprocess
from stpr.runtime.engine.recognizer import Recognizer
from stpr.runtime.model.sampling import centre_indices
from stpr.runtime.io.stream import open_capture

root, lengths = Path(sys.argv[2]), json.loads(sys.argv[3])
labels = json.loads((root / "labels.json").read_text())
b = load_bundle(sys.argv[1])
T, out = b.frames, {}
with Recognizer(b) as rec:
    for L in lengths:
        clip_top, stream_top = [], {"stride_1": [], "matched": []}
        for name, label in labels[str(L)].items():
            path = str(root / name)
            frames, n = clip_frames(lambda: open_capture(path), path, T)
            clip_top.append(classify_clip(rec, frames, 1, int(centre_indices(n, T)[-1]))["top"][0][0])
            cap, video = open_capture(path), []
            while (got := cap.read())[0]:
                video.append(got[1])
            cap.release()
            feats = rec.frame_features(np.stack([preprocess(f, b.size, b.mean, b.std) for f in video]))
            for key, s in (("stride_1", 1), ("matched", max(1, round(L / T)))):
                # the ring after the clip's last frame: T features s frames apart; before the clip the
                # camera saw the still scene of its first frame (index clamped to 0)
                idx = np.maximum(len(feats) - 1 - s * np.arange(T)[::-1], 0)
                probs = rec.classify(feats[idx][None])["probs"][0]
                stream_top[key].append(rec.names[int(probs.argmax())])
        truth = list(labels[str(L)].values())
        acc = lambda tops: 100.0 * float(np.mean([t == y for t, y in zip(tops, truth)]))
        out[L] = {"clips": len(truth), "clip_acc": acc(clip_top), "stream_acc_stride_1": acc(stream_top["stride_1"]),
                  "stream_acc_matched_stride": acc(stream_top["matched"]), "matched_stride": max(1, round(L / T)),
                  "clip_top1": clip_top}
print(json.dumps(out))
"""


def render(root: Path, classes: list[str], lengths: list[int], per_class: int, seed: int, size: int) -> None:
    """One MJPG video per clip: `root/L<length>_<index>.avi`, labels in `root/labels.json`."""
    import cv2

    from stpr.train.data.synthetic import SyntheticActions

    shapes = sorted({c.split("_moving_")[0] for c in classes})
    motions = sorted({"moving_" + c.split("_moving_")[1] for c in classes})
    labels: dict[str, dict[str, str]] = {}
    for L in lengths:
        ds = SyntheticActions("test", num_frames=L, image_size=size, clips_per_class=per_class, seed=seed,
                              shapes=shapes, motions=motions)
        labels[str(L)] = {}
        for i, t in enumerate(ds.targets):
            if ds.classes[t] not in classes:
                continue
            clip = ds.raw_clip(i)
            name = f"L{L}_{i:04d}.avi"
            w = cv2.VideoWriter(str(root / name), cv2.VideoWriter_fourcc(*"MJPG"), 8, (size, size))
            for f in clip:
                w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            w.release()
            labels[str(L)][name] = ds.classes[t]
    (root / "labels.json").write_text(json.dumps(labels))


def torch_top1(bundle: Path, root: Path, L: int) -> list[str]:
    """The training side's prediction (PyTorch, the run the bundle came from) on the same videos."""
    import torch

    from stpr.export.parity import torch_head_outputs, torch_outputs
    from stpr.runtime.io.clip import clip_frames
    from stpr.runtime.io.stream import open_capture
    from stpr.runtime.model.preprocess import preprocess
    from stpr.train.restore import restore

    manifest = json.loads((bundle / "manifest.json").read_text())
    r = restore(manifest["source"]["run_dir"], manifest["source"]["task"])
    labels = json.loads((root / "labels.json").read_text())[str(L)]
    pp, T = r.preprocess, r.cfg.data.num_frames
    tops = []
    for name in labels:
        frames, _ = clip_frames(lambda: open_capture(str(root / name)), name, T)
        x = torch.from_numpy(np.stack([preprocess(f, pp.size, np.array(pp.mean, np.float32),
                                                  np.array(pp.std, np.float32)) for f in frames]))[None]
        # the export's own PyTorch reference: StPR's logits, or the head's mode probabilities
        ref = torch_head_outputs(r, x) if r.learner.head is not None else torch_outputs(r, x)
        logits = ref["logits"]
        tops.append(manifest["classes"][int(logits.argmax())])
    return tops


EPILOG = """Prints one JSON object: per clip length the device's --clip and streaming accuracy, and its
agreement with PyTorch. Takes about 2 min on this machine (2 CPU cores) on the demo's bundle
with the defaults (an estimate: 640 short synthetic videos rendered, then classified three ways
in a torch-free child)."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--lengths", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--seed", type=int, default=12345, help="a seed the run never used: fresh clips")
    args = p.parse_args(argv)
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    T = manifest["dims"]["T"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        render(root, manifest["classes"], args.lengths, args.per_class, args.seed, manifest["preprocess"]["size"])
        child = subprocess.run([sys.executable, "-c", CHILD, str(args.bundle), str(root), json.dumps(args.lengths)],
                               capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"device_eval: the torch-free child failed:\n{child.stderr[-3000:]}")
        device = json.loads(child.stdout)
        agree = None
        if T in args.lengths:
            ref = torch_top1(args.bundle, root, T)
            agree = 100.0 * float(np.mean([a == b for a, b in zip(ref, device[str(T)]["clip_top1"])]))
    metrics = json.loads((Path(manifest["source"]["run_dir"]) / "metrics.json").read_text())
    for v in device.values():
        v.pop("clip_top1")
    print(json.dumps({"bundle": str(args.bundle), "training_test_acc": metrics["acc"], "T": T,
                      "device_vs_pytorch_top1_agreement_at_L=T": agree, "per_length": device}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
