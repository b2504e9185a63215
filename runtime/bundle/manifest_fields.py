"""Field rules of the manifest: every nested value the runtime reads, type- and range-checked.

A hand-edited or foreign manifest must fail here with a `BundleError` naming the
field (`preprocess.size is missing`, `routing.tau is 0: must be > 0`), not later as
a traceback or as NaN scores in the events.
"""
from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Any

from ..contract import BUNDLE_FILE_SUFFIXES, BUNDLE_ROUTING_MODES, HEAD_MODES, NOT_BUNDLE_FIELDS, STPR_KEYS
from ..errors import BundleError
from ..model.head_sums import LEARNED_EXPERT
from ..model.openset import COMBINED, COMBINED_PARTS, HEAD_COMBINED, HEAD_COMBINED_PARTS, HEAD_SCORE_NAMES, SCORE_NAMES
from .head_bundle import check_head_fields

_MISSING = object()
STPR_FILE_KEYS = ("backbone", "experts")  # StPR's files: a head-alone bundle ships them only on request


def head_alone(m: dict[str, Any]) -> bool:
    """Whether only the analytic head serves the bundle's classes (no StPR file runs)."""
    head = m.get("head")
    return isinstance(head, dict) and head.get("mode") == "alone"


def needs_stpr_files(m: dict[str, Any]) -> bool:
    """Whether the manifest must name StPR's backbone and experts: without a head, or with a
    head mode that runs them (an unknown mode is reported as such, not as missing files)."""
    head = m.get("head")
    return not isinstance(head, dict) or (head.get("mode") in HEAD_MODES and head.get("mode") != "alone")


def _get(m: dict[str, Any], field: str) -> Any:
    value: Any = m
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _count(m: dict[str, Any], field: str, problems: list[str]) -> int | None:
    """An integer >= 1 (a size or a count)."""
    v = _get(m, field)
    if v is _MISSING:
        problems.append(f"{field} is missing")
    elif not _is_int(v) or v < 1:
        problems.append(f"{field} is {v!r}: must be an integer >= 1")
    else:
        return v
    return None


def _positive(m: dict[str, Any], field: str, problems: list[str]) -> None:
    v = _get(m, field)
    if v is _MISSING:
        problems.append(f"{field} is missing")
    elif not _is_number(v) or v <= 0:
        problems.append(f"{field} is {v!r}: must be a finite number > 0")


def _file_name(m: dict[str, Any], field: str, v: Any, problems: list[str]) -> None:
    """A name relative to the bundle folder, listed (with its sha256) under `files`."""
    p = PurePosixPath(v) if isinstance(v, str) and v else None
    if p is None or p.is_absolute() or ".." in p.parts:
        problems.append(f"{field} is {v!r}: must be a file name inside the bundle")
    elif v not in (m.get("files") or {}):
        problems.append(f"{field} names {v!r}, which is not listed (with its sha256) under files")


def _channels(m: dict[str, Any], field: str, positive: bool, problems: list[str]) -> None:
    v = _get(m, field)
    ok = isinstance(v, list) and len(v) == 3 and all(_is_number(x) and (x > 0 or not positive) for x in v)
    if not ok:
        need = "3 finite numbers > 0" if positive else "3 finite numbers"
        problems.append(f"{field} is {'missing' if v is _MISSING else repr(v)}: must be {need} (R, G, B)")


def _classes(m: dict[str, Any], C: int | None, K: int | None, problems: list[str]) -> None:
    names, c2e = m.get("classes"), m.get("class_to_expert")
    alone = head_alone(m)  # only the head serves
    if not isinstance(names, list) or not all(isinstance(c, str) and c for c in names):
        problems.append("classes must be a list of non-empty class names")
    elif C is not None and len(names) != C:
        problems.append(f"classes has {len(names)} names but dims.C is {C}")
    if not isinstance(c2e, list) or not all(_is_int(k) for k in c2e):
        bad = next((k for k in c2e if not _is_int(k)), c2e) if isinstance(c2e, list) else c2e
        problems.append(f"class_to_expert must be a list of integer expert indices, found {bad!r}")
    elif C is not None and len(c2e) != C:
        problems.append(f"class_to_expert has {len(c2e)} entries but dims.C is {C}")
    elif K is not None and any(not 0 <= k < K and not (k == LEARNED_EXPERT and alone) for k in c2e):
        problems.append(f"class_to_expert holds {sorted(set(k for k in c2e if not 0 <= k < K))}: "
                        f"expert indices must be in 0..{K - 1} (dims.K is {K})" +
                        (f", or {LEARNED_EXPERT} for a class learned on the device" if alone else ""))


def _model_files(m: dict[str, Any], K: int | None, problems: list[str]) -> None:
    # a head-alone bundle ships StPR's backbone and experts only when exported with --stpr-files
    stpr = needs_stpr_files(m) or any(k in m for k in STPR_FILE_KEYS)
    for key in ("text_embeddings", "anchors") + (("backbone",) if stpr else ()) + \
            (("backbone_fp16",) if "backbone_fp16" in m else ()):
        _file_name(m, key, m.get(key), problems)
    for key in (("experts",) if stpr else ()) + (("experts_fp16",) if "experts_fp16" in m else ()):
        names = m.get(key)
        if not isinstance(names, list):
            problems.append(f"{key} must be a list of file names, one per expert")
            continue
        if K is not None and len(names) != K:
            problems.append(f"{key} lists {len(names)} files but dims.K is {K}")
        for i, name in enumerate(names):
            _file_name(m, f"{key}[{i}]", name, problems)


def _unknown(m: dict[str, Any], problems: list[str]) -> None:
    """Optional (bundles exported without held-out clips have none): the open-set score's
    name, its calibrated threshold, the true-positive rate it was set at, its report, and
    for the combination each part's calibration mean and spread."""
    u = m.get("unknown", _MISSING)
    if u is _MISSING:
        return
    if not isinstance(u, dict):
        problems.append(f"unknown is {u!r}: must be an object (score, threshold, target_tpr, report)")
        return
    head = "head" in m  # a head bundle's score is one of the head's (runtime/model/openset.py)
    names = HEAD_SCORE_NAMES if head else SCORE_NAMES
    combined, parts = (HEAD_COMBINED, HEAD_COMBINED_PARTS) if head else (COMBINED, COMBINED_PARTS)
    if u.get("score") not in names:
        problems.append(f"unknown.score is {u.get('score')!r}: must be one of {', '.join(names)}")
    elif u["score"] in ("route", COMBINED) and _get(m, "routing.mode") == "avg":
        problems.append(f"unknown.score is {u['score']!r} but routing.mode avg scores no expert")
    if u.get("score") == combined:
        st = u.get("standardise")
        if not isinstance(st, dict) or not all(
                isinstance(st.get(p), list) and len(st[p]) == 2 and all(_is_number(x) for x in st[p])
                and st[p][1] > 0 for p in parts):
            problems.append(f"unknown.standardise is {st!r}: must give [mean, spread > 0] for {', '.join(parts)}")
    if head and u.get("score") in ("head_mahalanobis", HEAD_COMBINED):
        _file_name(m, "unknown.subspace", u.get("subspace"), problems)
        _positive(m, "unknown.tail_inverse", problems)
    if not _is_number(u.get("threshold")):
        problems.append(f"unknown.threshold is {u.get('threshold')!r}: must be a finite number")
    tpr = u.get("target_tpr")
    if not _is_number(tpr) or not 0 < tpr <= 1:
        problems.append(f"unknown.target_tpr is {tpr!r}: must be a number in (0, 1]")
    _file_name(m, "unknown.report", u.get("report"), problems)
def _text(m: dict[str, Any], problems: list[str]) -> None:
    """The optional `text` section (bundles that can add classes by name; older ones lack it)."""
    text = m["text"]
    if not isinstance(text, dict):
        problems.append("text must be an object (tower, tokenizer, context_length, templates)")
        return
    optional = tuple(k for k in ("tower_fp16", "image_tower_fp16") if k in text)
    for key in ("tower", "tokenizer", "image_tower") + optional:
        _file_name(m, f"text.{key}", text.get(key), problems)
    _count(m, "text.context_length", problems)
    templates = text.get("templates")
    if not isinstance(templates, list) or not templates or \
            not all(isinstance(t, str) and t.count("{}") == 1 for t in templates):
        problems.append(f"text.templates is {templates!r}: must be a non-empty list of prompts, each with one '{{}}'")
    if text.get("clean") != "lower":
        problems.append(f"text.clean is {text.get('clean')!r}: this stpr-run tokenizes with open_clip's 'lower'")


def _named_files(m: dict[str, Any], problems: list[str]) -> None:
    """Every value anywhere in the manifest that names a bundle file (by its ending) is a
    file inside the bundle, listed with its sha256: what a new file's field needs, unchecked
    by anything written for it."""
    def walk(v: Any, field: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{field}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{field}[{i}]")
        elif isinstance(v, str) and v.endswith(BUNDLE_FILE_SUFFIXES):
            _file_name(m, field, v, problems)

    for key, value in m.items():
        if key not in NOT_BUNDLE_FIELDS:
            walk(value, key)


def check_fields(m: dict[str, Any]) -> None:
    """Raise one `BundleError` listing every invalid field of manifest `m`."""
    problems: list[str] = []
    files = m.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        problems.append("files must map each file name to its sha256")
    C, _, K, T = (_count(m, f"dims.{k}", problems) for k in ("C", "D", "K", "T"))
    _count(m, "preprocess.size", problems)
    frames = _count(m, "preprocess.frames", problems)
    if frames is not None and T is not None and frames != T:
        problems.append(f"preprocess.frames is {frames} but dims.T is {T}")
    _channels(m, "preprocess.mean", False, problems)
    _channels(m, "preprocess.std", True, problems)
    head_only = m.get("head_only", False)
    if head_only not in (True, False):
        problems.append(f"head_only is {head_only!r}: must be true or false")
    elif head_only and _get(m, "head.mode") != "alone":
        problems.append(f"head_only is true but head.mode is {_get(m, 'head.mode')!r}: a bundle without StPR's "
                        "parts serves the head alone")
    if head_only is True:
        _stpr_free(m, C, K, problems)
    else:
        _stpr(m, C, K, problems)
    _unknown(m, problems)
    if "text" in m:
        _text(m, problems)
    if "head" in m:
        check_head_fields(m, problems)
    _named_files(m, problems)
    problems = list(dict.fromkeys(problems))  # a file checked by name and by its field: said once
    if problems:
        raise BundleError("the bundle's manifest.json is invalid: " + "; ".join(problems) +
                          "; re-export the bundle with stpr-export")


def _stpr_free(m: dict[str, Any], C: int | None, K: int | None, problems: list[str]) -> None:
    """A head-only bundle: classes and their tasks, and none of StPR's parts."""
    _classes(m, C, K, problems)
    if "head" not in m:
        problems.append("head_only is true but the manifest has no head")
    extra = [k for k in STPR_KEYS if k in m]
    if extra:
        problems.append(f"head_only is true but the manifest has StPR's {', '.join(extra)}")


def _stpr(m: dict[str, Any], C: int | None, K: int | None, problems: list[str]) -> None:
    """StPR's parts: routing, the logit scale, classes and their experts, the model files."""
    mode = _get(m, "routing.mode")
    if mode not in BUNDLE_ROUTING_MODES:
        problems.append(f"routing.mode is {None if mode is _MISSING else mode!r}: "
                        f"must be one of {', '.join(BUNDLE_ROUTING_MODES)}")
    _positive(m, "routing.tau", problems)
    if mode == "td":  # the calibrated router's per-expert statistics
        _file_name(m, "td_calibration", m.get("td_calibration"), problems)
    _positive(m, "logit_scale", problems)
    _classes(m, C, K, problems)
    _model_files(m, K, problems)
