"""Planning an export from the checker's symbols (`Report.symbols`, see `archspec.symbolic`): which
axes are dynamic (the batch and every input axis a spec declares `name=nominal`, on every input) and
the two sizes each is verified at. The batch is checked at 1 and 3; a symbol's second size is the first
nominal+k at which every decision the shape rules took at the nominal size holds again (its guards),
so that size is legal by construction and the checker never runs again. Every value's expected shape
there is its expression evaluated, not a second analysis."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..analyze import Report, analyze
from ..dynamic import FixedSymbol, pinned, second_sizes
from ..limits import Limits
from ..resolve import resolve
from ..symbolic import Lin
from .errors import ExportError

BATCH_AXIS = "batch"
CHECK_BATCHES = (1, 3)  # two batch sizes every export is verified at
_RECHECK_LIMITS = Limits(max_params=10**15, max_macs=10**18, max_activation_bytes=10**16)


@dataclass(frozen=True)
class Run:
    """One verification size: every input's shape and every output's expected shape, batch included."""

    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Plan:
    axes: dict[str, int]  # dynamic axis name -> its index in the first input that has it (batch = 0)
    input_axes: tuple[dict[int, str], ...]  # per input: dynamic axis index -> name
    runs: tuple[Run, ...]
    output_axes: tuple[dict[int, str], ...]  # per output: dynamic axis index -> name
    report: Report
    dynamic: frozenset[str] = frozenset()  # the symbols exported dynamic
    batch: str | None = BATCH_AXIS  # the batch axis's name, None when it is fixed at 1
    notes: tuple[str, ...] = ()

    def input_dims(self, k: int) -> list[int | str]:
        return self._named(self.report.symbols.dims[k], dict(self.input_axes[k]))

    def output_dims(self, k: int) -> list[int | str]:
        value = self.report.graph.outputs[k].value
        return self._named(self.report.symbols.dims[value], dict(self.output_axes[k]))

    def dims(self, value: int, scope: str) -> list[int | str]:
        """Value `value`'s type, batch first: an axis whose expression involves a dynamic symbol is
        symbolic, named after the symbol when it is that symbol, else `<scope>_dim<j>`."""
        names = {j: _axis_name(e, self.dynamic, f"{scope}_dim{j}")
                 for j, e in enumerate(self.report.symbols.dims[value], start=1) if e.symbols & self.dynamic}
        return self._named(self.report.symbols.dims[value], names)

    def _named(self, exprs: tuple[Lin, ...], names: dict[int, str]) -> list[int | str]:
        env = self.report.symbols.nominal
        dims: list[int | str] = [self.batch or 1, *(e.at(env) for e in exprs)]
        for axis, name in names.items():
            dims[axis] = name
        return dims


def _axis_name(e: Lin, dynamic: frozenset[str], fallback: str) -> str:
    return e.terms[0][0] if e.affine and len(e.terms) == 1 and e.terms[0][1] == 1 and not e.const \
        and e.terms[0][0] in dynamic else fallback  # type: ignore[return-value]


def report_at(report: Report, sample_shape: tuple[int, ...]) -> Report:
    """The checker's report for another input size, for callers and tests that want one (export
    itself never analyses again). The spec already passed its budgets at its own size, so
    budgets and limits are not applied again here."""
    if sample_shape == report.graph.input.shape:
        return report
    graph = resolve(report.graph.doc, _RECHECK_LIMITS, sample_shape)
    graph = replace(graph, spec=graph.spec.model_copy(update={"budget": None}))
    return analyze(graph, _RECHECK_LIMITS)


def plan_export(report: Report, dynamic: str | Iterable[str] | bool | None) -> Plan:
    sym = report.symbols
    symbolic = list(sym.nominal)  # in the order the inputs declare them
    batch_name = BATCH_AXIS if BATCH_AXIS not in sym.nominal else "N"
    available = [batch_name, *symbolic]
    if dynamic is None or dynamic is True:
        wanted = list(available)
    elif dynamic is False:
        wanted = []
    else:
        names = [n.strip() for n in (dynamic.split(",") if isinstance(dynamic, str) else dynamic)]
        names = [n for n in names if n and n.lower() != "none"]
        wanted = []
        for n in names:
            if n in ("seq", "sequence") and n not in available and len(symbolic) == 1:
                n = symbolic[0]
            if n == "batch" and n not in available:
                n = batch_name
            if n not in available:
                fixed = any(d.name is None for i in report.graph.inputs for d in i.dims)
                hint = (" (fixed axes cannot be made dynamic here: declare one symbolic in the spec, e.g. "
                        "`[time=50, 128]`)" if fixed else "")
                raise ExportError(f"unknown dynamic axis '{n}'; this spec's axes that can be dynamic: "
                                  f"{', '.join(available)}{hint}")
            if n not in wanted:
                wanted.append(n)
    batch = batch_name if batch_name in wanted else None
    dyn = [n for n in symbolic if n in wanted]
    _check_pins(report, dyn)
    second = _second_sizes(report, dyn)

    inputs = report.graph.inputs
    input_axes = tuple({j: e.terms[0][0] for j, e in enumerate(sym.dims[k], start=1)  # type: ignore[misc]
                        if e.terms and e.terms[0][0] in dyn} | ({0: batch} if batch else {})
                       for k in range(len(inputs)))
    input_axes = tuple(dict(sorted(a.items())) for a in input_axes)
    axes: dict[str, int] = {batch: 0} if batch else {}
    for a in input_axes:
        for j, name in a.items():
            axes.setdefault(name, j)
    output_axes = []
    for out in report.graph.outputs:
        oaxes = {0: batch} if batch else {}
        for j, e in enumerate(sym.dims[out.value], start=1):
            if e.symbols & set(dyn):
                oaxes[j] = _axis_name(e, frozenset(dyn), f"{out.name}_dim{j}")
        output_axes.append(oaxes)
    b1, b2 = CHECK_BATCHES if batch else (1, 1)
    runs = [_run(report, b1, sym.nominal)]
    if second or b2 != b1:
        runs.append(_run(report, b2, {**sym.nominal, **second}))
    return Plan(axes, input_axes, tuple(runs), tuple(output_axes), report, frozenset(dyn), batch)


def _run(report: Report, batch: int, env: dict[str, int]) -> Run:
    """Every input's and output's shape at `env`: the expressions evaluated (no second analysis)."""
    dims = report.symbols.dims
    return Run(tuple((batch, *(e.at(env) for e in dims[k])) for k in range(len(report.graph.inputs))),
               tuple((batch, *(e.at(env) for e in dims[o.value])) for o in report.graph.outputs))


def _where(report: Report, k: int) -> str:
    node = report.graph.nodes[k]
    return f"{node.kind} '{node.scope}' ({node.loc})"


def _check_pins(report: Report, dynamic: list[str]) -> None:
    """A symbol that sizes a layer's parameters (a linear after a flatten of the time axis) cannot vary."""
    pins = pinned(report, dynamic)
    if pins:
        raise _refuse(report, pins[0])


def _second_sizes(report: Report, dynamic: list[str]) -> dict[str, int]:
    """Each dynamic symbol's second verification size (`archspec.dynamic.second_sizes`); the first
    symbol for which none holds is refused, naming the rule."""
    chosen, fixed = second_sizes(report, dynamic)
    if fixed:
        raise _refuse(report, fixed[0])
    return chosen


def _refuse(report: Report, fixed: FixedSymbol) -> ExportError:
    return ExportError(f"{fixed.explain(_where(report, fixed.node))}; export it fixed, e.g. --dynamic batch")
