"""Blocks that read `in` (the type of the value they read: `in.channels`, docs/spec.md): where
resolve and analyze meet.

Such a block's body cannot be expanded before its input's type is known, and that type is known
only from the layers before it. So the expander leaves the invocation as a `Deferred` (arguments
bound, body not yet expanded), and when the tree holds one, resolve flattens with the
`TypingFlattener`: it types each value it creates, by the same registry shape rules analyze
applies, and has the expander expand the block when it reaches it. The graph it returns is still
complete and immutable: every later stage, analyze included, sees plain numbers and never `in`. A
value the rules cannot type (analyze will say why) stops the expansion there, and analyze is run
on the graph so far for the diagnostic. Values are typed twice when an input has a dynamic axis:
at the nominal sizes and with the dynamic axes at other sizes, so that `in` refuses a size that
follows one. A body whose `in` reads name an axis its input lacks (`in.features` of an image: a
misread) is walked without the items that read it: where one of its layers refuses the input
outright (AS203: attention given an image), that is the one diagnostic, as the misreads follow from
it; else the misreads are reported.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from ..errors import Collector, Diagnostic, InternalError, Loc, SpecError
from ..expr import TypeView, reads_input
from ..layers import REGISTRY, LayerParams, ShapeError, TensorType
from ..layers.base import AXIS_NAMES
from ..limits import Limits
from ..load import Document, Path
from ..schema import Spec
from .flatten import Flattener
from .ir import CallChain, Graph, Input, Output, Value
from .tree import Deferred, Misread, Tree


class Expander(Protocol):
    """What the typing flattener needs of the expander (`expand.Resolver`)."""

    spec: Spec
    doc: Document
    limits: Limits
    out: Collector
    expanded: int

    def expand(self, d: Deferred, x: TensorType, alt: TensorType | None, dynamic: str,
               alt_fails: str = "") -> tuple[Tree | None, tuple[Diagnostic, ...]]: ...


def body_reads_input(raw: Any) -> bool:
    """Whether a block body reads `in` anywhere in its YAML."""
    if isinstance(raw, str):
        return reads_input(raw)
    if isinstance(raw, dict):
        return any(body_reads_input(v) for v in raw.values())
    return isinstance(raw, list) and any(body_reads_input(v) for v in raw)


def input_view(x: TensorType, alt: TensorType | None, dynamic: str, alt_fails: str = "") -> TypeView:
    """What `in` reads: the input's type, its axes' names, and which sizes vary with a dynamic input
    axis (`alt`: the input's type with the dynamic input axes at other sizes; `alt_fails`: the layer
    that fails there, when it is None)."""
    axes = x.axes if len(x.axes) == len(x.shape) else ""
    varying = frozenset(i for i, n in enumerate(x.shape) if alt is None or len(alt.shape) != len(x.shape)
                        or alt.shape[i] != n) if dynamic else frozenset()
    return TypeView(x.shape, tuple(AXIS_NAMES.get(a, "") for a in axes) if axes else ("",) * len(x.shape),
                    x.axes, varying, dynamic, alt_fails if dynamic and alt is None else "",
                    frozenset(AXIS_NAMES.values()))


class TypingFlattener(Flattener):
    """The flattener that also types every value it creates and expands deferred blocks on the way."""

    def __init__(self, inputs: tuple[Input, ...], expander: Expander):
        super().__init__(inputs)
        self.expander = expander
        dynamic = [d for i in inputs for d in i.dims if d.name]
        self.dynamic = ", ".join(dict.fromkeys(f"'{d.name}'" for d in dynamic))
        self.types: list[TensorType | None] = [TensorType(i.shape, i.dtype, i.layout) for i in inputs]
        self.alt: list[TensorType | None] = [  # the dynamic axes at 2n + 1: no stride or window maps both alike
            TensorType(tuple(2 * d.size + 1 if d.name else d.size for d in i.dims), i.dtype, i.layout)
            for i in inputs]
        self.alt_sizes = ", ".join(dict.fromkeys(f"{d.name} = {2 * d.size + 1}" for d in dynamic))
        self.alt_fails = ""  # the first layer typed at the nominal sizes but not at 2n + 1, and why, for AS120

    def emit(self, kind: str, params: LayerParams, xs: tuple[int, ...], scope: str, loc: Loc, yaml_path: Path,
             calls: CallChain) -> tuple[int, ...]:
        ys = super().emit(kind, params, xs, scope, loc, yaml_path, calls)
        for types in (self.types, self.alt) if self.dynamic else (self.types,):
            types += infer(kind, params, tuple(types[v] for v in xs)) or [None] * len(ys)
        if (self.dynamic and not self.alt_fails and self.types[ys[0]] is not None and self.alt[ys[0]] is None
                and all(self.alt[v] is not None for v in xs)):
            why = refusal(kind, params, tuple(self.alt[v] for v in xs))  # type: ignore[misc]
            self.alt_fails = (f"{kind} '{scope}' ({loc}) fails at the second size archspec tries, {self.alt_sizes} "
                              f"(2 x nominal + 1): \"{why}\"")
        return ys

    def deferred(self, t: Deferred, prefix: str, x: int) -> int:
        """Expands a block that reads `in` now that its input is typed, and walks the expansion."""
        r = self.expander
        typed = self.types[x]
        if typed is None:
            if not r.out.diagnostics:  # a layer before it fails its shape rule: analyze says how
                self.explain(t.loc)
            return self.untyped(t)
        expanded, misreads = r.expand(t, typed, self.alt[x] if self.dynamic else None, self.dynamic, self.alt_fails)
        if expanded is None:
            return self.untyped(t)
        walked = self.expansions[id(t)] = replace(expanded, refs=None, token=t.token)
        if not misreads:
            return self.tree(walked, prefix, x)
        first = len(self.nodes)
        self.tree(walked, prefix, x)
        if any(self.refuses(k) for k in range(first, len(self.nodes))):
            self.explain(t.loc)  # that layer's AS203 is the mistake; the sizes `in` lacks follow from it
        else:
            for d in misreads:
                r.out.add(d.code, d.message, d.loc, d.path, d.hint, d.related)
        return self.untyped(t)

    def refuses(self, k: int) -> bool:
        """Whether node k's kind refuses its typed input outright (its rank, dtype or layout: AS203)."""
        node = self.nodes[k]
        xs = [self.types[v] for v in node.inputs]
        return all(x is not None for x in xs) and \
            REGISTRY[node.kind].input_problem(xs[0]) is not None  # type: ignore[arg-type]

    def tree(self, t: Tree, prefix: str, x: int) -> int:
        """As the flattener's, and an item left out after a misread gives an untyped value."""
        if isinstance(t, Misread):
            return self.untyped(t)
        return super().tree(t, prefix, x)

    def untyped(self, t: Deferred | Misread) -> int:
        """The output of a block that could not be expanded (an error is reported, so this graph is
        never returned): untyped, so that only the blocks that do not depend on it are expanded."""
        self.values.append(Value(t.name, None))
        self.types.append(None)
        if self.dynamic:
            self.alt.append(None)
        if t.token is not None:
            self.bound[t.token] = len(self.values) - 1
        return len(self.values) - 1

    def explain(self, loc: Loc) -> None:
        """The diagnostics of the layers that cannot be typed, from analyze itself (imported here:
        analyze reads resolve's graph, so resolve cannot import it first)."""
        from ..analyze import analyze

        r = self.expander
        partial = Graph(r.spec.name, r.spec.description, self.inputs, tuple(self.values), tuple(self.nodes),
                        tuple(self.scopes), (Output("output", len(self.values) - 1, loc),), r.expanded, "",
                        r.spec, r.doc)
        try:
            analyze(partial, r.limits)
        except SpecError as exc:
            for d in exc.diagnostics:
                r.out.add(d.code, d.message, d.loc, d.path, d.hint, d.related)
            return
        raise InternalError(f"{loc}: a layer before this block cannot be typed, but analyze finds no error")


def infer(kind: str, params: LayerParams, xs: tuple[TensorType | None, ...]) -> list[TensorType] | None:
    """A node's output types by the registry's shape rule, with analyze's input checks, or None where
    analyze will report an error (or an input is untyped)."""
    ys = _apply(kind, params, xs)
    return ys if isinstance(ys, list) else None


def refusal(kind: str, params: LayerParams, xs: tuple[TensorType, ...]) -> str:
    """Why the registry's rules refuse typed inputs `xs` (analyze's message), or '' where they accept them."""
    ys = _apply(kind, params, xs)
    return ys if isinstance(ys, str) else ""


def _apply(kind: str, params: LayerParams, xs: tuple[TensorType | None, ...]) -> list[TensorType] | str | None:
    """The output types, or why analyze will refuse the node; None where an input is untyped."""
    rule = REGISTRY[kind]
    if any(x is None for x in xs):
        return None
    problem = rule.input_problem(xs[0])  # type: ignore[arg-type]
    if problem is not None:
        return problem[0]
    try:
        ys = rule.output_types(params, xs)  # type: ignore[arg-type]
    except ShapeError as exc:
        return str(exc)
    bad = next((y for y in ys if any(d <= 0 for d in y.shape)), None)
    return f"output {bad} has a non-positive dimension" if bad is not None else list(ys)
