"""Mixed-precision fp16 twins of the exported ONNX files.

Made with onnxruntime's maintained float16 converter (`onnxruntime.transformers`;
onnxconverter-common 1.16 breaks on the Cast nodes the tracer emits). Inputs and outputs
stay float32 (`keep_io_types`), and the ops whose fp16 error grows with width or
depth (LayerNorm's variance, Softmax's exponent, reductions) are kept in float32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import onnx
from onnxruntime.transformers import float16
from onnxruntime.transformers.onnx_model import OnnxModel

KEEP_FP32 = ["LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceL2", "Pow", "Sqrt", "Div"]

# Transpose stays float32 in the plain (adapter-free) image and text towers: onnxruntime's
# transpose optimiser crashes (SIGSEGV) on their fp16 attention transposes when it loads the
# graph (1.32 here).
PLAIN_TOWERS_FP16_KEEP_FP32 = ("Transpose",)

def to_fp16(src: Path, dst: Path, keep_fp32: Sequence[str] = ()) -> Path:
    """`keep_fp32`: more op types to leave in float32 for this graph."""
    model = onnx.load(str(src))
    block = list(float16.DEFAULT_OP_BLOCK_LIST) + KEEP_FP32 + list(keep_fp32)
    half = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    # The converter appends the input casts after their consumers: restore node order.
    wrapped = OnnxModel(half)
    wrapped.topological_sort()
    half = wrapped.model
    onnx.checker.check_model(half, full_check=True)
    onnx.save(half, str(dst))
    return dst
