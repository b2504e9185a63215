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

import numpy as np

from ..errors import StprError

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


def class_order(num_classes: int, mode: str, seed: int) -> list[int]:
    """TCD's order: a permutation of 0-based alphabetical class indices from `seed`."""
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
