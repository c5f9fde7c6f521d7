"""Stage 4, analyze: annotate the graph IR with every value's type and every node's parameters,
MACs, FLOPs and activation memory as exact integers (conventions: `archspec.layers.base`), in
one pass over the topologically ordered nodes. Every rule comes from the layer registry's N-ary
contract. Container rows (blocks, groups, repeats, branches) are sums over the scope table.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property

from .errors import Collector, Diagnostic, Loc
from .layers import REGISTRY, Cost, ShapeError, TensorType
from .layers.base import numel
from .limits import Limits
from .load import format_path
from .resolve.ir import Graph, Node
from .symbolic import Guard, Lin, SymInt, nominal, recording

DTYPE_BYTES = {"float32": 4, "int64": 8}


@dataclass(frozen=True, slots=True)
class NodeReport:
    path: str  # module path, e.g. "stage2.block0.conv1"; "" for the model
    kind: str  # layer kind, or for a container its label: block name, "group", "residual", ...
    depth: int  # the number of components of `path`: summary and graph cut at the same depth
    input: TensorType  # a container: the first input its first layer reads
    output: TensorType  # a container: the output of its last layer; a split: its first piece (`outputs`: all)
    params: int
    macs: int
    flops: int
    activation_bytes: int  # bytes of every layer output inside this node, per sample
    loc: Loc
    leaf: bool
    biases: int = 0  # of `params`, the conv/linear/recurrent biases: params - biases = the papers' "weights"
    reads: tuple[str, ...] = ()  # a layer: the values it reads, named as the spec can where it is (`_spec_names`)
    outputs: tuple[tuple[str, TensorType], ...] = ()  # a layer with several (split, chunk): each piece's name and type

    @property
    def weights(self) -> int:
        return self.params - self.biases


@dataclass(frozen=True, slots=True)
class Totals:
    params: int
    macs: int
    flops: int
    activation_bytes: int

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "macs": self.macs, "flops": self.flops,
                "activation_bytes": self.activation_bytes}


@dataclass(frozen=True)
class Symbols:
    """What analysis learnt about the declared symbolic axes (`archspec.symbolic`): every value's axes
    as expressions in them, the decisions the shape rules took on them, and the layers whose weights
    take their size from one (so it cannot vary). Export takes its dynamic axes and its verification
    sizes from here."""

    nominal: dict[str, int]  # symbol -> its declared (nominal) size
    shapes: tuple[tuple[int, ...], ...] = ()  # per value id: its shape, a `SymInt` where an axis varies
    guards: tuple[tuple[int, Guard], ...] = ()  # (node index, a comparison its shape rule made on a symbol)
    pins: tuple[tuple[int, frozenset[str]], ...] = ()  # (node index, symbols its parameter count depends on)

    @cached_property
    def dims(self) -> tuple[tuple[Lin, ...], ...]:
        """Per value id, each per-sample axis as an expression (a constant when fixed)."""
        return tuple(tuple(Lin.of(d) for d in shape) for shape in self.shapes)

    def holds(self, env: dict[str, int]) -> list[tuple[int, Guard]]:
        """The guards that fail at `env` (empty: every shape rule decides as at the nominal sizes)."""
        full = {**self.nominal, **env}
        return [(k, g) for k, g in self.guards if not g.holds(full)]


@dataclass(frozen=True)
class Report:
    graph: Graph
    nodes: tuple[NodeReport, ...]  # pre-order: the model, then a container before its layers
    types: tuple[TensorType, ...]  # per value id of graph.values
    totals: Totals
    symbols: Symbols = Symbols({}, ())

    @property
    def outputs(self) -> dict[str, TensorType]:
        """Each named output's type, in declaration order."""
        return {o.name: self.types[o.value] for o in self.graph.outputs}

    @property
    def output(self) -> TensorType:
        """The first output's type (the only one of a v1 spec)."""
        return self.types[self.graph.outputs[0].value]

    def node(self, path: str) -> NodeReport:
        return next(n for n in self.nodes if n.path == path)

    @cached_property
    def warnings(self) -> tuple[Diagnostic, ...]:
        """The graph's (unused inputs, dead layers), then the declared symbols export would refuse
        dynamic (AS403): the spec is valid, `archspec check` reports them."""
        from .dynamic import warnings  # it reads a Report

        return self.graph.warnings + warnings(self)


def analyze(graph: Graph, limits: Limits | None = None) -> Report:
    limits = limits or Limits()
    walker = _Walker(graph, limits)
    types, costs = walker.run()
    walker.out.raise_if_any()
    nodes = _rows(graph, types, costs)
    root = nodes[0]
    symbols = Symbols(walker.nominal, tuple(t.shape for t in walker.sym),  # type: ignore[union-attr]
                      tuple(walker.guards), tuple(walker.pins))
    report = Report(graph, nodes, tuple(types), Totals(root.params, root.macs, root.flops, root.activation_bytes),
                    symbols)
    check_budgets(report, limits)
    return report


def _rows(graph: Graph, types: list[TensorType], costs: list[Cost]) -> tuple[NodeReport, ...]:
    """The model row, container rows from the scope table (where their first layer is) and leaf rows."""
    scopes = {s.path: s for s in graph.scopes}
    rows: list[dict] = []
    open_rows: dict[str, dict] = {}
    model = dict(path="", kind="model", depth=0, input=types[0], output=types[graph.outputs[0].value],
                 loc=graph.doc.loc(("network",)), leaf=False, cost=Cost(), act=0)
    rows.append(model)
    for i, n in enumerate(graph.nodes):
        parts = n.scope.split(".")
        chain = [model]
        for k in range(1, len(parts)):
            prefix = ".".join(parts[:k])
            if prefix not in scopes:
                continue
            row = open_rows.get(prefix)
            if row is None:
                s = scopes[prefix]
                row = dict(path=prefix, kind=s.label, depth=k, input=types[n.inputs[0]], loc=s.loc, leaf=False,
                           cost=Cost(), act=0)
                open_rows[prefix] = row
                rows.append(row)
            chain.append(row)
        y = types[n.outputs[0]]
        act = sum(numel(types[v].shape) * DTYPE_BYTES[types[v].dtype] for v in n.outputs)
        for row in chain:
            row["cost"], row["act"] = _add(row["cost"], costs[i]), row["act"] + act
            if row is not model:
                row["output"], row["last"] = y, i
        rows.append(dict(path=n.scope, kind=n.kind, depth=len(parts), input=types[n.inputs[0]], output=y,
                         loc=n.loc, leaf=True, cost=costs[i], act=act, node=n))
    names = _spec_names(graph, [(r["path"], r["last"]) for r in rows if "last" in r])
    for r in rows:
        n = r.get("node")
        if n is not None:
            r["reads"] = tuple(_relative(names[v], n.scope) for v in n.inputs)
            if len(n.outputs) > 1:
                r["outputs"] = tuple((_relative(names[v], n.scope), types[v]) for v in n.outputs)
    return tuple(NodeReport(r["path"], r["kind"], r["depth"], r["input"], r["output"], r["cost"].params,
                            r["cost"].macs, r["cost"].flops, r["act"], r["loc"], r["leaf"], r["cost"].biases,
                            r.get("reads", ()), r.get("outputs", ())) for r in rows)


def _spec_names(graph: Graph, last: list[tuple[str, int]]) -> list[str]:
    """Each value by the name the spec gives it, as a path of the lists it is in: a model input by its
    name, a piece by its `as:` name in its layer's list (`stage.left`, not the flattened
    `stage.split0.left`), any other value by the outermost item whose output it is (`layer1`, not
    `layer1.block1.relu1`): what a `from:` in that list writes (tests/test_split.py checks every
    `from:` of the zoo and examples), and, for a value read without one, its row in `summary`.
    `last`: each container, in pre-order, with its last node, whose (first) output is the container's."""
    names = [v.name for v in graph.values]
    for path, i in reversed(last):  # a container after the ones inside it: the outermost name stays
        names[graph.nodes[i].outputs[0]] = path
    for n in graph.nodes:
        if len(n.outputs) > 1:
            within = n.scope.rpartition(".")[0]
            for v, piece in zip(n.outputs, REGISTRY[n.kind].output_names(n.params)):
                names[v] = f"{within}.{piece}" if within else piece
    return names


def _relative(name: str, reader: str) -> str:
    """A value's name (`_spec_names`) as written in the list that holds `reader` (a node's scope):
    without the containers both are in."""
    within = reader.rpartition(".")[0]
    if not within or name.startswith(within + "."):  # the usual case: the reader's own list, or the network's
        return name[len(within) + 1:] if within else name
    here, parts = within.split("."), name.split(".")
    k = 0
    while k < min(len(here), len(parts) - 1) and here[k] == parts[k]:
        k += 1
    return ".".join(parts[k:])


class _Stop(Exception):
    """This node cannot be analysed (the error is already recorded)."""


def check_budgets(report: Report, limits: Limits) -> None:
    """Limits protect the runner (AS002); a spec's own `budget:` guards against regressions (AS301).
    Each error also points at the layer that contributes most, where a fix usually starts."""
    out = Collector()
    totals = report.totals.as_dict()
    where = report.graph.doc.loc(("network",))

    def largest(key: str) -> tuple[tuple[str, Loc], ...]:  # only when there is an error to explain
        top = max((n for n in report.nodes if n.leaf), key=lambda n: getattr(n, key), default=None)
        if top is None or not getattr(top, key):
            return ()
        share = getattr(top, key) / totals[key]
        return ((f"the largest share, {getattr(top, key):,} ({share:.0%}), is {top.kind} '{top.path}'", top.loc),)

    for key in ("params", "macs", "activation_bytes"):
        cap = getattr(limits, f"max_{key}")
        if totals[key] > cap:  # a limit comes from the command line, not the spec: point at the largest layer
            share = largest(key)
            out.add("AS002", f"{key} {totals[key]:,} exceed the limit of {cap:,}", share[0][1] if share else where,
                    hint=f"raise it with {Limits.flag('max_' + key)} if this spec is trusted", related=share)
    budget = report.graph.spec.budget
    if budget is not None:
        for key, cap in budget.model_dump().items():
            if cap is not None and totals[key] > cap:
                out.add("AS301", f"{key} {totals[key]:,} exceed the spec's budget of {cap:,}",
                        report.graph.doc.loc(("budget", key)),
                        hint="raise the budget in the spec if the growth is intended", related=largest(key))
    out.raise_if_any()


class _Walker:
    def __init__(self, graph: Graph, limits: Limits):
        self.graph, self.limits = graph, limits
        self.doc = graph.doc
        self.out = Collector()

    def run(self) -> tuple[list[TensorType], list[Cost]]:
        """Types of every value and costs of every node; a failed node's dependants are skipped
        (their error would only repeat it), independent branches are still checked."""
        g = self.graph
        types: list[TensorType | None] = [None] * len(g.values)
        self.types = types  # read by error explanations
        self.sym: list[TensorType | None] = [None] * len(g.values)  # the same, axes as `SymInt`s
        self.nominal: dict[str, int] = {}
        self.guards: list[tuple[int, Guard]] = []
        self.pins: list[tuple[int, frozenset[str]]] = []
        for i, inp in enumerate(g.inputs):
            types[i] = TensorType(inp.shape, inp.dtype, inp.layout)
            self.sym[i] = TensorType(tuple(self.symbol(inp.name, d.name, d.size) if d.name else d.size
                                           for d in inp.dims), inp.dtype, inp.layout)
        costs: list[Cost] = []
        for k, n in enumerate(g.nodes):
            xs = tuple(types[v] for v in n.inputs)
            cost = Cost()
            if all(x is not None for x in xs):
                try:
                    ys, cost = self.layer(k, n, xs, tuple(self.sym[v] for v in n.inputs))  # type: ignore[arg-type]
                    for v, (y, ysym) in zip(n.outputs, ys):
                        types[v], self.sym[v] = y, ysym
                except _Stop:
                    pass
            costs.append(cost)
        if any(t is None for t in types):  # only after an error, which is raised next
            types = [t or TensorType((), "float32") for t in types]
        return types, costs  # type: ignore[return-value]

    def symbol(self, inp: str, name: str, size: int) -> SymInt:
        """A declared symbolic axis. One name is one symbol across inputs; an input that declares it
        with another nominal size gets its own, `input.name`."""
        if self.nominal.setdefault(name, size) != size:
            name = f"{inp}.{name}"
            self.nominal[name] = size
        return SymInt(size, Lin.symbol(name))

    def layer(self, k: int, node: Node, xs: tuple[TensorType, ...],
              syms: tuple[TensorType, ...]) -> tuple[tuple[tuple[TensorType, TensorType], ...], Cost]:
        """The node's output types, each as (nominal, symbolic), and its cost at the nominal size.
        The shape rule runs once, on the symbolic types: its guards are recorded, its result read
        at the nominal size."""
        kind = REGISTRY[node.kind]
        problem = kind.input_problem(xs[0])
        if problem is not None:
            self.out.add("AS203", problem[0], node.loc, node.source, problem[1], self._context(node, xs))
            raise _Stop
        symbolic = bool(self.nominal) and any(type(d) is SymInt for x in syms for d in x.shape)
        guards: list[Guard] = []
        try:
            with recording() if symbolic else nullcontext(guards) as guards:
                ysym = kind.output_types(node.params, syms)
                for y in ysym:
                    if any(d <= 0 for d in y.shape):
                        raise ShapeError(f"output {y} has a non-positive dimension", None, "AS202")
            ys = tuple(TensorType(nominal(y.shape), y.dtype, y.layout) for y in ysym) if symbolic else ysym
            for y in ys:
                self.bound(y, node.loc)
        except ShapeError as exc:
            where, src = node.loc, node.source
            if exc.field is not None and not exc.field.isdigit():
                fpath = self._param_path(node, exc.field)
                if fpath is not None:
                    where, src = self.doc.loc(fpath), format_path(fpath)
            culprit = int(exc.field) if exc.field and exc.field.isdigit() else None
            hint = ""
            if culprit is not None:
                changer = self._changer(node, 0, culprit, exc.axis)
                if changer is not None:  # the layer that made the inputs differ, where the fix goes
                    where, src = changer.loc, changer.source
                hint = kind.fix_hint(xs[0].shape, xs[culprit].shape)
            self.out.add(exc.code, f"{node.kind} '{node.scope}': {exc}", where, src, hint,
                         self._context(node, xs, culprit))
            raise _Stop from None
        self.guards += [(k, g) for g in guards]
        if symbolic:
            with recording():  # a parameter count that varies with a symbol pins it
                params = kind.cost_n(node.params, syms, ysym).params
            if isinstance(params, SymInt):
                self.pins.append((k, params.expr.symbols))
        return tuple(zip(ys, ysym)), kind.cost_n(node.params, xs, ys)

    def _changer(self, node: Node, i: int, j: int, axis: int | None = None) -> Node | None:
        """The layer that made inputs i and j of `node` differ: on `axis` (the kind's, else the first
        axis where they differ), the last layer to change it since the two paths split, when exactly
        one path changed it."""
        a, b = self.types[node.inputs[i]].shape, self.types[node.inputs[j]].shape
        if axis is None:
            axis = next((k for k, (m, n) in enumerate(zip(a, b)) if m != n), None)
        if axis is None:
            return None
        paths = [self._path(node.inputs[i]), self._path(node.inputs[j])]
        common = set(paths[0]) & set(paths[1])
        changed = []
        for path in paths:
            found = [self.graph.nodes[k] for k in path if k not in common and self._changes(k, axis)]
            if found:
                changed.append(found[0])  # paths run backwards: the first found is the last layer
        return changed[0] if len(changed) == 1 else None

    def _path(self, value: int) -> list[int]:
        """Producing nodes back from `value` along first inputs, latest first."""
        path = []
        producer = self.graph.values[value].producer
        while producer is not None:
            path.append(producer)
            producer = self.graph.values[self.graph.nodes[producer].inputs[0]].producer
        return path

    def _changes(self, k: int, axis: int) -> bool:
        n = self.graph.nodes[k]
        x, y = self.types[n.inputs[0]], self.types[n.outputs[0]]
        return (x is not None and y is not None and len(x.shape) > axis and len(y.shape) > axis
                and x.shape[axis] != y.shape[axis])

    def _context(self, node: Node, xs: tuple[TensorType, ...],
                 culprit: int | None = None) -> tuple[tuple[str, Loc], ...]:
        """Where a failing layer's inputs came from (for a mismatch, the first and the offending
        one); built only when there is an error to explain."""
        notes = []
        for i in ((0, culprit) if culprit else (0,)):
            value = self.graph.values[node.inputs[i]]
            which = "its input" if len(xs) == 1 else f"input {i}"
            if value.producer is None:
                inp = next(p for p in self.graph.inputs if p.name == value.name)
                notes.append((f"{which} {xs[i]} is the model input '{value.name}'", inp.loc))
            else:
                notes.append((f"{which} {xs[i]} comes from '{value.name}'", self.graph.nodes[value.producer].loc))
        return tuple(notes) + node.calls

    def bound(self, y: TensorType, loc: Loc) -> None:
        """One tensor larger than the whole activation budget stops the walk before numbers explode."""
        size = numel(y.shape) * DTYPE_BYTES[y.dtype]
        if size > self.limits.max_activation_bytes:
            self.out.add("AS002", f"one output needs {size:.3g} bytes, over the activation limit of "
                         f"{self.limits.max_activation_bytes:,}", loc,
                         hint=f"raise it with {Limits.flag('max_activation_bytes')} if this spec is trusted")
            raise _Stop

    def _param_path(self, node: Node, field: str) -> tuple | None:
        """YAML path of a layer's parameter, if the user wrote it."""
        path = node.yaml_path + (node.kind, field)
        return path if path in self.doc.value_locs else None


def _add(a: Cost, b: Cost) -> Cost:
    return Cost(a.params + b.params, a.macs + b.macs, a.flops + b.flops, a.biases + b.biases)
