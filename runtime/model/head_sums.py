"""The analytic head's sums in a bundle, so a device can learn classes exactly, without torch.

The head is ridge regression solved from sums (docs/method.md, "The analytic head"):
`W = (G + lambda I)^-1 C`. A bundle exported with the sums carries the workstation's
`G` (M, M) and `C` (M, C), each class's clip count and `n_ref`; every clip learned on
the device ships as its row `h` (M,) in one float32 file. The weights are then

    G_total = G + sum over device rows i of w_i h_i h_i^T
    C_total[:, c] = C[:, c] + sum over device rows i of class c of w_i h_i
    W = (G_total + lambda I)^-1 C_total

with the training side's balance rule: a device row of class c weighs
`n_ref / (n_c + k_c)` (n_c: the workstation's clips of c, k_c: the device's), or 1
with `balance: none`. A class learned only on the device gets exactly the weights a
workstation run adding it as a new task gives it, so the solve is the training one.
The workstation's own clips keep the weights they were fitted with: their rows are not
in the bundle, only their sums.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..contract import HEAD_CROSS_FILE, HEAD_GRAM_FILE, HEAD_ROWS_FILE, SUMS_DTYPES
from ..errors import BundleError

LEARNED_EXPERT = -1  # class_to_expert of a class learned on the device: it belongs to no task, has no expert

LoadArray = Callable[[Any, str, str], np.ndarray]


@dataclass
class HeadSums:
    """Everything the solve needs, per class in the bundle's class order."""
    gram: np.ndarray  # (M, M) float64
    cross: np.ndarray  # (M, C) float64, the workstation's part (a zero column for a class learned on the device)
    counts: np.ndarray  # (C,) float64, the workstation's clips per class
    n_ref: float
    lam: float
    balance: str  # "weight" | "none"
    dtype: str  # one of SUMS_DTYPES: how the export stored G and C
    rows: dict[int, np.ndarray] = field(default_factory=dict)  # class index -> (k, M) float32 device rows

    @property
    def dim(self) -> int:
        return int(self.gram.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.cross.shape[1])

    def device_clips(self, c: int) -> int:
        return len(self.rows.get(c, ()))

    def row_weight(self, c: int) -> float:
        """The weight of each of class c's device rows (see the module docstring)."""
        if self.balance == "none":
            return 1.0
        return self.n_ref / max(1.0, float(self.counts[c]) + self.device_clips(c))

    def totals(self) -> tuple[np.ndarray, np.ndarray]:
        """`(G_total, C_total)` in float64."""
        gram, cross = self.gram.copy(), self.cross.copy()
        for c, r in self.rows.items():
            r64 = r.astype(np.float64)
            w = self.row_weight(c)
            gram += w * (r64.T @ r64)
            cross[:, c] += w * r64.sum(axis=0)
        return gram, cross

    def solve(self) -> np.ndarray:
        """`W (M, C)` float32: the ridge solve of the totals, in float64."""
        gram, cross = self.totals()
        return ridge_solve(gram, cross, self.lam).astype(np.float32)

    def add_class(self) -> int:
        """A new class with no workstation clips; returns its index."""
        self.cross = np.concatenate([self.cross, np.zeros((self.dim, 1))], axis=1)
        self.counts = np.append(self.counts, 0.0)
        return self.num_classes - 1

    def add_rows(self, c: int, h: np.ndarray) -> None:
        old = self.rows.get(c, np.zeros((0, self.dim), np.float32))
        self.rows[c] = np.concatenate([old, h.astype(np.float32)])

    def remove_class(self, c: int) -> None:
        """Drop class c: its column, its count and its device rows. The workstation's clips of
        c stay inside G (only their sum is here), so the other classes keep exactly the scores
        they had; a class learned on the device leaves no trace (docs/method.md)."""
        self.cross = np.delete(self.cross, c, axis=1)
        self.counts = np.delete(self.counts, c)
        self.rows = {(k if k < c else k - 1): r for k, r in self.rows.items() if k != c}


def ridge_solve(gram: np.ndarray, cross: np.ndarray, lam: float) -> np.ndarray:
    """`(G + lambda I)^-1 C` in float64 (G + lambda I is symmetric positive definite)."""
    a = gram + lam * np.eye(gram.shape[0])
    return np.linalg.solve(a, cross)


def sums_section(sums: HeadSums, classes: list[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The manifest's `head.sums` and `head.learned` (None without device rows) for `sums`."""
    section = {"gram": HEAD_GRAM_FILE, "cross": HEAD_CROSS_FILE, "dtype": sums.dtype,
               "counts": [int(round(float(n))) for n in sums.counts], "n_ref": float(sums.n_ref)}
    learned_classes = [c for c in range(sums.num_classes) if sums.device_clips(c)]
    if not learned_classes:
        return section, None
    return section, {"rows": HEAD_ROWS_FILE, "classes": [classes[c] for c in learned_classes],
                     "clips": [sums.device_clips(c) for c in learned_classes]}


def save_sums(folder: Any, sums: HeadSums) -> list[str]:
    """Write G, C and the device rows (if any) into `folder`; returns the file names."""
    np.save(folder / HEAD_GRAM_FILE, sums.gram.astype(sums.dtype), allow_pickle=False)
    np.save(folder / HEAD_CROSS_FILE, sums.cross.astype(sums.dtype), allow_pickle=False)
    names = [HEAD_GRAM_FILE, HEAD_CROSS_FILE]
    if any(len(r) for r in sums.rows.values()):
        rows = np.concatenate([sums.rows[c] for c in sorted(sums.rows) if len(sums.rows[c])])
        np.save(folder / HEAD_ROWS_FILE, rows.astype(np.float32), allow_pickle=False)
        names.append(HEAD_ROWS_FILE)
    return names


def check_sums_fields(m: dict[str, Any], problems: list[str]) -> None:
    """Type and range of `head.sums` and `head.learned` (both optional)."""
    h = m["head"]
    s, files, C = h.get("sums"), m.get("files") or {}, (m.get("dims") or {}).get("C")
    if s is not None:
        counts = s.get("counts") if isinstance(s, dict) else None
        if not isinstance(s, dict) or s.get("gram") not in files or s.get("cross") not in files or \
                s.get("dtype") not in SUMS_DTYPES or not isinstance(counts, list) or len(counts) != C or \
                not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts) or \
                not isinstance(s.get("n_ref"), (int, float)) or not s["n_ref"] > 0:
            problems.append(f"head.sums is {s!r}: must name the gram and cross files listed under files, a dtype "
                            f"({', '.join(SUMS_DTYPES)}), a clip count >= 0 per class ({C}) and n_ref > 0")
    learned = h.get("learned")
    if learned is not None:
        names, clips = (learned.get("classes"), learned.get("clips")) if isinstance(learned, dict) else (None, None)
        if s is None or not isinstance(learned, dict) or learned.get("rows") not in files or \
                not isinstance(names, list) or not all(n in m.get("classes", []) for n in names) or \
                len(set(names)) != len(names) or not isinstance(clips, list) or len(clips) != len(names) or \
                not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in clips):
            problems.append(f"head.learned is {learned!r}: must come with head.sums and give the rows file, "
                            "the classes learned on the device (each once, each in classes) and their clips >= 1")


def load_sums(path: Any, m: dict[str, Any], load_array: LoadArray) -> HeadSums | None:
    """The head's sums (None for a bundle exported without them), shapes checked."""
    h = m["head"]
    s = h.get("sums")
    if s is None:
        return None
    M, C = h["projection"]["out_dim"], m["dims"]["C"]
    gram = load_array(path, s["gram"], "head.sums.gram").astype(np.float64)
    cross = load_array(path, s["cross"], "head.sums.cross").astype(np.float64)
    if gram.shape != (M, M) or cross.shape != (M, C):
        raise BundleError(f"bundle {str(path)!r} is inconsistent: head sums are {gram.shape} and {cross.shape}, "
                          f"expected ({M}, {M}) and ({M}, {C}); re-export it")
    sums = HeadSums(gram=gram, cross=cross, counts=np.asarray(s["counts"], np.float64), n_ref=float(s["n_ref"]),
                    lam=float(h["lambda"]), balance=h.get("balance", "weight"), dtype=s["dtype"])
    learned = h.get("learned")
    if learned is not None:
        rows = load_array(path, learned["rows"], "head.learned.rows")
        if rows.shape != (sum(learned["clips"]), M):
            raise BundleError(f"bundle {str(path)!r} is inconsistent: head.learned.rows is {rows.shape}, expected "
                              f"({sum(learned['clips'])}, {M}); learn the classes again from the earlier bundle")
        start = 0
        for name, k in zip(learned["classes"], learned["clips"]):
            sums.rows[m["classes"].index(name)] = rows[start:start + k].astype(np.float32)
            start += k
    return sums
