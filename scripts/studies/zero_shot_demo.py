"""Add held-out classes by name to a demo bundle and measure them (issue 9, part 2).

Train the demo on a protocol that leaves classes out (`--protocol 4+4x3` trains 16 of
the 20 synthetic classes; the four `ring_*` ones are never seen), export it, then:

    python scripts/studies/zero_shot_demo.py --bundle BUNDLE [--add ring_moving_right ...]

Runs the bundle as stpr-run does (onnxruntime, NumPy router, the device tokenizer and
text tower) on the synthetic test clips of the trained and the added classes, and
prints JSON: trained-class accuracy without and with the added names, each added
name's recall, and how often a trained clip is taken for an added class, for stpr-run's
scoring rule (`runtime/engine/zero_shot.py`) and the raw cosines it was chosen over.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stpr.runtime.bundle.load import load_bundle
from stpr.runtime.engine.recognizer import Recognizer
from stpr.runtime.engine.zero_shot import ZeroShot, zero_shot_logits
from stpr.runtime.model.preprocess import preprocess
from stpr.runtime.model.router import normalize
from stpr.runtime.text.encoder import TextEncoder, text_section
from stpr.train.data.synthetic import SHAPES, SyntheticActions


def features(rec: Recognizer, data: SyntheticActions, idx: list[int]) -> np.ndarray:
    """`(N, T, D)` frame features of test clips, through the bundle's backbone."""
    b = rec.bundle
    out = []
    for i in idx:
        clip = data.raw_clip(i)[:, :, :, ::-1]  # RGB -> the BGR frames OpenCV would give
        out.append(rec.frame_features(np.stack([preprocess(f, b.size, b.mean, b.std) for f in clip])))
    return np.stack(out)


def evaluate(logits_trained: np.ndarray, zs: np.ndarray | None, labels: np.ndarray, n_trained: int,
             added: list[str]) -> dict:
    logits = logits_trained if zs is None else np.concatenate([logits_trained, zs], 1)
    pred = logits.argmax(1)
    trained = labels < n_trained
    out = {"trained_accuracy": round(float((pred[trained] == labels[trained]).mean()), 4),
           "trained_taken_for_added": round(float((pred[trained] >= n_trained).mean()), 4)}
    if zs is not None:
        out["added_recall"] = {name: round(float((pred[labels == n_trained + j] == n_trained + j).mean()), 4)
                               for j, name in enumerate(added)}
    return out


def rules(logits: np.ndarray, fbar: np.ndarray, g: np.ndarray, text: np.ndarray, emb: np.ndarray,
          scale: float) -> dict[str, np.ndarray]:
    """Ways to score added classes: stpr-run's, and the raw cosines it was chosen over."""
    return {"frozen_rank (stpr-run)": zero_shot_logits(g, text, emb, logits, scale),
            "frozen_cos": scale * normalize(g) @ emb.T,
            "adapted_fbar_cos": scale * normalize(fbar) @ emb.T}


EPILOG = """Prints one JSON object: trained-class accuracy without and with the added names, each added
name's recall and the false takes, for stpr-run's rule and the raw cosines. Takes about 1 min on
this machine (2 CPU cores) on the demo's 16-class bundle (an estimate: one text-tower pass per
added name, one tower pass per test clip)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--add", nargs="+", default=None, help="untrained class names to add [each untrained demo "
                    "class alone, then all of them together]")
    ap.add_argument("--clips-per-class", type=int, default=16)
    args = ap.parse_args()
    b = load_bundle(args.bundle)
    data = SyntheticActions("test", clips_per_class=args.clips_per_class, seed=0, shapes=SHAPES,
                            image_size=b.size, num_frames=b.frames)
    held_out = [c for c in data.classes if c not in b.classes]
    groups = [[n] for n in held_out] + [held_out] if args.add is None else [args.add]
    with TextEncoder(b.path, text_section(b.manifest, b.path)) as enc:
        emb_of = dict(zip(held_out, enc.embed_names(held_out)))
    zs = ZeroShot(held_out, np.stack([emb_of[n] for n in held_out]), args.bundle)
    C, D = len(b.classes), b.dim
    with Recognizer(b, zero_shot=zs) as rec:  # its frame features: adapted, then the frozen tower's
        order = [*b.classes, *held_out]
        idx = [i for i, t in enumerate(data.targets) if data.classes[t] in order]
        labels_all = np.array([order.index(data.classes[data.targets[i]]) for i in idx])
        feats = features(rec, data, idx)
        out = rec.classify(feats)
    logits = out["logits"][:, :C]  # the trained classes' logits (added ones are appended after)
    fbar, g = feats[..., :D].mean(1), feats[..., D:].mean(1)
    report = {"bundle": str(args.bundle), "trained_classes": C, "held_out": held_out,
              "clips_per_class": args.clips_per_class, "runs": []}
    base = labels_all < C
    report["without_added"] = evaluate(logits[base], None, labels_all[base], C, [])
    # Which feature still knows the unseen classes: held-out clips whose frame mean is nearest
    # a held-out class's text among all the texts (trained and held out).
    texts = np.concatenate([b.text_embeddings, np.stack([emb_of[n] for n in held_out])])
    report["held_out_clips_nearest_a_held_out_text"] = {
        name: round(float(((normalize(q[~base]) @ texts.T).argmax(1) >= C).mean()), 4)
        for name, q in (("adapted_frame_mean", fbar), ("frozen_frame_mean", g))}
    for names in groups:
        keep = base | np.isin(labels_all, [order.index(n) for n in names])
        labels = labels_all[keep].copy()
        for j, n in enumerate(names):  # added classes follow the trained ones, in the order added
            labels[labels_all[keep] == order.index(n)] = C + j
        emb = np.stack([emb_of[n] for n in names])
        scored = rules(logits[keep], fbar[keep], g[keep], b.text_embeddings, emb, b.logit_scale)
        report["runs"].append({"added": names, **{rule: evaluate(logits[keep], z, labels, C, names)
                                                  for rule, z in scored.items()}})
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
