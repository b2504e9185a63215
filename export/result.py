"""What an export returns (the bundle, its files, parity and open-set reports, manifest) and
the timer each of its steps runs under."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    bundle: Path
    files: dict[str, Path] = field(default_factory=dict)  # bundle file name -> final path
    parity: dict[str, Any] = field(default_factory=dict)
    openset: dict[str, Any] = field(default_factory=dict)  # empty: no open-set calibration
    manifest: dict[str, Any] = field(default_factory=dict)  # the bundle's sealed manifest
    timings_s: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def timed_step(result: ExportResult, name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    result.timings_s[name] = round(time.perf_counter() - t0, 3)
    log.info("export step %s: %.2fs", name, result.timings_s[name])
