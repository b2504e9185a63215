"""The int8 experts for CPUs, with onnxruntime's maintained quantization tool.

Dynamic quantization of the MatMul weights (`onnxruntime.quantization.quantize_dynamic`):
weights are stored int8 with one scale per output channel, activations are quantized
per call, so no calibration data is needed. The experts are memory-bound on a CPU
(each step reads every expert's weights once), so a quarter of the bytes is most of
the win; LayerNorm, Softmax and the residual adds stay float32.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class _QuietPreprocessHint(logging.Filter):
    # quantize_dynamic logs a hint to run its shape pre-processing on the root logger; the
    # exported experts already carry full shapes, so the hint is noise on stpr-export's stderr.
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def to_int8(src: Path, dst: Path) -> Path:
    """`src` ONNX -> `dst` with int8 MatMul weights (per channel) and float32 inputs/outputs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = _QuietPreprocessHint()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True)
    finally:
        root.removeFilter(quiet)
    return dst
