"""Pretrain the demo's tiny CLIP (`stpr-tiny`) on captioned synthetic stills, and package it.

The demo must behave like the real setting: a frozen image tower whose frame features
already carry the static content (which shape, which colour, where), a text tower whose
class names are distinct and meaningful, and motion that no single frame shows. This
trains both towers of `stpr-tiny` contrastively, CLIP-style, on still images from
`stpr.train.data.stills`: one shape with a colour, a place and, in most images, a static
motion cue (a trail); captions use every word the demo's class names use. Each caption
may fit several images of a batch (it names only some attributes), so the loss is the
multi-positive contrastive loss of training (Eqs. 13-15) with the "fits" mask.

It then measures zero-shot accuracy on held-out stills and on frames of the demo's clips,
and the largest cosine between two demo class texts, writes the weights as safetensors
(only the token rows the captions used), and records file, sha256 and report in
`train/pretrained/registry.json`. Prints the report as JSON.

    python scripts/data/pretrain_tiny_clip.py                 # the packaged weights (a few minutes, 2 cores)
    python scripts/data/pretrain_tiny_clip.py --steps 50 --out /tmp/t.safetensors --no-register   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from stpr.train.pretrained import PACKAGE_DIR, REGISTRY, save_sparse

MODEL, TAG = "stpr-tiny", "synthetic-shapes"


EPILOG = """Prints the report as JSON (zero-shot accuracies, the demo's text cosines, file and sha256).
Takes about 5 min on this machine (2 CPU cores) with the defaults (1500 steps: 259 s of training
on one core, docs/results.md)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is fastest on a shared 2-core machine (2 oversubscribe)")
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=PACKAGE_DIR / f"{MODEL}-{TAG}.safetensors")
    ap.add_argument("--no-register", action="store_true", help="do not record the file in registry.json")
    ap.add_argument("--log-every", type=int, default=200)
    a = ap.parse_args(argv)
    if a.steps < 1 or a.batch < 2:
        ap.error(f"--steps must be >= 1 and --batch >= 2, got {a.steps} and {a.batch}")
    return a


if __name__ == "__main__":  # the arguments before torch loads, so --help answers at once
    ARGS = parse_args()

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from stpr.runtime.atomic import atomic_write_json
from stpr.runtime.bundle.manifest import sha256_file
from stpr.train.data.stills import COLOURS, Caption, motion_words, place_words, positives, sample_stills
from stpr.train.data.synthetic import CLIP_MEAN, CLIP_STD, MOTIONS, SHAPES, SyntheticActions
from stpr.train.losses import contrastive_loss_masked
from stpr.train.model.clip_tower import load_clip
from stpr.train.model.text import clean_class_name, encode_class_names

PLACES = [None, "left", "right", "top", "bottom", "top left", "top right", "bottom left", "bottom right"]


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 `(N, H, W, 3)` -> normalised float `(N, 3, H, W)`, as the demo's clips are."""
    x = torch.from_numpy(images).float().div_(255.0).permute(0, 3, 1, 2)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class Tokens:
    """open_clip's tokenizer with a cache (captions repeat), recording every token used."""

    def __init__(self) -> None:
        self.tok = open_clip.get_tokenizer(MODEL)
        self.cache: dict[str, torch.Tensor] = {}
        self.used: set[int] = set()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in texts if t not in self.cache]
        if missing:
            for t, row in zip(missing, self.tok(missing)):
                self.cache[t] = row
                self.used.update(int(i) for i in row.tolist())
        return torch.stack([self.cache[t] for t in texts])


@torch.no_grad()
def text_emb(model: torch.nn.Module, tokens: Tokens, texts: list[str]) -> torch.Tensor:
    return F.normalize(model.encode_text(tokens(texts)), dim=-1)


@torch.no_grad()
def zero_shot(model: torch.nn.Module, tokens: Tokens, n: int, seed: int) -> dict[str, float]:
    """Zero-shot accuracy (%) per attribute on `n` held-out stills (a seed training never used).

    Each attribute is read off the best of all captions that vary it with the others
    unnamed (shape: "a circle"; colour: "a red circle"; motion: "circle moving left";
    place: "circle at the top left"), among images that have it.
    """
    model.eval()
    rng = np.random.default_rng([seed, 7])
    images, stills, _ = sample_stills(n, rng, p_static=0.3, p_unnamed_colour=0.3)
    img = F.normalize(model.encode_image(to_input(images)), dim=-1)
    out = {}
    shape_t = text_emb(model, tokens, [f"a {s}" for s in SHAPES])
    pred = (img @ shape_t.T).argmax(1)
    out["shape"] = 100.0 * float(np.mean([SHAPES[int(p)] == s.shape for p, s in zip(pred, stills)]))

    def by_attr(name: str, values: list, fmt, has) -> None:
        keep = [i for i, s in enumerate(stills) if has(s)]
        hits = []
        for i in keep:
            s = stills[i]
            t = text_emb(model, tokens, [fmt(s.shape, v) for v in values])
            hits.append(values[int((img[i] @ t.T).argmax())] == getattr(s, name))
        out[name] = 100.0 * float(np.mean(hits)) if hits else float("nan")

    by_attr("colour", list(COLOURS), lambda sh, c: f"a {c} {sh}", lambda s: s.colour is not None)
    by_attr("motion", list(MOTIONS), lambda sh, m: f"{sh} {motion_words(m)}", lambda s: s.motion is not None)
    by_attr("place", PLACES, lambda sh, p: f"{sh} {place_words(p)}", lambda s: True)
    return out


@torch.no_grad()
def demo_checks(model: torch.nn.Module, tokens: Tokens) -> dict[str, float]:
    """Zero-shot shape on the demo's test frames, and how distinct its class texts are."""
    model.eval()
    ds = SyntheticActions("test", clips_per_class=4, motions=MOTIONS)
    frames, labels = [], []
    for i in range(len(ds)):
        clip, label = ds[i]
        frames.append(clip[len(clip) // 2])
        labels.append(SHAPES.index(ds.classes[label].split("_")[0]))
    img = F.normalize(model.encode_image(torch.stack(frames)), dim=-1)
    shape_t = text_emb(model, tokens, [f"a {s}" for s in SHAPES])
    acc = 100.0 * float(((img @ shape_t.T).argmax(1) == torch.tensor(labels)).float().mean())
    classes = SyntheticActions("test", clips_per_class=1).classes  # the demo's 20 classes
    t = encode_class_names(model, MODEL, classes, ["{}"])
    cos = t @ t.T
    cos.fill_diagonal_(-1.0)
    return {"demo_frames_shape": acc, "demo_class_text_max_cosine": float(cos.max())}


def train(steps: int, batch: int, lr: float, seed: int, log_every: int) -> tuple[torch.nn.Module, Tokens, float]:
    model, _ = load_clip(MODEL, "none", seed=seed)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    tokens = Tokens()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rng = np.random.default_rng([seed, 1])
    t0 = time.perf_counter()
    for step in range(steps):
        images, stills, caps = sample_stills(batch, rng)
        texts = sorted({c.text for c in caps})
        uniq: dict[str, Caption] = {c.text: c for c in caps}
        M = torch.from_numpy(positives(stills, [uniq[t] for t in texts]))  # (B, U)
        img = model.encode_image(to_input(images))
        txt = model.encode_text(tokens(texts))
        scale = model.logit_scale.exp().clamp(max=100.0)
        loss = contrastive_loss_masked(img, txt, M, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step}/{steps} loss {loss.item():.3f} scale {scale.item():.1f} "
                  f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return model.eval(), tokens, time.perf_counter() - t0


def main(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    model, tokens, seconds = train(a.steps, a.batch, a.lr, a.seed, a.log_every)
    report = {"model": MODEL, "tag": TAG, "steps": a.steps, "batch": a.batch, "lr": a.lr, "seed": a.seed,
              "threads": a.threads, "train_seconds": round(seconds, 1)}
    report["zero_shot_heldout"] = zero_shot(model, tokens, a.eval_images, a.seed)
    report.update(demo_checks(model, tokens))
    # Every token a demo class name or caption uses keeps its row; the rest are zero.
    tokens([clean_class_name(c) for c in SyntheticActions("test", clips_per_class=1, motions=MOTIONS).classes])
    used = torch.tensor(sorted(tokens.used))
    save_sparse(model, used, a.out, {"model": MODEL, "tag": TAG, "report": json.dumps(report)})
    report["file"], report["bytes"], report["sha256"] = a.out.name, a.out.stat().st_size, sha256_file(a.out)
    if not a.no_register:
        entries = [e for e in (json.loads(REGISTRY.read_text()) if REGISTRY.is_file() else [])
                   if (e["model"], e["tag"]) != (MODEL, TAG)]
        entries.append({"model": MODEL, "tag": TAG, "file": a.out.name, "sha256": report["sha256"],
                        "report": {k: v for k, v in report.items() if k not in ("file", "sha256", "model", "tag")}})
        atomic_write_json(REGISTRY, entries)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(ARGS)
