"""`stpr-learn`'s work: a bundle and new clips' head rows -> a new bundle that knows them.

The head's sums (`head_sums`) take the rows and the head is solved again; the class list,
the per-class arrays, the open-set subspace and the manifest follow. The new bundle is
assembled beside its target and renamed into place (`bundle_dir`), and the old one is
never touched, so a run killed mid-way leaves the old bundle serving.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json, make_temp_dir
from ..bundle.bundle_dir import prepare_target, remove_stale_temp, swap_into_place
from ..bundle.load import Bundle, _array, load_bundle
from ..bundle.manifest import MANIFEST_NAME, seal_manifest, sha256_file
from ..model.head_sums import LEARNED_EXPERT, HeadSums, load_sums, save_sums, sums_section
from ..model.openset import head_subspace
from ..text.class_names import bundle_length_problem, name_problem
from ..text.encoder import TextEncoder, clean_class_name
from .learn_clips import LearnError

# A new class from fewer clips is refused. The balance rule weighs each of its clips
# n_ref / k, so with k = 1 or 2 one clip's quirks (a hand in the frame, a pause) become the
# class: on the demo's held-out classes 2 clips give 49.5 +- 8.2 % recall, 4 give 62.5 +-
# 7.1 %, 8 give 80.2 +- 3.7 % (docs/learn.md, "Measured"). `--min-clips` lowers it knowingly.
MIN_CLIPS = 4
SOLVE_TOLERANCE = 1e-4  # |W from the sums - W shipped| / max |W| above this: the sums do not belong to the weights


@dataclass
class LearnReport:
    out: Path
    classes: list[str]
    added: dict[str, int] = field(default_factory=dict)  # class -> clips added now
    removed: list[str] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def check_learnable(b: Bundle) -> None:
    """A `LearnError` unless the bundle's head can take new classes: a head, served alone, with sums."""
    path = b.path
    if b.head is None:
        raise LearnError(f"bundle {str(path)!r} has no analytic head (its run trained with --head none); stpr-learn "
                         "adds classes to the head: train with --head alone and export again")
    if b.head.mode != "alone":
        raise LearnError(f"bundle {str(path)!r} serves the head as {b.head.mode!r}, which scores each class "
                         "through its task's expert, and a class learned here has none; export a run trained "
                         "with --head alone")
    if "sums" not in b.manifest["head"]:
        raise LearnError(f"bundle {str(path)!r} carries no head sums (exported with --head-sums none or by an older "
                         "stpr-export); export it again with this stpr-export")


def head_bundle(path: Path) -> tuple[Bundle, HeadSums]:
    """The bundle and its head's sums, or the `LearnError` that says why it cannot learn."""
    b = load_bundle(path)
    check_learnable(b)
    sums = load_sums(b.path, b.manifest, _array)
    assert sums is not None  # check_learnable saw head.sums
    return b, sums


def check_sums_match(b: Bundle, sums: HeadSums) -> float:
    """The relative gap between the weights the sums give and those shipped; a refusal if large."""
    w = sums.solve()
    gap = float(np.abs(w - b.head.weights).max() / max(1e-12, float(np.abs(b.head.weights).max())))
    if gap > SOLVE_TOLERANCE:
        raise LearnError(f"bundle {str(b.path)!r}: its head sums give weights {gap:.1e} (relative) away from the "
                         "weights it ships; the bundle is inconsistent, export it again")
    return gap


def check_request(classes: list[str], adds: dict[str, np.ndarray], removes: list[str], min_clips: int, *,
                  bundle: Bundle | None = None) -> None:
    """Names and clip counts, before anything runs: one `LearnError` for the first problem.
    New names follow `stpr-classes`' rule (`class_names`), their prompts' length too when
    `bundle` (with a text tower) is given."""
    exact = {clean_class_name(c): c for c in classes}
    for name in removes:
        if name not in classes:
            raise LearnError(f"--remove {name!r}: no such class in the bundle (its classes: {', '.join(classes)})")
    if removes and len(set(removes)) == len(classes) and not adds:
        raise LearnError("--remove would leave the bundle with no class; keep at least one")
    seen: dict[str, str] = {}
    for name in adds:  # every name first: a duplicate is named as such, not as a short class
        if name not in classes and (problem := name_problem(name)) is not None:  # stpr-classes' rule
            raise LearnError(problem)
        words = clean_class_name(name)
        if words in seen:
            raise LearnError(f"class names {seen[words]!r} and {name!r} are the same class once cleaned "
                             f"({words!r}); give each class once")
        seen[words] = name
        if name in removes:
            raise LearnError(f"{name!r} is both removed and added; remove it in one call and add it in the next")
        if words in exact and exact[words] != name:
            raise LearnError(f"class name {name!r} is the bundle's {exact[words]!r} once cleaned; use {exact[words]!r} "
                             "to add examples to it, or choose another name")
    if bundle is not None and (problem := bundle_length_problem(
            bundle.path, bundle.manifest.get("text"), [n for n in adds if n not in classes])) is not None:
        raise LearnError(problem)
    for name, rows in adds.items():
        if len(rows) == 0:
            raise LearnError(f"class {name!r} has no clips; pass its clips after --add, or a folder in --data")
        if name not in classes and len(rows) < min_clips:
            raise LearnError(f"class {name!r} has {len(rows)} clip(s); a new class needs at least {min_clips} "
                             "(--min-clips): with fewer, one clip's quirks become the class")


def _link_or_copy(src: Path, dst: Path) -> None:
    # Bundles are never edited in place, so the new one can share the old one's big files.
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _text_rows(b: Bundle, names: list[str]) -> np.ndarray:
    """The text embedding of each new class: the bundle's text tower where it has one (so
    classes added by name rank against it), else zero rows (nothing reads them then)."""
    text = b.manifest.get("text")
    if not names:
        return np.zeros((0, b.dim), np.float32)
    if not isinstance(text, dict):
        return np.zeros((len(names), b.dim), np.float32)
    with TextEncoder(b.path, text) as enc:
        return enc.embed_names(names).astype(np.float32)


def _parity(b: Bundle, sums_gap: float, weights: np.ndarray, rows: dict[str, np.ndarray],
            classes: list[str]) -> dict[str, Any]:
    """What the device can check of its own solve: the old sums give the old weights, and the
    new weights put each learned clip in its own class (reported, not gated: a clip may
    honestly look like another class)."""
    report: dict[str, Any] = {"sums_reproduce_shipped_weights": {"max_rel_diff": sums_gap,
                                                                  "tolerance": SOLVE_TOLERANCE}}
    hits = {name: float(np.mean((r @ weights).argmax(1) == classes.index(name))) for name, r in rows.items()}
    report["learned_clips_top1"] = hits
    return report


def _manifest(b: Bundle, classes: list[str], c2e: list[int], sums: HeadSums, report: LearnReport,
              subspace: bool, lineage: dict[str, Any]) -> dict[str, Any]:
    m = json.loads(json.dumps(b.manifest))  # a deep copy
    m.pop("manifest_sha256", None)
    m["classes"], m["class_to_expert"] = classes, c2e
    m["dims"]["C"] = len(classes)
    section, learned = sums_section(sums, classes)
    m["head"]["sums"] = section
    m["head"].pop("learned", None)
    if learned is not None:
        m["head"]["learned"] = learned
    if not subspace and "unknown" in m:
        m["unknown"].pop("subspace", None)
    m.setdefault("lineage", []).append({
        "tool": "stpr-learn", "from_manifest_sha256": b.manifest["manifest_sha256"], "from": str(b.path.resolve()),
        "added": report.added, "removed": report.removed, **lineage,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    return m


def learn(bundle: Path, out: Path, adds: dict[str, np.ndarray], removes: list[str], *, min_clips: int = MIN_CLIPS,
          force: bool = False, loaded: tuple[Bundle, HeadSums] | None = None,
          lineage: dict[str, Any] | None = None) -> LearnReport:
    """Write the bundle `out`: `bundle` less the classes `removes`, plus `adds` (class ->
    head rows `(k, M)`; an existing class gets the rows as more examples). `loaded` passes
    `head_bundle(bundle)` when the caller already has it; `lineage` adds fields to the new
    bundle's lineage entry (a merge lists its inputs)."""
    t0 = time.perf_counter()
    b, sums = loaded or head_bundle(bundle)
    classes = list(b.classes)
    check_request(classes, adds, removes, min_clips, bundle=b)
    out = Path(out)
    if out.resolve() == b.path.resolve():
        raise LearnError(f"--out {str(out)!r} is the bundle itself; a bundle is never edited in place, "
                         "write a new folder (and --publish it)")
    prepare_target(out, force)
    report = LearnReport(out=out, classes=[])
    gap = check_sums_match(b, sums)
    report.timings_s["check"] = time.perf_counter() - t0
    c2e, text, anchors = list(b.manifest["class_to_expert"]), b.text_embeddings, b.anchors
    for name in removes:
        c = classes.index(name)
        sums.remove_class(c)
        del classes[c], c2e[c]
        if text is not None:  # a head-only bundle has no StPR arrays
            text, anchors = np.delete(text, c, 0), np.delete(anchors, c, 0)
        report.removed.append(name)
    new = [n for n in adds if n not in classes]
    if text is not None:
        text = np.concatenate([text, _text_rows(b, new)])
        anchors = np.concatenate([anchors, np.zeros((len(new), b.dim), np.float32)])
    for name, rows in adds.items():
        if name not in classes:
            classes.append(name)
            c2e.append(LEARNED_EXPERT)
            sums.add_class()
        sums.add_rows(classes.index(name), rows)
        report.added[name] = len(rows)
    t1 = time.perf_counter()
    weights = sums.solve()
    report.timings_s["solve"] = time.perf_counter() - t1
    report.classes = classes
    _write(b, out, sums, weights, text, anchors, classes, c2e, report, _parity(b, gap, weights, adds, classes),
           lineage or {})
    report.timings_s["total"] = time.perf_counter() - t0
    return report


def _write(b: Bundle, out: Path, sums: HeadSums, weights: np.ndarray, text: np.ndarray | None,
           anchors: np.ndarray | None, classes: list[str], c2e: list[int], report: LearnReport,
           learned_parity: dict[str, Any], lineage: dict[str, Any]) -> None:
    m0 = b.manifest
    own = {m0["head"]["weights"], *(m0[k] for k in ("text_embeddings", "anchors") if k in m0), "parity.json",
           *(v for k, v in m0["head"].get("sums", {}).items() if k in ("gram", "cross")),
           *([m0["head"]["learned"]["rows"]] if "learned" in m0["head"] else []),
           *([m0["unknown"]["subspace"]] if "subspace" in (m0.get("unknown") or {}) else [])}
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(out)
    tmp = make_temp_dir(out.parent, f".tmp-{out.name}-{os.getpid()}-")
    try:
        t0 = time.perf_counter()
        for name in m0["files"]:
            if name not in own:
                _link_or_copy(b.path / name, tmp / name)
        np.save(tmp / m0["head"]["weights"], weights, allow_pickle=False)
        if text is not None:
            np.save(tmp / m0["text_embeddings"], text.astype(np.float32), allow_pickle=False)
            np.save(tmp / m0["anchors"], anchors.astype(np.float32), allow_pickle=False)
        save_sums(tmp, sums)
        subspace = "subspace" in (m0.get("unknown") or {})
        if subspace:  # the open-set score's G, now with the learned clips in it
            sub, tail_inverse = head_subspace(sums.totals()[0], sums.lam)
            np.save(tmp / m0["unknown"]["subspace"], sub, allow_pickle=False)
        m = _manifest(b, classes, c2e, sums, report, subspace, lineage)
        if subspace:
            m["unknown"]["tail_inverse"] = tail_inverse
        old_parity = json.loads((b.path / "parity.json").read_text()) if (b.path / "parity.json").is_file() else {}
        report.parity = {**old_parity, "learned": learned_parity}
        atomic_write_json(tmp / "parity.json", report.parity)
        names = [p.relative_to(tmp).as_posix() for p in sorted(tmp.rglob("*")) if p.is_file()]
        m["files"] = {n: m0["files"][n] if n in m0["files"] and n not in own else sha256_file(tmp / n)
                      for n in names}
        atomic_write_json(tmp / MANIFEST_NAME, seal_manifest(m))
        report.timings_s["write"] = time.perf_counter() - t0
        load_bundle(tmp)  # the new bundle must load as stpr-run will load it, before it takes the name
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

