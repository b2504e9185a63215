"""Class-incremental protocols: class order and the split of classes into tasks.

`A+BxC` is TCD's notation: A classes in the base task, then C tasks of B classes
(UCF101 `51+10x5`). `BxC` has no base task (vCLIMB's Kinetics `10x40`). The class
order is TCD's `RandomState(seed).permutation(C)` over alphabetical class indices,
or the dataset's own order with `natural`.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import StprError
from .tasks import check_classes_present

log = logging.getLogger(__name__)

_SPEC = re.compile(r"^\s*(?:(\d+)\s*\+\s*)?(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class ProtocolSpec:
    base: int  # classes in task 0 (0: no base task)
    per_task: int  # classes per incremental task
    num_incremental: int  # incremental tasks after the base

    @property
    def num_classes(self) -> int:
        return self.base + self.per_task * self.num_incremental

    @property
    def sizes(self) -> list[int]:
        return ([self.base] if self.base else []) + [self.per_task] * self.num_incremental


def parse_protocol(spec: str) -> ProtocolSpec:
    m = _SPEC.match(spec)
    if not m or int(m.group(2)) == 0 or int(m.group(3)) == 0:
        raise StprError(f"protocol {spec!r} is not of the form 'A+BxC' (e.g. 51+10x5) or 'BxC' (e.g. 10x40)")
    return ProtocolSpec(int(m.group(1) or 0), int(m.group(2)), int(m.group(3)))


def class_order(num_classes: int, mode: str, seed: int, dataset: str = "") -> list[int]:
    """TCD's order: a permutation of 0-based alphabetical class indices from `seed`.

    `auto` keeps the built-in synthetic set in its own order (its tasks are built that
    way) and uses TCD's seeded order for every real dataset.
    """
    if mode == "auto":
        mode = "natural" if dataset == "synthetic" else "seeded"
    if mode == "natural":
        return list(range(num_classes))
    if mode == "seeded":
        return [int(c) for c in np.random.RandomState(seed).permutation(num_classes)]
    raise StprError(f"class order {mode!r} is not valid; choose 'seeded' or 'natural'")


def build_tasks(spec: str, num_classes: int, order: list[int], dataset: str = "the dataset") -> list[list[int]]:
    """Dataset class ids per task, following `order`."""
    p = parse_protocol(spec)
    if p.num_classes > num_classes:
        raise StprError(
            f"protocol {spec!r} needs {p.num_classes} classes but {dataset} has {num_classes}; "
            f"pick a protocol with at most {num_classes} classes"
        )
    if p.num_classes < num_classes:
        log.warning("protocol %s uses %d of the %d classes of %s", spec, p.num_classes, num_classes, dataset)
    tasks, start = [], 0
    for size in p.sizes:
        tasks.append(order[start : start + size])
        start += size
    return tasks


def load_task_file(path: str, classes: list[str], allow_pickle: bool) -> list[list[int]]:
    """Tasks from a file: a JSON list of tasks, each a list of class names (or a dict
    keyed by class name, as vCLIMB's task files are). vCLIMB ships pickles: reading one
    runs code from it, so it needs `data.allow_pickle: true`, or convert it once with
    `scripts/data/convert_task_file.py` into JSON."""
    import json
    from pathlib import Path as _Path

    p = _Path(path)
    if not p.is_file():
        raise StprError(f"task file {path!r} does not exist")
    if p.suffix == ".json":
        raw = json.loads(p.read_text())
    elif not allow_pickle:
        raise StprError(f"task file {path!r} is not JSON; pickles can run code when read. Convert it with "
                        f"`python scripts/data/convert_task_file.py {path}` or, for a file you trust, "
                        "set data.allow_pickle=true")
    else:
        import pickle

        with open(p, "rb") as f:
            raw = pickle.load(f)  # noqa: S301 - explicit user opt-in (data.allow_pickle)
    index = {c: i for i, c in enumerate(classes)}
    norm = {c.replace(" ", "_").lower(): i for i, c in enumerate(classes)}
    tasks = []
    for k, task in enumerate(raw):
        names = list(task.keys()) if isinstance(task, dict) else list(task)
        ids = []
        for n in names:
            i = index.get(n, norm.get(str(n).replace(" ", "_").lower()))
            if i is None:
                raise StprError(f"task {k} of {path!r} names class {n!r}, which the dataset does not have")
            ids.append(i)
        tasks.append(ids)
    flat = [c for t in tasks for c in t]
    if len(flat) != len(set(flat)):
        raise StprError(f"task file {path!r} puts a class in two tasks")
    return tasks


def run_tasks(data: Any, splits: Any, seed: int) -> list[list[int]]:
    """A run's tasks (dataset class ids per task) from its data config (`DataConfig`) and splits:
    the task file's, or the protocol's in the configured class order; every class must have
    training and test videos."""
    if data.task_file:  # e.g. vCLIMB's Kinetics tasks: their order and split, not the protocol's
        tasks = load_task_file(data.task_file, splits.classes, data.allow_pickle)
    else:
        order = class_order(len(splits.classes), data.class_order, seed, data.dataset)
        tasks = build_tasks(data.protocol, len(splits.classes), order, dataset=repr(data.dataset))
    for ids in tasks:
        check_classes_present(splits.train, ids, "training")
        check_classes_present(splits.test, ids, "test")
    return tasks
