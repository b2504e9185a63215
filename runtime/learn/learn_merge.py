"""Fleets: bundles that learned on separate devices from one base, merged into one exact head.

Each device keeps every clip it learned as its head row `h` (`head_learned_rows.npy`),
and the base's own clips only as the sums G and C (`head_sums`). The head is the ridge
solve of the sums plus the weighted rows, so pooling every device's rows on the base
gives exactly the head one device would have learned from all their clips, in one
round and in any order (the analytic federated learning argument, docs/learn.md):

    G_total = G + sum_c w_c sum_{rows i of c, all devices} h_i h_i^T,  w_c = n_ref / (n_c + k_c)

with k_c the pooled count of class c, so a class learned on two devices under one name
is one class with both devices' clips.

A device ships its **head delta**: its manifest (sealed, so any edit is refused) and its
learned rows file, a few hundred kB instead of the towers. `write_delta` makes one from
a learned bundle; `merge` takes full bundles or deltas. Nothing here runs a tower.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import make_temp_dir
from ..bundle.bundle_dir import prepare_target, remove_stale_temp, swap_into_place
from ..bundle.manifest import MANIFEST_HASH_KEY, read_manifest, sha256_file
from ..contract import MANIFEST_NAME
from ..errors import BundleError, LearnError
from ..text.text_clean import clean_class_name
from .learn_bundle import LearnReport, head_bundle, learn


@dataclass
class Delta:
    """What a device learned: its sealed manifest and its learned rows, per class name."""
    path: Path
    manifest: dict[str, Any]
    rows: dict[str, np.ndarray]  # class -> (k, M) float32, every row the bundle holds for it

    @property
    def sha(self) -> str:
        return str(self.manifest[MANIFEST_HASH_KEY])


def _learned_file(m: dict[str, Any], path: Path) -> tuple[str, list[str], list[int]]:
    h = m.get("head")
    learned = h.get("learned") if isinstance(h, dict) else None
    if not isinstance(learned, dict):
        raise LearnError(f"--merge {str(path)!r} has learned no class on a device (no head.learned in its "
                         "manifest); merge the bundles stpr-learn wrote")
    return learned["rows"], list(learned["classes"]), list(learned["clips"])


def read_delta(path: Path) -> Delta:
    """A learned bundle, or its head delta, checked: the manifest's own sha256, its fields,
    and the rows file against the sha256 the manifest gives it."""
    from ..bundle.manifest_fields import check_fields

    path = Path(path)
    if not path.is_dir():
        raise LearnError(f"--merge {str(path)!r} is not a folder; pass bundles or head deltas (stpr-learn --delta)")
    m = read_manifest(path)
    check_fields(m)
    name, classes, clips = _learned_file(m, path)
    f = path / name
    if not f.is_file():
        raise LearnError(f"--merge {str(path)!r} lacks its learned rows {name!r}; copy the whole delta again")
    if sha256_file(f) != m["files"][name]:
        raise LearnError(f"--merge {str(path)!r}: {name!r} does not match its sha256 in the manifest (altered or "
                         "truncated); copy it again")
    rows = np.load(f, allow_pickle=False)
    M = m["head"]["projection"]["out_dim"]
    if rows.dtype != np.float32 or rows.shape != (sum(clips), M) or not np.isfinite(rows).all():
        raise LearnError(f"--merge {str(path)!r}: {name!r} is {rows.dtype} {rows.shape}, expected finite float32 "
                         f"({sum(clips)}, {M}); learn the classes again")
    out, start = {}, 0
    for c, k in zip(classes, clips):
        out[c] = rows[start:start + k]
        start += k
    return Delta(path=path, manifest=m, rows=out)


def _tower_sha(m: dict[str, Any]) -> str | None:
    return (m.get("files") or {}).get(m["head"]["tower_file"])


def _mismatch(base: dict[str, Any], m: dict[str, Any]) -> str | None:
    """Why a bundle's head cannot be pooled with the base's, or None: the first of tower,
    preprocessing, projection, lambda, balance and the sums (G, n_ref, counts) that differs."""
    hb, hm = base["head"], m["head"]
    checks = (
        ("its head tower", _tower_sha(base), _tower_sha(m)),
        ("its frames or preprocessing", (base["dims"]["T"], base["dims"]["D"], base["preprocess"]),
         (m["dims"]["T"], m["dims"]["D"], m["preprocess"])),
        ("its projection", hb["projection"], hm["projection"]),
        ("its lambda", hb["lambda"], hm["lambda"]),
        ("its balance rule", hb.get("balance", "weight"), hm.get("balance", "weight")),
        ("its head sums (G)", base["files"].get(hb["sums"]["gram"]), m["files"].get(hm.get("sums", {}).get("gram"))),
        ("its n_ref", hb["sums"]["n_ref"], hm.get("sums", {}).get("n_ref")),
    )
    for what, a, b in checks:
        if a != b:
            return f"{what} differs from the base's ({_short(b)} against {_short(a)})"
    return None


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def check_delta(base: dict[str, Any], base_rows: dict[str, np.ndarray], d: Delta) -> dict[str, np.ndarray]:
    """The rows `d` learned on top of the base (class -> rows), or a `LearnError` with the reason."""
    where = f"--merge {str(d.path)!r}"
    why = _mismatch(base, d.manifest)
    if why is not None:
        raise LearnError(f"{where} was learned on another model: {why}; merge only bundles learned from --bundle")
    parents = {e.get("from_manifest_sha256") for e in d.manifest.get("lineage", []) if isinstance(e, dict)}
    if base[MANIFEST_HASH_KEY] not in parents:
        raise LearnError(f"{where} was learned from another base (its lineage does not name the base's manifest "
                         f"{base[MANIFEST_HASH_KEY][:12]}); merge only bundles learned from --bundle")
    counts_b = dict(zip(base["classes"], base["head"]["sums"]["counts"]))
    counts_d = dict(zip(d.manifest["classes"], d.manifest["head"]["sums"]["counts"]))
    for name in base["classes"]:
        if name not in counts_d:
            raise LearnError(f"{where} removed the base's class {name!r}; a merge pools what devices added: merge "
                             f"without it and remove {name!r} from the result (--remove)")
        if counts_d[name] != counts_b[name]:
            raise LearnError(f"{where} holds {counts_d[name]} workstation clips of {name!r}, the base "
                             f"{counts_b[name]}; merge only bundles learned from --bundle")
    new: dict[str, np.ndarray] = {}
    for name, rows in d.rows.items():
        had = base_rows.get(name, np.zeros((0, rows.shape[1]), np.float32))
        if len(rows) < len(had) or not np.array_equal(rows[:len(had)], had):
            raise LearnError(f"{where}: its rows of {name!r} do not extend the base's (the class was removed and "
                             "learned again on the device); merge it without that class")
        if len(rows) > len(had):
            new[name] = rows[len(had):]
    return new


def _row_keys(rows: np.ndarray) -> set[str]:
    return {hashlib.sha256(r.tobytes()).hexdigest() for r in rows}


def pool(base: dict[str, Any], base_rows: dict[str, np.ndarray], deltas: list[Delta]) -> tuple[
        dict[str, np.ndarray], list[dict[str, Any]]]:
    """class -> every device's new rows (the base's classes first, then new ones by name),
    and the lineage of each input; refuses a bundle given twice, overlapping bundles and one
    class spelled two ways."""
    seen: dict[str, Delta] = {}
    for d in deltas:
        if d.sha in seen:
            raise LearnError(f"--merge lists one bundle twice ({str(seen[d.sha].path)!r} and {str(d.path)!r}); "
                             "give each once")
        seen[d.sha] = d
    # A canonical order (by manifest hash): the merged bundle does not depend on the order given.
    ordered = sorted(deltas, key=lambda d: d.sha)
    news = [(d, check_delta(base, base_rows, d)) for d in ordered]
    owner: dict[str, Delta] = {}
    spelled = {clean_class_name(c): (c, "the base") for c in base["classes"]}  # cleaned -> (name, whose)
    for d, new in news:
        if not new:
            raise LearnError(f"--merge {str(d.path)!r} learned nothing on top of the base; leave it out")
        for name, rows in new.items():
            first = spelled.setdefault(clean_class_name(name), (name, repr(str(d.path))))
            if first[0] != name:
                raise LearnError(f"--merge {str(d.path)!r} learned {name!r} and {first[1]} has {first[0]!r}: one "
                                 "class once cleaned; learn it under one name on every device")
            for key in _row_keys(rows):
                if key in owner and owner[key] is not d:
                    raise LearnError(f"--merge {str(d.path)!r} and {str(owner[key].path)!r} hold the same learned "
                                     "clip (one descends from the other, or both from a bundle learned after the "
                                     "base); merge each clip once, or merge on that later bundle")
                owner[key] = d
    names = [c for c in base["classes"] if any(c in new for _, new in news)]
    names += sorted({c for _, new in news for c in new} - set(base["classes"]))
    adds = {c: np.concatenate([new[c] for _, new in news if c in new]) for c in names}
    inputs = [{"manifest_sha256": d.sha, "from": str(d.path.resolve()),
               "added": {c: len(r) for c, r in new.items()}} for d, new in news]
    return adds, inputs


def merge(bundle: Path, out: Path, paths: list[Path], removes: list[str], *, force: bool = False) -> LearnReport:
    """Write `out`: the base `bundle` with every clip the bundles (or deltas) at `paths` learned
    on top of it, less `removes`. Nothing runs a tower; W is the solve of the pooled sums."""
    loaded = head_bundle(bundle)
    b, sums = loaded
    base_rows = {b.classes[c]: r for c, r in sums.rows.items() if len(r)}
    deltas = [read_delta(p) for p in paths]
    adds, inputs = pool(b.manifest, base_rows, deltas)
    # A removed class takes none of the devices' rows; one only the devices learned is left out of the pool.
    left_out = [n for n in removes if n in adds and n not in b.classes]
    for n in removes:
        adds.pop(n, None)
    report = learn(bundle, out, adds, [n for n in removes if n not in left_out], min_clips=1, force=force,
                   loaded=loaded, lineage={"merged": inputs, **({"left_out": left_out} if left_out else {})})
    report.removed += left_out
    return report


def write_delta(bundle: Path, out: Path, *, force: bool = False) -> list[str]:
    """Write `out`: the learned bundle's head delta (its manifest and learned rows, hash-checked),
    what a device ships for `--merge`. Returns the file names written."""
    b, _ = head_bundle(bundle)
    m = b.manifest
    name, _, _ = _learned_file(m, b.path)
    out = Path(out)
    if out.resolve() == b.path.resolve():
        raise LearnError(f"--out {str(out)!r} is the bundle itself; write the delta to a new folder")
    prepare_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp(out)
    tmp = make_temp_dir(out.parent, f".tmp-{out.name}-{os.getpid()}-")
    try:
        for f in (MANIFEST_NAME, name):  # byte for byte: the manifest stays sealed, the rows keep their hash
            shutil.copy2(b.path / f, tmp / f)
        if read_delta(tmp).sha != m[MANIFEST_HASH_KEY]:
            raise BundleError(f"{str(out)!r}: the delta does not read back as written; write it again")
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [MANIFEST_NAME, name]
