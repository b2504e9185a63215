"""The fused experts graph: every expert of a bundle in one ONNX, `(B, T, D) -> (B, K, D)`.

Built from the per-expert files themselves (not traced again), so the fused graph
computes exactly what `expert_<k>.onnx` computes: each expert's nodes are copied with
its names prefixed, all read the one `features` input, and their `z` outputs are
stacked on axis 1. One session call replaces K: on a device the per-call overhead
and the K separate thread-pool wake-ups are what the fused graph saves.

The weights are stored once: the fused graph keeps them in `experts.onnx.data` (ONNX
external data), and each per-expert file is rewritten to point at its slice of that
file. Both still load on their own (onnxruntime and TensorRT resolve external data
beside the model), the bundle does not carry the experts twice, and a fused graph
past protobuf's 2 GB limit (about 55 fp32 ViT-B experts) still saves.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import helper
from onnx.external_data_helper import set_external_data

from stpr.runtime.atomic import atomic_path
from stpr.runtime.contract import EXPERT_INPUT, EXPERT_OUTPUT

INPUT, OUTPUT = EXPERT_INPUT, EXPERT_OUTPUT  # the names every expert file and the fused graph use


def _prefixed(graph: onnx.GraphProto, prefix: str) -> tuple[list, list]:
    """Nodes and initializers of one expert, every name but the shared input prefixed."""
    def rename(name: str) -> str:
        return name if name in ("", INPUT) else prefix + name

    nodes = []
    for node in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + (node.name or node.op_type)
        copy.input[:] = [rename(n) for n in node.input]
        copy.output[:] = [rename(n) for n in node.output]
        nodes.append(copy)
    inits = []
    for init in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = rename(init.name)
        inits.append(copy)
    return nodes, inits


def fuse_experts(expert_files: list[Path], dst: Path) -> Path:
    """One graph running every expert of `expert_files` on the same window: `z (B, K, D)`."""
    if not expert_files:
        raise ValueError("fuse_experts needs at least one expert file")
    first = onnx.load(str(expert_files[0]))
    nodes, inits = [], []
    unsqueezed = []
    axes = helper.make_tensor("fused/axis1", onnx.TensorProto.INT64, [1], [1])
    inits.append(axes)
    for k, path in enumerate(expert_files):
        model = first if k == 0 else onnx.load(str(path))
        graph = model.graph
        if [i.name for i in graph.input] != [INPUT] or [o.name for o in graph.output] != [OUTPUT]:
            raise ValueError(f"{path} is not an expert graph ({INPUT!r} -> {OUTPUT!r})")
        prefix = f"expert_{k}/"
        k_nodes, k_inits = _prefixed(graph, prefix)
        nodes += k_nodes
        inits += k_inits
        unsqueezed.append(f"{prefix}z_k")  # (B, 1, D)
        nodes.append(helper.make_node("Unsqueeze", [prefix + OUTPUT, axes.name], [unsqueezed[-1]],
                                      name=f"{prefix}unsqueeze"))
    nodes.append(helper.make_node("Concat", unsqueezed, [OUTPUT], name="fused/stack", axis=1))  # (B, K, D)
    out_type = first.graph.output[0].type.tensor_type
    dims = [d.dim_param or d.dim_value for d in out_type.shape.dim]  # (B, D)
    output = helper.make_tensor_value_info(OUTPUT, out_type.elem_type, [dims[0], len(expert_files), dims[1]])
    graph = helper.make_graph(nodes, "experts_fused", list(first.graph.input), [output], inits)
    fused = helper.make_model(graph, opset_imports=list(first.opset_import), ir_version=first.ir_version,
                              producer_name="stpr.export.fuse")
    fused.metadata_props.extend(first.metadata_props)
    onnx.checker.check_model(fused)  # each expert file had the full check at export
    data = f"{dst.name}.data"
    (dst.parent / data).unlink(missing_ok=True)  # save_model appends to an existing data file
    onnx.save_model(fused, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)
    # onnx creates the data file 0600; give it what a plain open() would, so a service
    # account that may read the bundle can read its weights.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(dst.parent / data, 0o666 & ~umask)
    onnx.checker.check_model(str(dst))
    _share_weights(dst, expert_files)
    return dst


def _share_weights(fused_path: Path, expert_files: list[Path]) -> None:
    """Point each expert file's large initializers at the fused graph's external data."""
    fused = onnx.load(str(fused_path), load_external_data=False)
    where = {t.name: {e.key: e.value for e in t.external_data} for t in fused.graph.initializer
             if t.data_location == onnx.TensorProto.EXTERNAL}
    for k, path in enumerate(expert_files):
        model = onnx.load(str(path))
        for t in model.graph.initializer:
            ext = where.get(f"expert_{k}/{t.name}")
            if ext is None:  # small tensors (< 1 KiB) stay inside the file
                continue
            set_external_data(t, location=ext["location"], offset=int(ext["offset"]), length=int(ext["length"]))
            t.data_location = onnx.TensorProto.EXTERNAL
            t.ClearField("raw_data")
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
