"""stpr.export: run directory -> ONNX / fp16 / TensorRT bundle with a parity report.

    from stpr.export import export_run
    result = export_run("runs/demo", "bundles/demo", fp16=True)
    result.files["backbone.onnx"], result.parity["fp32"]["top1_agreement"]
"""
from .bundle import ExportResult, export_run

__all__ = ["ExportResult", "export_run"]
