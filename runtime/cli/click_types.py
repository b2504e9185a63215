"""Click parameter types shared by the stpr commands (torch-free: the training side imports them too)."""
from __future__ import annotations

import math
from typing import Any

import click

DAY_S = 86400.0  # the longest wait an option may ask for: threading and OpenCV's millisecond ints overflow past it


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and inf in one line (exit 2), inside an optional range.

    float() accepts "nan" and "inf", and a NaN passes every range check (it compares false
    with any bound): a NaN timeout or interval then spins or crashes far from the command line."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; give a number such as 2.5 (nan and inf are refused)",
                      param, ctx)
        return number
