"""Stage 4, analyze: walk the resolved graph once and compute, per node and in total, the
output shape, parameters, MACs, FLOPs and activation memory as exact integers (conventions:
`archspec.layers.base`). The walk is generic: every rule comes from the layer registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import Collector, Loc
from .layers import MERGES, REGISTRY, Cost, ShapeError, TensorType
from .layers.base import INT, numel
from .limits import Limits
from .load import format_path
from .resolve import Graph, Layer, Node, Parallel, Sequence

DTYPE_BYTES = {"float32": 4, "int64": 8}


@dataclass(frozen=True, slots=True)
class NodeReport:
    path: str  # module path, e.g. "stage2.block0.conv1"; "" for the model
    kind: str  # layer kind, block name, "concat", "residual", ...
    depth: int
    input: TensorType
    output: TensorType
    params: int
    macs: int
    flops: int
    activation_bytes: int  # bytes of every layer output inside this node, per sample
    loc: Loc
    leaf: bool
    biases: int = 0  # of `params`, the conv/linear/recurrent biases: params - biases = the papers' "weights"

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
class Report:
    graph: Graph
    nodes: tuple[NodeReport, ...]  # pre-order: a container comes before its children
    output: TensorType
    totals: Totals

    def node(self, path: str) -> NodeReport:
        return next(n for n in self.nodes if n.path == path)


class _Stop(Exception):
    """The rest of this branch cannot be analysed (the error is already recorded)."""


def analyze(graph: Graph, limits: Limits | None = None) -> Report:
    limits = limits or Limits()
    walker = _Walker(graph, limits)
    x = TensorType(graph.input.shape, graph.input.dtype)
    try:
        y, cost, act = walker.node(graph.root, x, "", 0, None)
    except _Stop:
        y, cost, act = x, Cost(), 0
    except RecursionError:  # limits keep real specs far from this; never let it escape as a traceback
        walker.out.add("AS002", "the network is nested too deeply to analyse", graph.doc.loc(("network",)),
                       hint=f"lower the nesting of blocks ({Limits.flag('max_block_depth')})")
        y, cost, act = x, Cost(), 0
    walker.out.raise_if_any()
    nodes = tuple(walker.reports[i] for i in sorted(walker.reports))
    report = Report(graph, nodes, y, Totals(cost.params, cost.macs, cost.flops, act))
    check_budgets(report, limits)
    return report


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
        self.reports: dict[int, NodeReport] = {}
        self.order = 0

    def node(self, node: Node, x: TensorType, prefix: str, depth: int,
             producer: tuple[str, Loc] | None) -> tuple[TensorType, Cost, int]:
        path = f"{prefix}.{node.name}" if prefix else (node.name if depth else "")
        slot = self.order
        self.order += 1
        if isinstance(node, Layer):
            y, cost = self.layer(node, x, path, producer)
            act = numel(y.shape) * DTYPE_BYTES[y.dtype]
            kind, leaf = node.kind, True
        elif isinstance(node, Sequence):
            y, cost, act = self.sequence(node, x, path, depth, producer)
            kind, leaf = node.label, False
        else:
            y, cost, act = self.parallel(node, x, path, depth, producer)
            kind, leaf = node.label, False
        self.reports[slot] = NodeReport(path, kind, depth, x, y, cost.params, cost.macs, cost.flops, act,
                                        node.loc, leaf, cost.biases)
        return y, cost, act

    def sequence(self, node: Sequence, x: TensorType, path: str, depth: int,
                 producer: tuple[str, Loc] | None) -> tuple[TensorType, Cost, int]:
        total, act = Cost(), 0
        for child in node.children:
            x, cost, child_act = self.node(child, x, path, depth + 1, producer)
            total, act = _add(total, cost), act + child_act
            producer = (f"'{path + '.' if path else ''}{child.name}'", child.loc)
        return x, total, act

    def parallel(self, node: Parallel, x: TensorType, path: str, depth: int,
                 producer: tuple[str, Loc] | None) -> tuple[TensorType, Cost, int]:
        outputs, total, act, failed = [], Cost(), 0, False
        spans: dict[str, range] = {}  # the report slots of each branch's layers
        for branch in node.branches:
            start = self.order
            try:
                if branch.name == node.inline:  # its layers are named directly under this node
                    y, cost, branch_act = self.sequence(branch, x, path, depth, producer)
                else:
                    y, cost, branch_act = self.node(branch, x, path, depth + 1, producer)
            except _Stop:
                failed = True  # keep analysing the other branches: report all their errors
                continue
            outputs.append((branch, y))
            spans[branch.name] = range(start, self.order)
            total, act = _add(total, cost), act + branch_act
        if failed:
            raise _Stop
        merge = MERGES[node.merge]
        shapes = [y.shape for _, y in outputs]
        try:
            out_shape = merge.infer(shapes)
        except ShapeError as exc:
            culprit = outputs[int(exc.field)][0] if exc.field and exc.field.isdigit() else node.branches[0]
            first, other = outputs[0][1].shape, dict(outputs)[culprit].shape
            where, path = node.loc, self.src(node)
            changer = self._changer(first, other, [spans[b.name] for b, _ in outputs])
            if changer is not None:  # the layer that made the branches differ, where the fix goes
                where, path = changer.loc, ""
            self.out.add(exc.code, str(exc), where, path, merge.fix_hint(x.shape, first, other), related=(
                (f"branch '{outputs[0][0].name}' ends with {outputs[0][1]}", outputs[0][0].loc),
                (f"branch '{culprit.name}' ends with {dict(outputs)[culprit]}", culprit.loc),
            ) + node.calls)
            raise _Stop from None
        y = TensorType(out_shape, outputs[0][1].dtype)
        self.bound(y, node.loc)
        total = _add(total, merge.cost(shapes, out_shape))
        act += numel(out_shape) * DTYPE_BYTES[y.dtype]
        if node.then:
            y, cost, then_act = self.sequence(Sequence(node.name, node.then, node.loc), y, path, depth,
                                              (f"the {node.label} merge '{path}'", node.loc))
            total, act = _add(total, cost), act + then_act
        return y, total, act

    def _changer(self, a: tuple[int, ...], b: tuple[int, ...], spans: list[range]) -> NodeReport | None:
        """The layer that made two branch outputs differ: the last one to change the first axis on which
        they differ, when exactly one branch changed it (otherwise the merge itself is the place)."""
        axis = next((i for i, (m, n) in enumerate(zip(a, b)) if m != n), None)
        if axis is None:
            return None
        found = [[r for r in (self.reports[i] for i in span if i in self.reports)
                  if r.leaf and len(r.input.shape) > axis and len(r.output.shape) > axis
                  and r.input.shape[axis] != r.output.shape[axis]] for span in spans]
        changed = [f for f in found if f]
        return changed[0][-1] if len(changed) == 1 else None

    def layer(self, node: Layer, x: TensorType, path: str,
              producer: tuple[str, Loc] | None) -> tuple[TensorType, Cost]:
        kind = REGISTRY[node.kind]
        if kind.input_rank is not None and len(x.shape) not in kind.input_rank:
            self.out.add("AS203", f"{node.kind} expects a {kind.input_desc} input, got {x} (rank {len(x.shape)})",
                         node.loc, self.src(node), _rank_hint(x), self._context(node, x, producer))
            raise _Stop
        if x.dtype != kind.input_dtype:
            hint = "token ids go through an `embedding` first" if x.dtype == INT else "feed it integer token ids"
            self.out.add("AS203", f"{node.kind} expects {kind.input_dtype} input, got {x.dtype}", node.loc,
                         self.src(node), hint, self._context(node, x, producer))
            raise _Stop
        try:
            y = kind.output_type(node.params, x)
            if any(d <= 0 for d in y.shape):
                raise ShapeError(f"output {y} has a non-positive dimension", None, "AS202")
            self.bound(y, node.loc)
        except ShapeError as exc:
            where, src = node.loc, self.src(node)
            if exc.field is not None:
                fpath = self._param_path(node, exc.field)
                if fpath is not None:
                    where, src = self.doc.loc(fpath), format_path(fpath)
            self.out.add(exc.code, f"{node.kind} '{path}': {exc}", where, src, "", self._context(node, x, producer))
            raise _Stop from None
        return y, kind.cost(node.params, x.shape, y.shape)

    def _context(self, node: Layer, x: TensorType,
                 producer: tuple[str, Loc] | None) -> tuple[tuple[str, Loc], ...]:
        """Where a failing layer's input came from; built only when there is an error to explain."""
        if producer:
            return ((f"its input {x} comes from {producer[0]}", producer[1]),) + node.calls
        return ((f"its input {x} is the model input '{self.graph.input.name}'", self.graph.input.loc),) + node.calls

    def bound(self, y: TensorType, loc: Loc) -> None:
        """One tensor larger than the whole activation budget stops the walk before numbers explode."""
        size = numel(y.shape) * DTYPE_BYTES[y.dtype]
        if size > self.limits.max_activation_bytes:
            self.out.add("AS002", f"one output needs {size:.3g} bytes, over the activation limit of "
                         f"{self.limits.max_activation_bytes:,}", loc,
                         hint=f"raise it with {Limits.flag('max_activation_bytes')} if this spec is trusted")
            raise _Stop

    def _param_path(self, node: Layer, field: str) -> tuple | None:
        """YAML path of a layer's parameter, if the user wrote it."""
        path = node.yaml_path + (node.kind, field)
        return path if path in self.doc.value_locs else None

    def src(self, node: Node) -> str:
        return format_path(node.yaml_path) if isinstance(node, Layer) else ""


def _add(a: Cost, b: Cost) -> Cost:
    return Cost(a.params + b.params, a.macs + b.macs, a.flops + b.flops, a.biases + b.biases)


def _rank_hint(x: TensorType) -> str:
    if len(x.shape) == 1:
        return "this layer needs more axes; is it after a `flatten` or global pooling?"
    return ""

