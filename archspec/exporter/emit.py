"""Emission: the analysed graph IR -> an ONNX graph, one kind's `emit_n` per node, in the IR's
topological order (as the ONNX operator schemas pair each operator with its shape inference, each
kind says which ONNX nodes it is).

Values are named `<layer path>/<Op>[_k]` and initializers `<layer path>.<tensor>`, so they never take
the spec's input and output names (identifiers, no '/' or '.'); every layer output gets archspec's
shape as `value_info`, its dynamic axes as named symbolic dims.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..analyze import Report
from ..layers import REGISTRY, TensorType
from ..symbolic import SymInt, recording
from .errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from .plan import Plan

ONNX_DTYPES = {"float32": 1, "int64": 7, "float16": 10}  # onnx.TensorProto's element types


@dataclass
class _Graph:
    """What the walk collects; turned into a GraphProto once, at the end."""

    opset: int
    weights: Mapping[str, Any]
    dtype: str = "float32"  # the model's floats (the data); `exact` constants keep their own type
    nodes: list[Any] = field(default_factory=list)
    initializers: dict[str, Any] = field(default_factory=dict)
    outputs: list[tuple[str, int, str]] = field(default_factory=list)  # (ONNX value, value id, scope): value_info
    taken: set[str] = field(default_factory=set)
    exact: set[str] = field(default_factory=set)  # initializers kept in their type (`Emitter.exact`)


class Emitter:
    """One layer's view of the graph being built: `xs` are its input values (`x` the first); `op`
    adds a node, `param` one of the layer's own tensors, `const` a tensor derived from them, `exact` a
    constant of arithmetic kept in float32 (source coordinates). `dims` holds each input's axes,
    batch first, a name where the axis is dynamic: a kind may bake a size into its nodes only where
    the axis is static. `dtype` is the model's float type ("float32" or "float16"): float32 `param`
    and `const` tensors are converted with the data (`precision.to_float16`); a kind reads it where
    PyTorch computes in float32 on float16 data (`as_float32`, `as_data`) or rounds a constant to it."""

    def __init__(self, graph: _Graph, path: str, xs: list[str], doc: str, dims: list[list[int | str]] | None = None,
                 where: str = ""):
        self._g, self.path, self.xs, self.x, self._doc, self.dims = graph, path, xs, xs[0], doc, dims or []
        self._where = where or path  # the layer, for errors
        self.opset, self.dtype = graph.opset, graph.dtype
        self._inputs: dict[str, list[int | str]] = {}  # a body's own inputs (see `body`)

    def array(self, local: str) -> np.ndarray:
        """The layer's tensor `local` (its state-dict name without the layer path)."""
        return self._g.weights[f"{self.path}.{local}"]

    def param(self, local: str) -> str:
        name = f"{self.path}.{local}"
        self._g.initializers.setdefault(name, self._g.weights[name])
        return name

    def const(self, hint: str, value: np.ndarray) -> str:
        return self._constant(hint, value, exact=False)

    def exact(self, hint: str, value: np.ndarray) -> str:
        """A float constant of arithmetic a kind does in float32 whatever the data's type (source
        coordinates, interpolation weights): it keeps its type in a float16 model, where the data's
        constants are halved."""
        return self._constant(hint, value, exact=True)

    def as_float32(self, value: str) -> str:
        """A data value in float32, for arithmetic PyTorch does in float32 on float16 data (its opmath
        type): a Cast in a float16 model, the value itself in a float32 one."""
        return value if self.dtype == "float32" else self.op("Cast", [value], to=ONNX_DTYPES["float32"])

    def as_data(self, value: str) -> str:
        """A float32 value in the model's float type: a Cast in a float16 model (as_float32's inverse)."""
        return value if self.dtype == "float32" else self.op("Cast", [value], to=ONNX_DTYPES[self.dtype])

    def _constant(self, hint: str, value: np.ndarray, exact: bool) -> str:
        import numpy as np

        name = f"{self.path}.{hint}"
        known = self._g.initializers.get(name)
        if known is not None and not (known.dtype == value.dtype and np.array_equal(known, value)
                                      and (name in self._g.exact) == exact):
            raise AssertionError(f"constant {name} emitted twice with different values or roles")  # a kind's bug
        self._g.initializers[name] = value
        if exact:
            self._g.exact.add(name)
        return name

    def op(self, op_type: str, inputs: list[str], outputs: tuple[str, ...] | None = None, **attrs: Any) -> Any:
        """Adds one node; returns its output value, or a tuple of them when `outputs` names them
        ("" leaves an optional output out)."""
        from onnx import helper

        base = f"{self.path}/{op_type}"
        name, k = base, 1
        while name in self._g.taken:
            name, k = f"{base}_{k}", k + 1
        self._g.taken.add(name)
        for key, value in attrs.items():  # a size baked into an attribute would hold only at the declared size
            baked = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, SymInt)]
            if baked:
                symbols = sorted(set().union(*(v.expr.symbols for v in baked)))
                raise ExportError(f"the ONNX form of {self._where} bakes {key}={list(map(int, baked))} from "
                                  f"{', '.join(str(v.expr) for v in baked)}, so it holds only at the declared size; "
                                  f"export {' and '.join(symbols)} fixed (--dynamic without it)")
        outs = [f"{name}/{o}" if o else "" for o in outputs] if outputs else [name]
        node = helper.make_node(op_type, inputs, outs, name=name, doc_string=self._doc, **attrs)
        self._g.nodes.append(node)
        return tuple(outs) if outputs else outs[0]

    def body(self, name: str, inputs: Mapping[str, list[int | str]]) -> Emitter:
        """An emitter for a control-flow body (Scan, Loop): its nodes go to a graph of their own,
        made by `graph`, whose float32 inputs are `inputs` (local name -> dims) and are the child's
        `xs`. Names stay unique model-wide; `const` tensors are the model's initializers, which the
        body reads from the outer scope."""
        child = _Graph(self.opset, self._g.weights, self.dtype, initializers=self._g.initializers, taken=self._g.taken,
                       exact=self._g.exact)
        path = f"{self.path}/{name}"
        values = {f"{path}/{k}": dims for k, dims in inputs.items()}
        body = Emitter(child, path, list(values), self._doc, self.dims, self._where)
        body._inputs = values
        return body

    def graph(self, outputs: Mapping[str, list[int | str]]) -> Any:
        """The body this emitter (from `body`) collected, as a GraphProto with float32 `outputs`
        (value -> dims)."""
        from onnx import helper

        def info(values: Mapping[str, list[int | str]]) -> list[Any]:
            return [helper.make_tensor_value_info(v, ONNX_DTYPES["float32"], dims) for v, dims in values.items()]

        return helper.make_graph(self._g.nodes, self.path, info(self._inputs), info(outputs))

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: int = 1) -> str:
        """Reduce* with `axes` as an attribute (opset < 18) or as an input (opset >= 18)."""
        import numpy as np

        if self.opset >= 18:
            return self.op(op_type, [x, self.const("axes" + "_".join(map(str, axes)), np.array(axes, np.int64))],
                           keepdims=keepdims)
        return self.op(op_type, [x], axes=axes, keepdims=keepdims)


def emit_graph(report: Report, weights: Mapping[str, Any], plan: Plan, opset: int,
               dtype: str = "float32") -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The model: each node's ONNX nodes from its kind, the spec's input and output names, archspec's
    types as value_info (dynamic axes as named symbolic dims); and its initializers, name -> the
    numpy array itself, apart from the graph (`write.save` streams them: no TensorProto copies).
    dtype "float16": the data and its tensors in half precision, `Emitter.exact` constants as emitted."""
    from onnx import helper

    g = _Graph(opset, weights, dtype)
    graph = report.graph
    names: dict[int, str] = {}  # value id -> ONNX value
    for vid, v in enumerate(graph.values):
        if v.producer is None:
            names[vid] = v.name
    g.taken.update(i.name for i in graph.inputs)
    g.taken.update(o.name for o in graph.outputs)
    for node in graph.nodes:
        doc = f"{node.scope}: {node.kind} at {node.loc}"
        if node.calls:
            doc += " (" + "; ".join(f"{note} at {loc}" for note, loc in node.calls) + ")"
        xs = tuple(_dynamic(report, v, plan.dynamic) for v in node.inputs)
        ys = tuple(_dynamic(report, v, plan.dynamic) for v in node.outputs)
        where = f"{node.kind} '{node.scope}' at {node.loc}"
        dims = [plan.dims(v, node.scope) for v in node.inputs]
        with recording() as guards:  # the kind's ONNX form must not depend on a dynamic size
            outs = REGISTRY[node.kind].emit_n(node.params, xs, ys,
                                              Emitter(g, node.scope, [names[v] for v in node.inputs], doc, dims, where))
        if guards:
            raise ExportError(f"the ONNX form of {where} depends on "
                              f"{' and '.join(sorted(guards[0].symbols))}: it is chosen by `{guards[0]}` at the "
                              f"declared size; export {' and '.join(sorted(guards[0].symbols))} fixed "
                              "(--dynamic without it)")
        for vid, out in zip(node.outputs, outs):
            names[vid] = out
            if out not in g.initializers and out not in {names[v] for v in node.inputs}:
                g.outputs.append((out, vid, node.scope))
    produced = {o for n in g.nodes for o in n.output}
    renamed: dict[str, str] = {}
    for out in graph.outputs:
        src = names[out.value]
        if src in produced and src not in renamed:  # the producing node writes the output's name
            renamed[src] = out.name
        else:  # an input, a constant, or a value already given another output's name
            g.nodes.append(helper.make_node("Identity", [renamed.get(src, src)], [out.name], name=f"{out.name}/Identity"))
    for n in g.nodes:
        n.output[:] = [renamed.get(o, o) for o in n.output]
        n.input[:] = [renamed.get(i, i) for i in n.input]
    value_info = [helper.make_tensor_value_info(v, ONNX_DTYPES[report.types[vid].dtype], plan.dims(vid, scope))
                  for v, vid, scope in g.outputs if v not in renamed]
    inputs = [helper.make_tensor_value_info(i.name, ONNX_DTYPES[i.dtype], plan.input_dims(k))
              for k, i in enumerate(graph.inputs)]
    outputs = [helper.make_tensor_value_info(o.name, ONNX_DTYPES[report.types[o.value].dtype], plan.output_dims(k))
               for k, o in enumerate(graph.outputs)]
    proto = helper.make_graph(g.nodes, graph.name, inputs, outputs, [], value_info=value_info,
                              doc_string=f"from {graph.doc.file} (sha256 {graph.sha256[:12]})")
    model = helper.make_model(proto, opset_imports=[helper.make_opsetid("", opset)], producer_name="archspec")
    model.ir_version = min(model.ir_version, onnx_ir_version(opset))
    if dtype == "float16":
        from .precision import to_float16

        return model, to_float16(model, g.initializers, keep=frozenset(g.exact))
    return model, g.initializers


def _dynamic(report: Report, value: int, dynamic: frozenset[str]) -> TensorType:
    """A value's type whose axes that vary with a dynamic symbol are `SymInt`s (emission reads them)."""
    t = report.types[value]
    exprs = report.symbols.dims[value]
    if not any(e.symbols & dynamic for e in exprs):
        return t
    shape = tuple(SymInt(d, e) if e.symbols & dynamic else d for d, e in zip(t.shape, exprs))
    return TensorType(shape, t.dtype, t.layout)


def onnx_ir_version(opset: int) -> int:
    """The IR version that goes with an opset (onnx.helper.VERSION_TABLE), so older runtimes load the file."""
    from onnx import helper

    for _, ir, ai_onnx, *_ in helper.VERSION_TABLE:
        if ai_onnx == opset:
            return ir
    return helper.VERSION_TABLE[-1][1]
