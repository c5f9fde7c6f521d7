"""The graph IR resolve returns: one flat, topologically ordered dataflow graph.

Named model inputs; values (each produced by one node or a model input); nodes in topological
order, each with its kind, validated parameters, input and output value ids, its scope (the dotted
module path that names its weights in the `state_dict`, e.g. `layer2.block0.conv1`), source
location, YAML path and block call chain; a scope table saying which block, group, repeat, branch
or merge each container prefix is; and the named outputs. Every later stage (analyze, lower,
render, diagram, export) reads this graph and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import Diagnostic, Loc
from ..layers import LayerParams
from ..load import Document, Path, format_path
from ..schema import Dim, Spec

CallChain = tuple[tuple[str, Loc], ...]  # ("in block 'bottleneck' invoked here", loc), innermost first


@dataclass(frozen=True)
class Input:
    name: str
    dims: tuple[Dim, ...]
    dtype: str
    loc: Loc
    layout: str = ""  # "CHW", "TF", "T", "F", ... (see layers.base.TensorType)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.dims)


@dataclass(frozen=True, slots=True)
class Value:
    """A tensor flowing between nodes: a model input (producer None) or a node's output."""

    name: str  # the input's name, or the producing node's scope
    producer: int | None  # index into Graph.nodes


@dataclass(frozen=True, slots=True)
class Node:
    """One layer: a registered kind applied to input values, producing output values."""

    kind: str
    params: LayerParams
    inputs: tuple[int, ...]  # value ids
    outputs: tuple[int, ...]
    scope: str  # module path, e.g. "layer2.block0.conv1"
    loc: Loc
    yaml_path: Path  # where the layer is written (inside its block definition, if any)
    calls: CallChain = ()

    @property
    def name(self) -> str:
        return self.scope.rsplit(".", 1)[-1]

    @property
    def source(self) -> str:
        return format_path(self.yaml_path)


@dataclass(frozen=True, slots=True)
class Scope:
    """A container prefix of node scopes: which block (its name), group, repeat, branch, residual,
    concat or add it is. Summary rows, diagram clusters and residual zero-init come from here."""

    path: str
    label: str
    loc: Loc
    zero_init: tuple[int, ...] = ()  # residual: body nodes whose last normalisation zero_init_residual zeroes


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    value: int
    loc: Loc


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    inputs: tuple[Input, ...]
    values: tuple[Value, ...]
    nodes: tuple[Node, ...]  # topologically ordered: every input value is produced earlier
    scopes: tuple[Scope, ...]  # in order of first appearance
    outputs: tuple[Output, ...]
    expanded_items: int
    sha256: str
    spec: Spec = field(repr=False)
    doc: Document = field(repr=False)
    warnings: tuple[Diagnostic, ...] = ()  # unused inputs, dead layers

    @property
    def input(self) -> Input:
        """The first input (the only one of a v1 spec)."""
        return self.inputs[0]

    @property
    def output_name(self) -> str:
        return self.outputs[0].name
