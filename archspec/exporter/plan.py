"""Planning an export: which axes are dynamic (named symbolic dims), and the two sizes of each that
every export is verified at. The second size of a symbolic input axis is the first nominal+k the
checker accepts with the same weights; the batch is checked at 1 and 3. A spec with several inputs
exports only the batch axis dynamic."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..analyze import Report, analyze
from ..errors import ArchspecError
from ..limits import Limits
from ..resolve import resolve
from .errors import ExportError

BATCH_AXIS = "batch"
CHECK_BATCHES = (1, 3)  # two batch sizes every export is verified at
SEQ_OFFSETS = (7, 8, 16, 32)  # second size of a symbolic axis: the first nominal+k the checker accepts
_RECHECK_LIMITS = Limits(max_params=10**15, max_macs=10**18, max_activation_bytes=10**16)


@dataclass(frozen=True)
class Run:
    """One verification size: every input's shape and every output's expected shape, batch included."""

    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Plan:
    axes: dict[str, int]  # dynamic axis name -> axis index of the first input (batch = 0)
    input_axes: tuple[dict[int, str], ...]  # per input: dynamic axis index -> name
    runs: tuple[Run, ...]
    output_axes: tuple[dict[int, str], ...]  # per output: dynamic axis index -> name
    reports: tuple[Report, Report]  # the checker at the first and the second check size
    notes: tuple[str, ...] = ()

    def input_dims(self, k: int) -> list[int | str]:
        dims: list[int | str] = [1, *self.reports[0].graph.inputs[k].shape]
        for axis, name in self.input_axes[k].items():
            dims[axis] = name
        return dims

    def output_dims(self, k: int) -> list[int | str]:
        dims: list[int | str] = [1, *self.reports[0].outputs[self.reports[0].graph.outputs[k].name].shape]
        for axis, name in self.output_axes[k].items():
            dims[axis] = name
        return dims

    def dims(self, value: int, scope: str) -> list[int | str]:
        """Value `value`'s type, batch first: an axis whose size differs between the two check sizes is
        symbolic, named after the input axis with the same two sizes, else `<scope>_dim<j>`."""
        first, second = (r.types[value].shape for r in self.reports)
        batch = next((n for a in self.input_axes for i, n in a.items() if i == 0), None)
        sizes = [r.graph.input.shape for r in self.reports]
        by_size = {(sizes[0][i - 1], sizes[1][i - 1]): n for i, n in self.input_axes[0].items() if i}
        dims: list[int | str] = [batch or 1]
        for j, (a, b) in enumerate(zip(first, second), start=1):
            dims.append(a if a == b else by_size.get((a, b), f"{scope}_dim{j}"))
        return dims


def report_at(report: Report, sample_shape: tuple[int, ...]) -> Report:
    """The checker's report for another input size. The spec already passed its budgets at its own
    size, so budgets and limits are not applied again here."""
    if sample_shape == report.graph.input.shape:
        return report
    graph = resolve(report.graph.doc, _RECHECK_LIMITS, sample_shape)
    graph = replace(graph, spec=graph.spec.model_copy(update={"budget": None}))
    return analyze(graph, _RECHECK_LIMITS)


def plan_export(report: Report, dynamic: str | Iterable[str] | bool | None) -> Plan:
    if len(report.graph.inputs) > 1:
        return _plan_several(report, dynamic)
    dims = report.graph.input.dims
    symbolic = {d.name: i + 1 for i, d in enumerate(dims) if d.name}
    batch_name = BATCH_AXIS if BATCH_AXIS not in symbolic else "N"
    available = {batch_name: 0, **symbolic}
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
                n = next(iter(symbolic))
            if n == "batch" and n not in available:
                n = batch_name
            if n not in available:
                fixed = [d for d in dims if d.name is None]
                hint = (" (fixed axes cannot be made dynamic here: declare one symbolic in the spec, e.g. "
                        "`[time=50, 128]`)" if fixed else "")
                raise ExportError(f"unknown dynamic axis '{n}'; this spec's axes that can be dynamic: "
                                  f"{', '.join(available)}{hint}")
            if n not in wanted:
                wanted.append(n)
    axes = {n: available[n] for n in sorted(wanted, key=available.get)}

    nominal = report.graph.input.shape
    first, second = list(nominal), list(nominal)
    for name, axis in axes.items():
        if axis == 0:
            continue
        second[axis - 1] = _second_size(report, axis - 1, name)
    first_report = report
    try:
        second_report = report_at(report, tuple(second))
        problem = "" if second_report.totals.params == report.totals.params else "the weights would change"
    except ArchspecError as exc:
        problem = str(exc)
    if problem:
        raise ExportError(f"the network does not accept the dynamic axes at their second check size "
                          f"{tuple(second)}: {problem}; export with fewer dynamic axes (--dynamic)")
    batch_dynamic = 0 in axes.values()
    b1, b2 = CHECK_BATCHES if batch_dynamic else (1, 1)
    runs = [_run(b1, (tuple(first),), first_report)]
    if tuple(second) != tuple(first) or b2 != b1:
        runs.append(_run(b2, (tuple(second),), second_report))
    by_size = {}
    for name, axis in axes.items():
        if axis:
            by_size[(first[axis - 1], second[axis - 1])] = name
    output_axes = []
    for out, t1, t2 in zip(report.graph.outputs, first_report.outputs.values(), second_report.outputs.values()):
        oaxes = {0: batch_name} if batch_dynamic else {}
        for j, (a, b) in enumerate(zip(t1.shape, t2.shape)):
            if a != b:
                oaxes[j + 1] = by_size.get((a, b), f"{out.name}_dim{j + 1}")
        output_axes.append(oaxes)
    return Plan(axes, ({a: n for n, a in axes.items()},), tuple(runs), tuple(output_axes), (first_report, second_report))


def _run(batch: int, samples: tuple[tuple[int, ...], ...], report: Report) -> Run:
    return Run(tuple((batch, *s) for s in samples), tuple((batch, *t.shape) for t in report.outputs.values()))


def _plan_several(report: Report, dynamic: str | Iterable[str] | bool | None) -> Plan:
    """Several inputs share the batch axis, the one axis such a spec exports dynamic: the checker's
    types hold at every batch size, so the verification sizes need no second check."""
    names = [] if dynamic in (None, True, False) else [
        n.strip() for n in (dynamic.split(",") if isinstance(dynamic, str) else dynamic)]
    names = [n for n in names if n and n.lower() != "none"]
    unknown = [n for n in names if n != BATCH_AXIS]
    if unknown:
        raise ExportError(f"unknown dynamic axis '{unknown[0]}'; a spec with several inputs exports only the "
                          f"batch axis dynamic")
    batch = dynamic is not False and (dynamic in (None, True) or BATCH_AXIS in names)
    samples = tuple(i.shape for i in report.graph.inputs)
    notes = []
    symbolic = [f"{i.name}.{d.name}" for i in report.graph.inputs for d in i.dims if d.name]
    if symbolic:
        notes.append(f"symbolic axes {', '.join(symbolic)} exported at their nominal sizes: a spec with several "
                     "inputs exports only the batch axis dynamic")
    batches = CHECK_BATCHES if batch else (1,)
    runs = tuple(_run(b, samples, report) for b in batches)
    axis = {0: BATCH_AXIS} if batch else {}
    return Plan({BATCH_AXIS: 0} if batch else {}, tuple(dict(axis) for _ in samples), runs,
                tuple(dict(axis) for _ in report.graph.outputs), (report, report), tuple(notes))


def _second_size(report: Report, index: int, name: str) -> int:
    nominal = report.graph.input.shape
    tried = []
    for k in SEQ_OFFSETS + (nominal[index],):
        shape = list(nominal)
        shape[index] = nominal[index] + k
        try:
            other = report_at(report, tuple(shape))
        except ArchspecError:
            other = None
        # the same weights must fit: a linear after a flatten takes its width from this axis
        if other is not None and other.totals.params == report.totals.params:
            return shape[index]
        tried.append(shape[index])
    raise ExportError(f"input axis '{name}' is declared symbolic ({name}={nominal[index]}), but the network "
                      f"only accepts {name}={nominal[index]} (tried {', '.join(map(str, tried))}); "
                      f"export it fixed, e.g. --dynamic batch")
