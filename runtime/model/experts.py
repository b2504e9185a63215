"""Expert variants of a bundle and the runner that turns a window into all K expert outputs.

A bundle holds the experts in up to three precisions (`--experts fp32|fp16|int8`),
each per expert (`expert_<k>.onnx`, the design card's files) and/or fused into one
graph (`experts.onnx`: `(B, T, D) -> (B, K, D)` in one call). The runtime takes the
fused graph when the bundle has it: one session call per step instead of K.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..contract import EXPERT_INPUT, EXPERT_OUTPUT, FUSED_KEY, PER_EXPERT_KEY
from ..contract import PRECISIONS as EXPERT_VARIANTS
from ..errors import BundleError

# manifest key of each variant's per-expert file list and of its fused file (int8 is fused only:
# it exists for the CPU, where the fused graph is what runs)
EXPORT_FLAG = {"fp32": "", "fp16": " --fp16", "int8": " --int8"}


def expert_files(manifest: dict[str, Any], variant: str, fused: bool = True) -> tuple[list[str], bool]:
    """(files, is_fused) for `variant`: the fused graph when present and wanted, else one per expert."""
    if variant not in EXPERT_VARIANTS:
        raise ValueError(f"--experts {variant!r} is not valid; choose one of {', '.join(EXPERT_VARIANTS)}")
    if fused and FUSED_KEY[variant] in manifest:
        return [manifest[FUSED_KEY[variant]]], True
    if variant in PER_EXPERT_KEY and PER_EXPERT_KEY[variant] in manifest:
        return list(manifest[PER_EXPERT_KEY[variant]]), False
    have = [v for v in EXPERT_VARIANTS if FUSED_KEY[v] in manifest or PER_EXPERT_KEY.get(v, "") in manifest]
    raise BundleError(f"the bundle has no {variant} experts (it has: {', '.join(have)}); re-export it with "
                      f"`stpr-export RUN --out BUNDLE{EXPORT_FLAG[variant]}` or pick --experts {have[0]}")


class ExpertsRunner:
    """All K experts behind one call, over either one fused runner or one runner per expert.

    The runners follow the backends' small interface (`infer(feed) -> outputs`, context
    managers); this class owns entering and leaving them.
    """

    def __init__(self, runners: list[Any], fused: bool) -> None:
        if fused and len(runners) != 1:
            raise ValueError(f"a fused experts graph is one runner, got {len(runners)}")
        self.runners, self.fused = runners, fused

    def __enter__(self) -> "ExpertsRunner":
        entered = []
        try:
            for r in self.runners:
                r.__enter__()
                entered.append(r)
        except BaseException:
            for r in entered:  # a failed start (bad file) must not leak the sessions already open
                r.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for r in self.runners:
            r.__exit__(*exc)

    def __len__(self) -> int:
        return len(self.runners)

    def infer(self, window: np.ndarray) -> np.ndarray:
        """`(B, T, D)` frame features -> `(B, K, D)` expert outputs."""
        if self.fused:
            return self.runners[0].infer({EXPERT_INPUT: window})[EXPERT_OUTPUT]
        return np.stack([r.infer({EXPERT_INPUT: window})[EXPERT_OUTPUT] for r in self.runners], axis=1)
