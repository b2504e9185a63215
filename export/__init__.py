"""stpr.export: run directory -> ONNX/TensorRT bundle (see ARCHITECTURE.md; the `stpr-export` issue)."""
