"""stpr.export: run directory -> ONNX / fp16 / TensorRT bundle with a parity report.

    from stpr.export import export_run
    result = export_run("runs/demo", "bundles/demo", fp16=True)   # the demo: the head alone
    result.files["head_weights.npy"], result.parity["fp32_head"]["top1_agreement"]
"""
from __future__ import annotations

from typing import Any

__all__ = ["ExportResult", "export_run"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `stpr-export` imports this package before its main() runs, and
    # torch/onnx missing must reach main as a one-line "install [export]" error.
    if name == "export_run":
        from .bundle import export_run

        return export_run
    if name == "ExportResult":
        from .result import ExportResult

        return ExportResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
