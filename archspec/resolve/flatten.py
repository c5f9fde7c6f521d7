"""The flattener: the one walker from the surface tree to the graph IR, naming scopes (module
paths) and values.

A container's children are named under it; a residual's body and `then` layers directly in it,
as torchvision names them (`layer2.block0.conv1`), its shortcut under `shortcut`, and its merge
(an `add` node) as `merge`; an Inception concat's branches under their names. This naming rule
lives here and nowhere else.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import InternalError, Loc
from ..layers import REGISTRY, LayerParams
from ..layers.base import NoParams
from ..load import Path
from .ir import CallChain, Input, Node, Scope, Value
from .tree import Deferred, Layer, Sequence, Tree


class Flattener:
    """Walks a surface tree without blocks that read `in` (those need `deferred.TypingFlattener`)."""

    def __init__(self, inputs: tuple[Input, ...]):
        self.inputs = inputs
        self.values: list[Value] = [Value(i.name, None) for i in inputs]
        self.nodes: list[Node] = []
        self.scopes: list[Scope] = []
        self.bound: dict[int, int] = {i: i for i in range(len(inputs))}  # reference token -> value id
        self.node_of: dict[int, int] = {}  # id(tree layer) -> node index
        self.expansions: dict[int, Tree] = {}  # id(deferred) -> its expanded tree

    def run(self, children: tuple[Tree, ...], prefix: str, x: int) -> int:
        for child in children:
            x = self.tree(child, prefix, x)
        return x

    def emit(self, kind: str, params: LayerParams, xs: tuple[int, ...], scope: str, loc: Loc, yaml_path: Path,
             calls: CallChain) -> tuple[int, ...]:
        """The node and its output values: one, named by its scope, or one per `output_names` entry."""
        names = REGISTRY[kind].output_names(params)
        first = len(self.values)
        if names:
            self.values += [Value(f"{scope}.{n}", len(self.nodes)) for n in names]
        else:
            self.values.append(Value(scope, len(self.nodes)))
        ys = tuple(range(first, len(self.values)))
        self.nodes.append(Node(kind, params, xs, ys, scope, loc, yaml_path, calls))
        return ys

    def deferred(self, t: Deferred, prefix: str, x: int) -> int:
        """Only the typing flattener expands a block that reads `in`: resolve uses it when the tree holds one."""
        raise InternalError(f"{t.loc}: block '{t.block}' reads `in`, but the flattener does not type values")

    def tree(self, t: Tree, prefix: str, x: int) -> int:
        xs = tuple(self.bound[r] for r in t.refs) if t.refs is not None else (x,)
        if isinstance(t, Deferred):
            return self.deferred(t, prefix, xs[0])
        path = f"{prefix}.{t.name}" if prefix else t.name
        if isinstance(t, Layer):
            self.node_of[id(t)] = len(self.nodes)
            ys = self.emit(t.kind, t.params, xs + tuple(self.bound[r] for r in t.extra), path, t.loc, t.yaml_path,
                           t.calls)
            self.bound.update(zip(t.pieces, ys))
            y = ys[0]  # a multi-output layer's next item reads a piece by name (`pieces_read`)
        elif isinstance(t, Sequence):
            self.scopes.append(Scope(path, t.label, t.loc))
            y = self.run(t.children, path, xs[0])
        else:
            slot = len(self.scopes)
            self.scopes.append(Scope(path, t.label, t.loc))
            ends = []
            for b in t.branches:
                if b.name == t.inline:
                    ends.append(self.run(b.children, path, xs[0]))
                else:
                    self.scopes.append(Scope(f"{path}.{b.name}", "branch", b.loc))
                    ends.append(self.run(b.children, f"{path}.{b.name}", xs[0]))
            y = self.emit(t.merge, NoParams(), tuple(ends), f"{path}.merge", t.loc, t.yaml_path, t.calls)[0]
            y = self.run(t.then, path, y)
            if t.inline is not None:
                body = next(b for b in t.branches if b.name == t.inline)
                self.scopes[slot] = replace(self.scopes[slot], zero_init=tuple(self.candidates(body.children)))
        if t.token is not None:
            self.bound[t.token] = y
        return y

    def candidates(self, children: tuple[Tree, ...]) -> list[int]:
        """The layers a residual body's zero-init may touch: its own, and those of the blocks and
        groups it holds (not inside nested branches)."""
        out: list[int] = []
        for c in children:
            c = self.expansions.get(id(c), c)
            if isinstance(c, Layer):
                out.append(self.node_of[id(c)])
            elif isinstance(c, Sequence):
                out += self.candidates(c.children)
        return out
