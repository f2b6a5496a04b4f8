"""ONNX graphs as exporters write them, made ready for the onnx2torch converter.

PyTorch's, PaddlePaddle's and other exporters write graphs that run in onnxruntime but that a
node-by-node converter cannot read as they are. ``normalise`` fixes them with the ONNX
project's own tools first and rewrites by hand only what none of them does:

1. graphs above opset ``CONVERTER_OPSET`` are converted down with onnx's version converter
   (the converter's table stops there);
2. an input whose height or width the graph leaves open gets the spec's ``input.size``;
3. weights held in ``Constant`` nodes (PaddlePaddle) become initializers, ``Identity`` nodes
   are removed, so weights shared through ``Identity`` over one initializer (PyTorch's
   exporter does this for shared convolutions) are read from the initializer itself, and
   shape computations (``Shape`` -> ``Gather`` -> ``Concat`` -> ``Reshape``) of known sizes
   are folded, so that every tensor's rank is known: onnxslim's constant folding, with its
   fusions left off;
4. onnx's shape inference gives every tensor's shape, and ``auto_pad`` ``SAME_UPPER`` /
   ``SAME_LOWER`` of convolutions and pooling become explicit ``pads`` as the ONNX operator
   specification defines them; padding the converter cannot hold in the layer itself (more
   on one side than the other) goes into a ``Pad`` node in front of it, named
   ``<node>/pad``, so the layer keeps its name and stays a plain convolution or pooling.

``GraphFacts`` says what was done and what the graph fixes: a batch fixed at 1 in the graph's
input (exporters bake it into reshapes, so such a graph must see one image at a time).

Every failure is a GraphError naming the node and what to try.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CONVERTER_OPSET = 17  # the newest opset every converter of onnx2torch 1.5 covers
OLDEST_OPSET = 7
_POOLS = ("MaxPool", "AveragePool", "LpPool")


class GraphError(Exception):
    """A graph that cannot be made convertible: ``node`` (its name, or None for the whole
    graph) and ``fix`` (what to try), besides the message."""

    def __init__(self, message: str, fix: str, node: str | None = None):
        super().__init__(message)
        self.fix, self.node = fix, node


@dataclass
class GraphFacts:
    """What ``normalise`` found and did."""

    opset: int  # the graph's own opset
    converted_from: int | None = None  # the opset it was converted down from, if it was
    input_name: str = ""
    input_shape: tuple = ()  # ints for fixed dims, strings for named ones, None for unknown
    fixed_batch: int | None = None  # the batch the graph's input fixes, if it does
    rewrites: list[str] = field(default_factory=list)  # one line per kind of change made
    checker: str | None = None  # what onnx's checker found wrong, if anything


def opset_of(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def graph_inputs(model) -> list:
    """The graph's real inputs (old exporters list initializers as inputs too)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dims(value_info) -> tuple:
    shape = value_info.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim)


def normalise(model, input_size: tuple[int, int] | None = None):
    """``model`` (an onnx ModelProto) made convertible; returns (new model, GraphFacts).

    ``input_size``: (height, width) the images will have, used for the padding of strided
    ``SAME_*`` layers where the graph leaves its input size open.
    """
    import onnx

    opset = opset_of(model)
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise GraphError(f"the graph takes {len(inputs)} inputs ({names}), not one image tensor",
                         "export the network with one image input (N, C, H, W)")
    facts = GraphFacts(opset=opset, input_name=inputs[0].name, input_shape=_dims(inputs[0]))
    if len(facts.input_shape) != 4:
        raise GraphError(f"its input '{facts.input_name}' has shape {_shape_text(facts.input_shape)}, "
                         "not (N, C, H, W)", "export the network with an image input of four dimensions")
    batch = facts.input_shape[0]
    if isinstance(batch, int) and batch > 0:
        if batch != 1:
            raise GraphError(f"its input '{facts.input_name}' fixes the batch at {batch}",
                             "export it with batch 1 or a dynamic batch (dynamic_axes={'input': {0: 'batch'}})")
        facts.fixed_batch = 1
        facts.rewrites.append("the graph fixes its batch at 1: images go through it one at a time")
    if opset < OLDEST_OPSET:
        raise GraphError(f"it uses opset {opset}", f"export it at opset {CONVERTER_OPSET} (opset_version=17)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx.checker.ValidationError and protobuf errors
        # Exporters write graphs that onnxruntime runs and the checker still faults (an output
        # without a shape, say): go on, and say it if the conversion fails.
        facts.checker = _first(exc)
    if opset > CONVERTER_OPSET:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, CONVERTER_OPSET)
        except Exception as exc:  # the version converter raises RuntimeError and friends
            raise GraphError(f"onnx's version converter cannot take it from opset {opset} down to "
                             f"{CONVERTER_OPSET} ({_first(exc)})",
                             f"export it at opset {CONVERTER_OPSET} (torch.onnx.export(..., opset_version=17))") from None
        facts.converted_from = opset
        facts.rewrites.append(f"converted from opset {opset} to {CONVERTER_OPSET} by onnx's version converter")
    model = _fixed_input_size(model, facts, input_size)
    model = _fold_constants_and_identities(model, facts)
    model = _explicit_pads(model, facts, input_size)
    return model, facts


def _fixed_input_size(model, facts: GraphFacts, input_size: tuple[int, int] | None):
    """An input whose height or width the graph leaves open gets the spec's ``input.size``
    (every image reportgen feeds has it): shape inference then knows every tensor's rank,
    which the converter needs (PaddlePaddle's recognisers leave the height open)."""
    if input_size is None:
        return model
    dims = next(i for i in model.graph.input if i.name == facts.input_name).type.tensor_type.shape.dim
    open_dims = [(d, int(size)) for d, size in zip(list(dims)[2:], input_size) if not d.HasField("dim_value")]
    if not open_dims:
        return model
    for d, size in open_dims:
        d.dim_value = size
    facts.input_shape = _dims(next(i for i in model.graph.input if i.name == facts.input_name))
    facts.rewrites.append(f"its open input size set to the spec's {input_size[0]}x{input_size[1]}")
    return model


def _fold_constants_and_identities(model, facts: GraphFacts):
    """Constant nodes -> initializers, Identity nodes removed, shape computations of known
    sizes folded into constants: onnxslim's constant folding and dead-node elimination, with its
    fusions, weight tying and subexpression merging left off (layers keep their names and
    weights)."""
    import contextlib
    import io

    counts = {op: sum(n.op_type == op for n in model.graph.node) for op in ("Constant", "Identity", "Shape")}
    if not any(counts.values()):
        return model
    try:
        import onnxslim
    except ImportError:
        raise GraphError("the graph holds Constant, Identity or Shape nodes and onnxslim is not installed",
                         'install the ONNX extra: pip install "reportgen[onnx]"') from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it reports progress on stdout
            slim = onnxslim.slim(model, skip_optimizations=["graph_fusion", "weight_tying",
                                                            "subexpression_elimination"])
    except Exception as exc:  # noqa: BLE001 - onnxslim raises whatever its passes meet
        raise GraphError(f"onnxslim cannot fold its Constant, Identity and shape nodes ({_first(exc)})",
                         f"export it at opset {CONVERTER_OPSET} with do_constant_folding=True") from None
    left = {op: sum(n.op_type == op for n in slim.graph.node) for op in counts}
    done = [f"{counts[op] - left[op]} {op} node(s) {what}" for op, what in
            (("Constant", "made initializers"), ("Identity", "removed"), ("Shape", "folded into constants"))
            if counts[op] > left[op]]
    if done:
        facts.rewrites.append(", ".join(done) + " (onnxslim)")
    return slim


def _explicit_pads(model, facts: GraphFacts, input_size: tuple[int, int] | None):
    """auto_pad SAME_UPPER / SAME_LOWER -> explicit pads (and a Pad node for the uneven part)."""
    import onnx
    from onnx import helper, numpy_helper

    same = {i for i, n in enumerate(model.graph.node) if n.op_type in ("Conv", "ConvTranspose", *_POOLS)
            and _attr(n, "auto_pad", b"NOTSET") in (b"SAME_UPPER", b"SAME_LOWER")}
    if not same:
        return model
    shapes = _inferred_shapes(model, facts, input_size)
    inits = {i.name: i for i in model.graph.initializer}
    opset = opset_of(model)
    new_nodes, new_inits = [], []
    rewritten = 0
    for index, node in enumerate(model.graph.node):
        if index not in same:
            new_nodes.append(node)
            continue
        mode = _attr(node, "auto_pad", b"NOTSET").decode()
        what = f"node '{node.name}' ({node.op_type}, auto_pad {mode})"
        if node.op_type == "ConvTranspose":
            raise GraphError(f"{what}: reportgen cannot rewrite a transposed convolution's SAME padding",
                             "export it with explicit padding (padding=... in ConvTranspose2d)", node.name)
        kernel = list(_attr(node, "kernel_shape", []))
        if not kernel and node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            kernel = list(inits[node.input[1]].dims[2:])
        rank = len(kernel)
        if not rank:
            raise GraphError(f"{what}: its kernel size is not known", "export it with explicit padding", node.name)
        strides = list(_attr(node, "strides", [])) or [1] * rank
        dilations = list(_attr(node, "dilations", [])) or [1] * rank
        spatial = shapes.get(node.input[0], ())[2:]
        begin, end = [], []
        for i in range(rank):
            span = (kernel[i] - 1) * dilations[i] + 1
            if strides[i] == 1:
                total = span - 1  # whatever the input size
            else:
                size = spatial[i] if i < len(spatial) else None
                if not isinstance(size, int) or size <= 0:
                    raise GraphError(f"{what}: with stride {strides[i]} its padding depends on the input size, which "
                                     "the graph leaves open", "set input.size in the spec (the size the "
                                     "model was exported at), or export it with explicit padding", node.name)
                total = max(0, (math.ceil(size / strides[i]) - 1) * strides[i] + span - size)
            small, large = total // 2, total - total // 2
            begin.append(small if mode == "SAME_UPPER" else large)
            end.append(large if mode == "SAME_UPPER" else small)
        even = [min(b, e) for b, e in zip(begin, end)]
        extra = [b - m for b, m in zip(begin, even)] + [e - m for e, m in zip(end, even)]
        attrs = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        attrs.append(helper.make_attribute("pads", even + even))
        source = node.input[0]
        if any(extra):
            if node.op_type == "AveragePool" and not _attr(node, "count_include_pad", 0):
                raise GraphError(f"{what}: its padding is uneven, and an average that leaves padding out of "
                                 "the count cannot be split into a Pad and a pooling",
                                 "export it with explicit, even padding", node.name)
            value = float("-inf") if node.op_type == "MaxPool" else 0.0
            padded = f"{node.name or node.output[0]}/pad"
            pads = [0, 0] + extra[:rank] + [0, 0] + extra[rank:]  # N and C are not padded
            if opset >= 11:
                pads_init = numpy_helper.from_array(_int64(pads), name=f"{padded}/pads")
                value_init = numpy_helper.from_array(_float32([value]).reshape(()), name=f"{padded}/value")
                new_inits += [pads_init, value_init]
                new_nodes.append(helper.make_node("Pad", [source, pads_init.name, value_init.name],
                                                  [f"{padded}/output"], name=padded, mode="constant"))
            else:
                new_nodes.append(helper.make_node("Pad", [source], [f"{padded}/output"], name=padded,
                                                  mode="constant", pads=pads, value=value))
            source = f"{padded}/output"
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.attribute[:]
        copy.attribute.extend(attrs)
        copy.input[0] = source
        new_nodes.append(copy)
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(new_inits)
    facts.rewrites.append(f"{rewritten} SAME_UPPER/SAME_LOWER padding(s) made explicit")
    return model


def _inferred_shapes(model, facts: GraphFacts, input_size: tuple[int, int] | None) -> dict[str, tuple]:
    """Each tensor's shape by onnx's shape inference; an input whose height and width the
    graph leaves open takes ``input_size`` (for the inference only)."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    if input_size is not None:
        for inp in probe.graph.input:
            if inp.name == facts.input_name:
                dims = inp.type.tensor_type.shape.dim
                for d, size in zip(list(dims)[2:], input_size):
                    if not d.HasField("dim_value"):
                        d.dim_value = int(size)
    try:
        probe = onnx.shape_inference.infer_shapes(probe)
    except Exception:  # noqa: BLE001 - an inference that fails leaves the shapes unknown
        return {}
    values = list(probe.graph.input) + list(probe.graph.value_info) + list(probe.graph.output)
    return {v.name: _dims(v) for v in values}


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _int64(values):
    import numpy as np

    return np.asarray(values, dtype=np.int64)


def _float32(values):
    import numpy as np

    return np.asarray(values, dtype=np.float32)


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _first(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
