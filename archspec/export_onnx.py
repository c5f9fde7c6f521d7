"""Stage 6, export: the lowered module -> a verified ONNX file.

Every export is followed by proof that the file is right, and nothing is left at the output path
unless every check passed:

1. `onnx.checker.check_model(full_check=True)` (which includes strict shape inference);
2. each dynamic axis is still symbolic (`dim_param`) in the graph input, each fixed axis concrete;
3. ONNX shape inference of the output agrees with archspec's checker: fixed axes equal, dynamic
   axes symbolic;
4. onnxruntime's output equals the PyTorch module's (eval mode) at two sizes of every dynamic
   axis (batch 1 and 3; a symbolic sequence axis at its nominal length and nominal+7), never only
   at the example size the exporter traced. The criterion, float32:
   max|ort - torch| <= 1e-5 * max(1, max|torch|), i.e. a relative error of 1e-5 against the
   output's magnitude, floored at 1 so that near-zero outputs are held to 1e-5 absolute.

Exporter choice (torch 2.13, measured): the dynamo exporter is the default and handles the CNNs
(LRN, adaptive pooling, BN folded into Conv by its optimizer); the legacy TorchScript exporter is
used as soon as one layer kind says `exporter = "torchscript"` (the recurrent kinds), because
dynamo silently fixes the sequence length of nn.RNN graphs and, with a batch-1 example, the batch
axis of LSTM/GRU graphs. Dynamo is never traced with a size-1 example of a dynamic axis.

Writes are atomic: the model (and, over 2 GB, its external data file `<name>.<token>.data`, a
fresh name each time) is written and verified in a hidden temporary folder next to the output,
then moved into place with `os.replace`, data first, model last; a failure or interruption leaves
neither a truncated file nor a model pointing at data of another export.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import io
import itertools
import json
import logging
import os
import secrets
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from .analyze import Report, analyze
from .errors import ArchspecError
from .files import check_output, commit, make_public, staging
from .labels import spec_labels
from .layers import REGISTRY
from .limits import Limits
from .memory import needed, require
from .resolve import Graph, Node, resolve
from .runtime import Session  # first: it keeps onnxruntime from writing under the home folder
from .weights import load_into, sidecar_note

if TYPE_CHECKING:
    import onnx
    import torch

BATCH_AXIS = "batch"
TOLERANCE = 1e-5  # float32 parity, relative to max(1, max|torch output|)
CHECK_BATCHES = (1, 3)  # two batch sizes every export is verified at
SEQ_OFFSETS = (7, 8, 16, 32)  # second size of a symbolic axis: the first nominal+k the checker accepts
# protobuf cannot serialise a message over 2 GiB; keep a margin for the graph itself.
EXTERNAL_DATA_THRESHOLD = (1 << 31) - (1 << 26)
_RECHECK_LIMITS = Limits(max_params=10**15, max_macs=10**18, max_activation_bytes=10**16)
_STRIP_NODE_METADATA = ("pkg.torch.onnx.stack_trace",)  # absolute paths of the exporting machine


class ExportError(ArchspecError):
    """The export failed or its verification did; nothing was written."""


@dataclass(frozen=True)
class Verification:
    """One parity run: onnxruntime vs PyTorch at one input size."""

    input_shape: tuple[int, ...]  # with the batch axis
    output_shape: tuple[int, ...]
    max_abs_error: float  # max |ort - torch|
    max_rel_error: float  # max |ort - torch| / max(1, max |torch|); must be <= tolerance
    reference_max: float  # max |torch|

    def __str__(self) -> str:
        return (f"{'x'.join(map(str, self.input_shape))} -> {'x'.join(map(str, self.output_shape))}: "
                f"max abs err {self.max_abs_error:.2e}, rel {self.max_rel_error:.2e}")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    dynamic_axes: Mapping[str, int]  # axis name -> input axis index (0 = batch)
    checks: tuple[Verification, ...]  # one per checked size; every dynamic axis takes two sizes
    tolerance: float
    seconds: float  # total wall time, export and verification
    export_seconds: float
    verify_seconds: float
    bytes: int  # model file plus external data
    external_data: Path | None = None
    notes: tuple[str, ...] = ()

    @property
    def sizes_checked(self) -> tuple[tuple[int, ...], ...]:
        return tuple(c.input_shape for c in self.checks)

    @property
    def max_abs_error(self) -> float:
        return max((c.max_abs_error for c in self.checks), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((c.max_rel_error for c in self.checks), default=0.0)

    def summary(self) -> str:
        size = f"{self.bytes / 1e6:.1f} MB" if self.bytes >= 10**5 else f"{self.bytes / 1e3:.1f} KB"
        axes = ", ".join(self.dynamic_axes) or "none"
        data = f", external data {self.external_data.name}" if self.external_data else ""
        lines = [f"wrote {self.path} ({size}{data}; "
                 f"{self.exporter} exporter, opset {self.opset}, dynamic axes: {axes}) in {self.seconds:.1f}s"]
        if self.checks:
            lines.append("verified: onnx checker (full), dynamic axes symbolic, shape inference = archspec check, "
                         f"onnxruntime = PyTorch within {self.tolerance:g} x max(1, |output|):")
        else:
            lines.append("NOT verified (check=False)")
        lines += [f"  {c}" for c in self.checks]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- entry point ------------------------------------------------------------------------------

def export_model(report: Report, output: Path, *, weights: str | os.PathLike | Mapping[str, Any] | None = None,
                 opset: int | None = None, dynamic: str | Iterable[str] | bool | None = None,
                 verbose: bool = False, check: bool = True, seed: int = 0, exporter: str = "auto") -> ExportResult:
    """Exports the spec's module to `output` and verifies it (see the module docstring).

    weights: a `.safetensors`, `torch.save(module.state_dict())` or `.npz` file of the module
    `archspec.build` returns, or such a dict (read by `archspec.weights`); without it the module
    keeps its seeded initial weights.
    dynamic: axis names to keep dynamic, e.g. "batch,time"; default every axis that can be
    (batch, and each input axis the spec declares symbolic as `name=nominal`); False or "none"
    for a fully static model (batch 1).
    check=False skips the verification (for debugging the exporter only).
    exporter: "auto" (from the layer kinds' `exporter`), or force "dynamo" / "torchscript".
    """
    import torch

    started = time.perf_counter()
    inputs = (report.graph.doc.file, None if weights is None or isinstance(weights, Mapping) else weights)
    output = check_output(output, inputs=inputs)
    plan = _plan(report, dynamic)
    require(f"exporting '{report.graph.name}'", needed(report, "export"))
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ExportError(f"unknown exporter {exporter!r}; choose auto, dynamo or torchscript")
    exporter = choose_exporter(report) if exporter == "auto" else exporter
    module = _module(report, weights, seed)
    notes = list(plan.notes)
    if weights is not None and not isinstance(weights, Mapping):
        notes += sidecar_note(Path(weights), report.graph.name, report.graph.sha256)

    with staging(output) as tmpdir:
        with torch.no_grad():
            t0 = time.perf_counter()
            proto = _run_exporter(exporter, module, report, plan, opset, verbose, tmpdir)
            _annotate(proto, report, exporter, weights)
            staged = tmpdir / output.name
            data = _save(proto, staged)
            del proto
            t1 = time.perf_counter()
            checks = _verify(staged, module, report, plan) if check else ()
            t2 = time.perf_counter()
        final_opset = _opset_of(staged)
        size = staged.stat().st_size + (data.stat().st_size if data else 0)
        data_path = commit(staged, output, data=data, inputs=inputs, data_of=external_data_files)
    return ExportResult(
        path=output, exporter=exporter, opset=final_opset, dynamic_axes=dict(plan.axes), checks=tuple(checks),
        tolerance=TOLERANCE, seconds=time.perf_counter() - started, export_seconds=t1 - t0,
        verify_seconds=t2 - t1, bytes=size, external_data=data_path,
        notes=tuple(notes))


def choose_exporter(report: Report) -> str:
    """'torchscript' when any layer kind in the model asks for it, else 'dynamo'."""
    kinds = {node.kind for _, node in iter_layers(report.graph)}
    return "torchscript" if any(REGISTRY[k].exporter == "torchscript" for k in kinds) else "dynamo"


def iter_layers(graph: Graph) -> Iterator[tuple[str, Node]]:
    """(module path, node) for every layer, in the module paths lowering gives them."""
    for node in graph.nodes:
        yield node.scope, node


# -- planning: which axes are dynamic, which sizes are traced and verified ---------------------

@dataclass(frozen=True)
class _Run:
    """One verification size: every input's shape and every output's expected shape, batch included."""

    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class _Plan:
    axes: dict[str, int]  # dynamic axis name -> axis index of the first input (batch = 0)
    input_axes: tuple[dict[int, str], ...]  # per input: dynamic axis index -> name
    example: tuple[tuple[int, ...], ...]  # the traced input shapes, batch included
    runs: tuple[_Run, ...]
    output_axes: tuple[dict[int, str], ...]  # per output: dynamic axis index -> name
    notes: tuple[str, ...] = ()


def report_at(report: Report, sample_shape: tuple[int, ...]) -> Report:
    """The checker's report for another input size. The spec already passed its budgets at its own
    size, so budgets and limits are not applied again here."""
    if sample_shape == report.graph.input.shape:
        return report
    graph = resolve(report.graph.doc, _RECHECK_LIMITS, sample_shape)
    graph = replace(graph, spec=graph.spec.model_copy(update={"budget": None}))
    return analyze(graph, _RECHECK_LIMITS)


def _plan(report: Report, dynamic: str | Iterable[str] | bool | None) -> _Plan:
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
    # dynamo specialises any axis traced at size 1 (0/1 specialisation): trace with >= 2
    example = [2 if batch_dynamic else 1] + [
        (second[i] if nominal[i] < 2 else nominal[i]) if (i + 1) in axes.values() else nominal[i]
        for i in range(len(nominal))]
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
    return _Plan(axes, ({a: n for n, a in axes.items()},), (tuple(example),), tuple(runs), tuple(output_axes))


def _run(batch: int, samples: tuple[tuple[int, ...], ...], report: Report) -> _Run:
    return _Run(tuple((batch, *s) for s in samples), tuple((batch, *t.shape) for t in report.outputs.values()))


def _plan_several(report: Report, dynamic: str | Iterable[str] | bool | None) -> _Plan:
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
    return _Plan({BATCH_AXIS: 0} if batch else {}, tuple(dict(axis) for _ in samples),
                 tuple((2 if batch else 1, *s) for s in samples), runs,
                 tuple(dict(axis) for _ in report.graph.outputs), tuple(notes))


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


# -- the module and its weights -----------------------------------------------------------------

def _module(report: Report, weights: Any, seed: int) -> "torch.nn.Module":
    from .lower import build_module

    module = build_module(report, seed=seed)
    if weights is not None:
        load_into(module, weights)
    return module.eval()


# -- running the exporters ------------------------------------------------------------------

def _run_exporter(exporter: str, module: Any, report: Report, plan: _Plan, opset: int | None, verbose: bool,
                  tmpdir: Path) -> "onnx.ModelProto":
    import torch

    # the exporters name internal values after their ops ('linear', 'relu', ...), so the spec's names
    # may be taken: export under placeholders, then give the spec's names their values (_adopt_name)
    g = report.graph
    in_names = [f"{PLACEHOLDER_INPUT}{k}" for k in range(len(g.inputs))]
    out_names = [f"{PLACEHOLDER_OUTPUT}{k}" for k in range(len(g.outputs))]
    examples = _examples(report, plan.example)
    with _quiet(verbose) as log:
        try:
            if exporter == "dynamo":
                with _hide_triton_shadow():
                    dims: dict[str, Any] = {}  # forward(*inputs): one entry for the varargs, a dict per input
                    spec = tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in ax.items()}
                                 for ax in plan.input_axes)
                    program = torch.onnx.export(
                        module, examples, dynamo=True, input_names=in_names, output_names=out_names,
                        dynamic_shapes=(spec,), opset_version=opset, optimize=True, verbose=verbose)
                    proto = program.model_proto
            else:
                raw = tmpdir / "torchscript.onnx"
                axes = {**dict(zip(in_names, plan.input_axes)), **dict(zip(out_names, plan.output_axes))}
                torch.onnx.export(
                    module, examples, str(raw), dynamo=False, input_names=in_names, output_names=out_names,
                    dynamic_axes=axes, opset_version=opset or _legacy_default_opset(), do_constant_folding=True,
                    verbose=verbose)
                import onnx

                proto = onnx.load(str(raw), load_external_data=True)
                for f in tmpdir.iterdir():
                    f.unlink()
                drop_zero_initial_states(proto.graph)
            for placeholder, inp in zip(in_names, g.inputs):
                _adopt_name(proto.graph, placeholder, inp.name)
            for placeholder, out in zip(out_names, g.outputs):
                _adopt_name(proto.graph, placeholder, out.name)
        except Exception as exc:
            raise ExportError(f"the {exporter} exporter failed on spec '{report.graph.name}': "
                              f"{_first_line(exc)}{log.tail()}") from exc
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and got != opset:  # dynamo quietly raises opsets below 18 to 18
        raise ExportError(f"asked for opset {opset}, but the {exporter} exporter produced opset {got}"
                          + (" (the dynamo exporter targets opset 18 and newer; --exporter torchscript "
                             "reaches older opsets)" if exporter == "dynamo" and got and opset < got else ""))
    return proto


PLACEHOLDER_INPUT, PLACEHOLDER_OUTPUT = "archspec::input", "archspec::output"  # + index; never an identifier


def _adopt_name(graph: "onnx.GraphProto", placeholder: str, name: str) -> None:
    """Renames the value `placeholder` to `name`, first moving any internal value already called
    `name` to a fresh name (ONNX graphs name every value once)."""
    taken = ({v for node in graph.node for v in (*node.input, *node.output)}
             | {v.name for v in (*graph.input, *graph.output, *graph.initializer)})
    if name in taken:
        _rename_value(graph, name, next(f"{name}_{k}" for k in itertools.count(1) if f"{name}_{k}" not in taken))
    _rename_value(graph, placeholder, name)


def _rename_value(graph: "onnx.GraphProto", old: str, new: str) -> None:
    for node in graph.node:
        for names in (node.input, node.output):
            for i, v in enumerate(names):
                if v == old:
                    names[i] = new
    for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        if v.name == old:
            v.name = new


RECURRENT_OPS = {"RNN": (5,), "GRU": (5,), "LSTM": (5, 6)}  # op -> input slots of initial_h (initial_c)


def drop_zero_initial_states(graph: "onnx.GraphProto") -> int:
    """Leave out the initial states of ONNX RNN/GRU/LSTM nodes that torch traced as slices of an
    all-zero ConstantOfShape (nn.LSTM with no hx): absent, they are zero by the ONNX operator
    definition, and the Shape/Gather/Concat/ConstantOfShape/Slice chain that built them (about
    5 us per node in onnxruntime) goes. Returns the number of nodes removed."""
    from onnx import numpy_helper

    producer = {out: node for node in graph.node for out in node.output}

    def is_zeros(name: str) -> bool:
        node = producer.get(name)
        while node is not None and node.op_type == "Slice":
            node = producer.get(node.input[0])
        if node is None or node.op_type != "ConstantOfShape":
            return False
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return value is None or not numpy_helper.to_array(value).any()  # the default value is 0

    changed = False
    for node in graph.node:
        for slot in RECURRENT_OPS.get(node.op_type, ()):
            if slot < len(node.input) and node.input[slot] and is_zeros(node.input[slot]):
                node.input[slot] = ""
                changed = True
        while node.op_type in RECURRENT_OPS and node.input and node.input[-1] == "":
            node.input.pop()  # trailing optional inputs may simply be absent
    return _remove_dead_nodes(graph) if changed else 0


def _remove_dead_nodes(graph: "onnx.GraphProto") -> int:
    """Drop nodes none of whose outputs reaches a graph output (a reverse sweep over the
    topologically ordered node list). Graphs with subgraphs (If, Loop, Scan), whose bodies may use
    outer values without naming them as inputs, are left alone."""
    from onnx import AttributeProto

    if any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for node in graph.node for a in node.attribute):
        return 0
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    removed = len(graph.node) - len(keep)
    if removed:
        kept = list(reversed(keep))
        del graph.node[:]
        graph.node.extend(kept)
    return removed


def _legacy_default_opset() -> int:
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_DEFAULT_OPSET)
    except (ImportError, AttributeError):
        return 17


@contextlib.contextmanager
def _hide_triton_shadow() -> Iterator[None]:
    """A folder named `triton` on sys.path (say, in the working directory) is imported as a
    namespace package by torch._dynamo / torch._inductor, which then fail ("module 'triton' has no
    attribute 'language'"). Such entries are hidden from sys.path while the dynamo exporter runs."""
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin not in (None, "namespace"):
        yield  # no triton, or a real one
        return
    shadowing = {os.path.abspath(p) for p in (spec.submodule_search_locations or [])}
    saved_path, saved_module = list(sys.path), sys.modules.pop("triton", None)
    sys.path[:] = [p for p in sys.path if os.path.abspath(os.path.join(p or os.curdir, "triton")) not in shadowing]
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved_path
        if saved_module is not None:
            sys.modules["triton"] = saved_module


def _example(report: Report, shape: tuple[int, ...], seed: int = 0, index: int = 0) -> "torch.Tensor":
    """A random tensor for input `index` of the given shape (batch included)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    if report.graph.inputs[index].dtype == "int64":
        return torch.randint(0, vocab_size(report), shape, generator=gen, dtype=torch.int64)
    return torch.randn(shape, generator=gen)


def _examples(report: Report, shapes: tuple[tuple[int, ...], ...], seed: int = 0) -> tuple["torch.Tensor", ...]:
    return tuple(_example(report, s, seed + 1000 * k, k) for k, s in enumerate(shapes))


def vocab_size(report: Report) -> int:
    """Token ids must index every embedding: the smallest vocabulary; 2 when there is none."""
    return min((int(n.params.vocab) for _, n in iter_layers(report.graph) if n.kind == "embedding"), default=2)


class _Log:
    def __init__(self) -> None:
        self.text = ""

    def tail(self, lines: int = 15) -> str:
        kept = [ln for ln in self.text.splitlines() if ln.strip()][-lines:]
        return ("\nexporter output (last lines):\n  " + "\n  ".join(kept)) if kept else ""


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[_Log]:
    """Hides exporter noise (warnings, logging, progress prints, C++ output on fds 1 and 2) unless
    verbose; the captured text goes into the error message when the export fails."""
    log = _Log()
    if verbose:
        yield log
        return
    py_out = io.StringIO()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved: list[int] = []
    capture = tempfile.TemporaryFile()
    torch_logger = logging.getLogger("torch")
    saved_level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)  # "torchvision is not installed", exporter progress
    try:
        with contextlib.suppress(OSError):
            for fd in (1, 2):
                saved.append(os.dup(fd))
                os.dup2(capture.fileno(), fd)
        with contextlib.redirect_stdout(py_out), contextlib.redirect_stderr(py_out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield log
    finally:
        torch_logger.setLevel(saved_level)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        capture.seek(0)
        log.text = capture.read().decode("utf-8", "replace") + py_out.getvalue()
        capture.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


# -- annotating and saving ----------------------------------------------------------------------

def _annotate(model: "onnx.ModelProto", report: Report, exporter: str, weights: Any) -> None:
    """Model metadata from the spec, and a doc_string per node naming the spec layer it comes from."""
    from . import __version__

    g = report.graph
    inputs = []
    for i in g.inputs:
        inp = {"name": i.name, "dtype": i.dtype, "layout": i.layout,
               "dims": [{"name": d.name, "nominal": d.size} if d.name else {"size": d.size} for d in i.dims]}
        if i.dtype == "int64":
            inp["vocab"] = vocab_size(report)
        inputs.append(inp)
    outputs = [{"name": o.name, "shape": list(t.shape), "layout": t.axes,
                "scores": t.axes == "F" and g.nodes[g.values[o.value].producer].kind == "linear"
                if g.values[o.value].producer is not None else False}
               for o, t in zip(g.outputs, report.outputs.values())]
    if weights is None:
        source = "initial (seeded) weights"
    elif isinstance(weights, Mapping):
        source = "state dict"
    else:
        source = f"{Path(weights).name} sha256:{_sha256(Path(weights))}"
    meta = {
        "archspec.spec": g.name, "archspec.spec_sha256": g.sha256, "archspec.version": __version__,
        "archspec.source": g.doc.file, "archspec.params": str(report.totals.params),
        "archspec.macs": str(report.totals.macs), "archspec.flops": str(report.totals.flops),
        "archspec.exporter": exporter, "archspec.input": json.dumps(inputs[0]), "archspec.weights": source,
        "archspec.output_shape": json.dumps(list(report.output.shape)),
        "archspec.inputs": json.dumps(inputs), "archspec.outputs": json.dumps(outputs),
    }
    labels = spec_labels(report)
    if labels is not None:  # `archspec run` names the top classes
        meta["archspec.labels"] = json.dumps(list(labels))
    kept = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = g.description or f"archspec spec '{g.name}'"
    model.graph.name = g.name
    model.graph.doc_string = f"from {g.doc.file} (sha256 {g.sha256[:12]})"

    docs = {s.path: f"{s.path}: {s.label} at {s.loc}" for s in g.scopes}
    for node in g.nodes:
        where = f"{node.scope}: {node.kind} at {node.loc}"
        if node.calls:
            where += " (" + "; ".join(f"{note} at {loc}" for note, loc in node.calls) + ")"
        docs[node.scope] = where
    for node in model.graph.node:
        scope = _scope_of(node, docs)
        if scope is not None:
            node.doc_string = docs[scope]
        kept_meta = [p for p in node.metadata_props if p.key not in _STRIP_NODE_METADATA]
        if len(kept_meta) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept_meta)


def _scope_of(node: Any, docs: Mapping[str, str]) -> str | None:
    """The spec layer a node was generated from: dynamo records module name scopes in the node
    metadata; the TorchScript exporter names nodes `/scope/path/Op`."""
    candidates: list[str] = []
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            with contextlib.suppress(ValueError, SyntaxError):
                candidates = [s for s in ast.literal_eval(prop.value) if isinstance(s, str)]
    if not candidates and node.name.startswith("/"):
        parts = node.name.strip("/").split("/")[:-1]
        candidates = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for scope in reversed(candidates):
        if scope in docs:
            return scope
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _initializer_bytes(model: "onnx.ModelProto") -> int:
    import numpy as np
    from onnx import helper

    total = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        try:
            total += n * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            total += len(t.raw_data)
    return total


def _save(model: "onnx.ModelProto", path: Path) -> Path | None:
    """A self-contained file, or over EXTERNAL_DATA_THRESHOLD the graph plus `<name>.<token>.data`
    (a fresh name each export, so a new pair never overwrites the data of the old). Returns the data
    file, if any."""
    import onnx

    if _initializer_bytes(model) <= EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path))
        _fsync(path)
        return None
    location = f"{path.name}.{secrets.token_hex(4)}.data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024, convert_attribute=False)
    data = path.with_name(location)
    make_public(data)  # onnx creates it private (0600); give it the model file's mode
    _fsync(data)
    _fsync(path)
    return data


def external_data_files(model: Path) -> list[str]:
    """The external data locations an ONNX file names. A model over 64 MB holds its weights itself
    (archspec moves them out only when the graph proto stays small), so it is not parsed."""
    import onnx

    if model.stat().st_size > 1 << 26:
        return []
    proto = onnx.load(str(model), load_external_data=False)
    return sorted({e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"})


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _opset_of(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


# -- verification ---------------------------------------------------------------------------------

def _verify(path: Path, module: Any, report: Report, plan: _Plan) -> list[Verification]:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected the exported model of '{report.graph.name}': {_first_line(exc)}") \
            from exc
    header = onnx.load(str(path), load_external_data=False)
    _check_input_axes(header, report, plan)
    _check_output_shape(path, report, plan)
    return _check_parity(path, module, report, plan)


def _dims(value_info: Any) -> list[int | str | None]:
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None)
            for d in tt.shape.dim]


def _check_input_axes(model: Any, report: Report, plan: _Plan) -> None:
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    names = [i.name for i in report.graph.inputs]
    if [i.name for i in inputs] != names:
        raise ExportError(f"exported model has inputs {[i.name for i in inputs]}, expected {names}")
    for value, inp, axes in zip(inputs, report.graph.inputs, plan.input_axes):
        name = inp.name
        dims = _dims(value)
        expected: list[int | str] = [1] + list(inp.shape)
        for axis, axis_name in axes.items():
            expected[axis] = axis_name
        if len(dims) != len(expected):
            raise ExportError(f"exported input '{name}' has rank {len(dims)}, expected {len(expected)}")
        bad = [f"axis {i}: {d!r} (expected {'symbolic ' + repr(e) if isinstance(e, str) else e})"
               for i, (d, e) in enumerate(zip(dims, expected))
               if (isinstance(e, str) and not isinstance(d, str)) or (isinstance(e, int) and d != e)]
        if bad:
            raise ExportError(f"the exporter did not keep input '{name}' as declared: " + "; ".join(bad))


def _check_output_shape(path: Path, report: Report, plan: _Plan) -> None:
    """ONNX shape inference (strict, with data propagation) vs archspec's checker."""
    import onnx

    inferred_path = path.with_name(path.name + ".inferred")
    try:
        onnx.shape_inference.infer_shapes_path(str(path), str(inferred_path), check_type=True, strict_mode=True,
                                               data_prop=True)
        inferred = onnx.load(str(inferred_path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"ONNX shape inference failed on the exported '{report.graph.name}': {_first_line(exc)}") \
            from exc
    finally:
        with contextlib.suppress(OSError):
            inferred_path.unlink()
    outs = list(inferred.graph.output)
    names = [o.name for o in report.graph.outputs]
    if [o.name for o in outs] != names:
        raise ExportError(f"exported model has outputs {[o.name for o in outs]}, expected {names}")
    for value, (name, t), axes, expected in zip(outs, report.outputs.items(), plan.output_axes, plan.runs[0].outputs):
        dims = _dims(value)
        if len(dims) != len(expected):
            raise ExportError(f"ONNX shape inference gives output '{name}' rank {len(dims)} {dims}, archspec "
                              f"check says {len(expected)} (batch + {t})")
        bad = []
        for j, (d, e) in enumerate(zip(dims, expected)):
            if j in axes:
                if not isinstance(d, str):
                    bad.append(f"axis {j} should be dynamic ({axes[j]}) but is {d!r}")
            elif d != e:
                bad.append(f"axis {j} is {d!r}, archspec check says {e}")
        if bad:
            raise ExportError(f"ONNX shape inference disagrees with archspec check on output '{name}': "
                              + "; ".join(bad))


def _check_parity(path: Path, module: Any, report: Report, plan: _Plan) -> list[Verification]:
    import numpy as np
    import torch

    session = Session(path, device="cpu")
    results = []
    g = report.graph
    for k, run in enumerate(plan.runs):
        xs = _examples(report, run.inputs, seed=100 + k)
        size = ", ".join("x".join(map(str, shape)) for shape in run.inputs)
        with torch.no_grad():
            refs = module(*xs)
        refs = [t.numpy() for t in (refs if isinstance(refs, tuple) else (refs,))]
        try:
            got_all = session.run({i.name: x.numpy() for i, x in zip(g.inputs, xs)})
        except Exception as exc:
            raise ExportError(f"onnxruntime failed on input {size}: {_first_line(exc)}") from exc
        worst = None
        for out, ref, want_shape in zip(g.outputs, refs, run.outputs):
            got = got_all[out.name]
            if tuple(got.shape) != want_shape or tuple(ref.shape) != want_shape:
                raise ExportError(f"at input {size} onnxruntime gives {out.name} {tuple(got.shape)}, "
                                  f"PyTorch {tuple(ref.shape)}, archspec check {want_shape}")
            if not np.isfinite(ref).all():
                raise ExportError(f"the PyTorch output {out.name} at input {size} is not finite; "
                                  "cannot verify the export")
            diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
            max_abs = float(diff.max()) if diff.size else 0.0
            if not np.isfinite(got).all():
                max_abs = float("inf")
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            rel = max_abs / max(1.0, scale)
            if not rel <= TOLERANCE:
                raise ExportError(f"onnxruntime differs from PyTorch at input {size} on output '{out.name}': max abs "
                                  f"error {max_abs:.3g} > {TOLERANCE:g} x max(1, {scale:.3g})")
            check = Verification(run.inputs[0], tuple(got.shape), max_abs, rel, scale)
            if worst is None or rel > worst.max_rel_error:
                worst = check
        results.append(worst)
    return results
