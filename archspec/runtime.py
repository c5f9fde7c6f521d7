"""Stage 7, run: onnxruntime inference and benchmarking of exported models.

`Session` wraps one `onnxruntime.InferenceSession`, created once and reused: graph optimisation
ORT_ENABLE_ALL (Conv+BN folding, Gemm+activation fusion, NCHWc layouts), intra-op threads = the
physical cores this process may use. Devices: "cpu"; "cuda" (strict: an error when onnxruntime
cannot run on CUDA, because onnxruntime itself silently falls back to the CPU); "auto" (CUDA when
it works, else the CPU with a notice).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .errors import ArchspecError

if TYPE_CHECKING:
    import numpy as np

    from .analyze import Report

DEVICES = ("cpu", "cuda", "auto")
SPINNING = ("during_run", "always", "never")  # when idle onnxruntime pool threads busy-wait for work
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class RunError(ArchspecError):
    """A model cannot be run as asked (bad input, unreadable model)."""


class DeviceError(RunError):
    """The requested device cannot be used."""


# -- threads ----------------------------------------------------------------------------------

def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on, capped by a cgroup CPU quota.
    os.cpu_count() counts logical CPUs (hyper-threads), which oversubscribes compute-bound kernels."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            siblings = str(cpu)
        cores.add(siblings)
    n = max(1, len(cores))
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


# -- sessions ---------------------------------------------------------------------------------

class Session:
    """One onnxruntime session, created once; `run` takes numpy arrays and returns them by name."""

    def __init__(self, model: str | os.PathLike | bytes, *, device: str = "cpu", threads: int | None = None,
                 optimization: str = "all", spinning: str = "during_run",
                 cuda_options: Mapping[str, str] | None = None):
        import onnxruntime as ort

        if device not in DEVICES:
            raise DeviceError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        self.requested = device
        self.notice = ""
        self.threads = threads or physical_cores()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3  # errors only: the CUDA fallback warning is detected and reported below
        # Pool threads that spin between the tasks of one run halve the latency of small kernels
        # (measured on 2 cores: the LSTM classifier 1.90 -> 0.92 ms); spinning on after the run returns
        # would only burn the cores the caller (or torch, in a benchmark) uses next.
        if spinning not in SPINNING:
            raise RunError(f"unknown spinning mode {spinning!r}; choose one of {', '.join(SPINNING)}")
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0" if spinning == "never" else "1")
        if spinning == "during_run":
            opts.add_session_config_entry("session.force_spinning_stop", "1")

        available = ort.get_available_providers()
        why_not = "" if CUDA in available else (
            f"onnxruntime {ort.__version__} has no CUDA execution provider; replace it with onnxruntime-gpu: "
            "pip uninstall onnxruntime && pip install 'archspec[gpu]'")
        if device == "cuda" and why_not:
            raise DeviceError(f"device 'cuda' unavailable: {why_not}")
        # cuda_options: CUDA execution provider options, e.g. {"use_tf32": "0"} for float32 matmuls
        providers = [(CUDA, dict(cuda_options or {})), CPU] if device in ("cuda", "auto") and not why_not else [CPU]
        source = os.fspath(model) if not isinstance(model, bytes) else model
        try:
            with warnings.catch_warnings():  # "Specified provider ... is not in available provider names"
                warnings.simplefilter("ignore")
                self._session = ort.InferenceSession(source, opts, providers=providers)
        except Exception as exc:
            raise RunError(f"onnxruntime cannot load {model if not isinstance(model, bytes) else 'the model'}: "
                                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") \
                from exc
        self.providers = tuple(self._session.get_providers())
        self.device = "cuda" if CUDA in self.providers else "cpu"
        if device in ("cuda", "auto") and self.device != "cuda":
            why_not = why_not or ("onnxruntime-gpu is installed but could not start CUDA (no GPU visible, or the "
                                  "CUDA/cuDNN libraries it needs are missing); it fell back to "
                                  + ", ".join(self.providers))
            if device == "cuda":
                raise DeviceError(f"device 'cuda' unavailable: {why_not}")
            self.notice = f"CUDA unavailable, running on the CPU: {why_not}"
        self.inputs = tuple((i.name, tuple(i.shape), i.type) for i in self._session.get_inputs())
        self.outputs = tuple(o.name for o in self._session.get_outputs())
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)

    def run(self, feeds: Mapping[str, "np.ndarray"] | "np.ndarray") -> dict[str, "np.ndarray"]:
        if not isinstance(feeds, Mapping):
            feeds = {self.inputs[0][0]: feeds}
        return dict(zip(self.outputs, self._session.run(None, dict(feeds))))

    def run_fn(self, feeds: Mapping[str, "np.ndarray"]) -> Callable[[], Any]:
        """A zero-argument call for timing loops (no dict rebuilding per call)."""
        sess, feeds = self._session, dict(feeds)
        return lambda: sess.run(None, feeds)

    # Inputs ------------------------------------------------------------------------------
    def example_inputs(self, batch: int = 1, seed: int = 0,
                       shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, "np.ndarray"]:
        """Random inputs of the declared shape: batch for the batch axis, the spec's nominal size for
        other symbolic axes (from archspec's metadata), token ids below the vocabulary size.
        `shapes` gives an input's whole shape (batch included), e.g. {"tokens": (3, 7)}."""
        import numpy as np

        rng = np.random.default_rng(seed)
        metas = json.loads(self.metadata.get("archspec.inputs", "null") or "null")
        if metas is None:  # exported before archspec knew several inputs
            metas = [json.loads(self.metadata.get("archspec.input", "null") or "null")]
        shapes = dict(shapes or {})
        unknown = [n for n in shapes if n not in [i[0] for i in self.inputs]]
        if unknown:
            raise RunError(f"--shape names input '{unknown[0]}', but the model's inputs are "
                           f"{', '.join(i[0] for i in self.inputs)}")
        feeds = {}
        for k, (name, shape, type_) in enumerate(self.inputs):
            meta = metas[k] if k < len(metas) else None
            dims = []
            if name in shapes:
                given = shapes[name]
                bad = [f"axis {i} is {n}, the model needs {d}" for i, (n, d) in enumerate(zip(given, shape))
                       if isinstance(d, int) and d > 0 and n != d]
                if len(given) != len(shape) or bad:
                    raise RunError(f"--shape {name}={'x'.join(map(str, given))} does not fit {_shape_text(shape)}"
                                   + (": " + "; ".join(bad) if bad else f" ({len(shape)} axes, batch included)"))
                dims = list(given)
            for axis, d in enumerate(shape if not dims else ()):
                if isinstance(d, int) and d > 0:
                    dims.append(d)
                elif axis == 0:
                    dims.append(batch)
                elif meta and axis - 1 < len(meta["dims"]):
                    info = meta["dims"][axis - 1]
                    dims.append(int(info.get("nominal", info.get("size", 1))))
                else:
                    raise RunError(f"input '{name}' axis {axis} is dynamic ({d}) and the model carries no "
                                        f"nominal size for it; pass --shape {name}=... or --input {name}=FILE.npy")
            if "int64" in type_:
                high = int(meta.get("vocab", 2)) if meta else 2
                feeds[name] = rng.integers(0, high, size=dims, dtype=np.int64)
            elif "int32" in type_:
                feeds[name] = rng.integers(0, 2, size=dims, dtype=np.int32)
            else:
                feeds[name] = rng.standard_normal(dims).astype(np.float32)
        return feeds

    def coerce(self, array: "np.ndarray", name: str | None = None) -> dict[str, "np.ndarray"]:
        """A user array for the (first) input: dtype cast, a batch axis added to a single sample,
        and the fixed axes checked, so that mistakes read as such instead of as an ORT error."""
        import numpy as np

        name = name or self.inputs[0][0]
        _, shape, type_ = next(i for i in self.inputs if i[0] == name)
        array = np.asarray(array)
        if array.ndim == len(shape) - 1:
            array = array[None]
        if array.ndim != len(shape):
            raise RunError(f"input '{name}' needs {len(shape)} axes {_shape_text(shape)} (or {len(shape) - 1} "
                                f"for one sample), got shape {array.shape}")
        bad = [f"axis {i} is {n}, the model needs {d}" for i, (n, d) in enumerate(zip(array.shape, shape))
               if isinstance(d, int) and d > 0 and n != d]
        if bad:
            raise RunError(f"input '{name}' of shape {array.shape} does not fit {_shape_text(shape)}: "
                                + "; ".join(bad))
        if "int64" in type_:
            if not np.issubdtype(array.dtype, np.integer):
                raise RunError(f"input '{name}' takes integer token ids, got {array.dtype}")
            array = array.astype(np.int64)
        elif "float" in type_:
            array = array.astype(np.float32)
        return {name: array}


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


_CACHE: dict[tuple, Session] = {}
_CACHE_SIZE = 4


def session_for(path: str | os.PathLike, *, device: str = "cpu", threads: int | None = None) -> Session:
    """A cached Session per (file, version on disk, device, threads): repeated runs reuse it."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size, device, threads)
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = Session(path, device=device, threads=threads)
    return _CACHE[key]


# -- run ------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    outputs: dict[str, "np.ndarray"]
    inputs: dict[str, tuple[int, ...]]
    providers: tuple[str, ...]
    device: str
    seconds: float  # the inference call alone
    notice: str = ""
    scores: frozenset[str] | None = None  # outputs that are class scores (from the export), None: unknown

    def summary(self, top: int = 5, samples: int = 4) -> str:
        import numpy as np

        lines = ["inputs: " + ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in self.inputs.items()),
                 f"ran on {self.device} ({', '.join(self.providers)}) in {self.seconds * 1e3:.2f} ms"]
        for name, y in self.outputs.items():
            lines.append(f"output '{name}': {'x'.join(map(str, y.shape))} {y.dtype}")
            is_scores = name in self.scores if self.scores is not None else y.ndim == 2
            if is_scores and y.ndim == 2 and y.shape[1] > 1 and np.issubdtype(y.dtype, np.floating):
                k = min(top, y.shape[1])
                for i in range(min(samples, y.shape[0])):
                    idx = np.argsort(-y[i], kind="stable")[:k]
                    lines.append(f"  [{i}] top-{k}: " + "  ".join(f"{j}:{y[i, j]:.4g}" for j in idx))
                if y.shape[0] > samples:
                    lines.append(f"  ... {y.shape[0] - samples} more")
            else:
                flat = y.reshape(-1)
                head = ", ".join(f"{v:.4g}" for v in flat[:8])
                lines.append(f"  min {flat.min():.4g}  max {flat.max():.4g}  mean {flat.mean():.4g}  "
                             f"first [{head}{', ...' if flat.size > 8 else ''}]")
        return "\n".join(lines)


def run_model(model: Any, inputs: Any = None, *, device: str = "cpu", batch: int = 1, threads: int | None = None,
              seed: int = 0, limits: Any = None, shapes: Mapping[str, tuple[int, ...]] | None = None) -> RunResult:
    """Runs an ONNX file (or a spec, exported to a temporary folder first) with onnxruntime.

    inputs: None for random inputs of the model's shape (`batch` samples; `shapes` sets an
    input's whole shape, for its dynamic axes), a numpy array or a .npy path for the first input
    (one sample or a batch), or a dict of arrays or .npy paths by input name.
    """
    import numpy as np

    if batch < 1:
        raise RunError(f"batch must be >= 1, got {batch}")
    session = _session_for_model(model, device, threads, limits)
    if inputs is None:
        feeds = session.example_inputs(batch, seed, shapes)
    elif isinstance(inputs, Mapping):
        feeds = {}
        for name, value in inputs.items():
            feeds.update(session.coerce(_load_array(value), name))
    else:
        feeds = session.coerce(_load_array(inputs))
    missing = [n for n, _, _ in session.inputs if n not in feeds]
    if missing:
        raise RunError(f"no value for input(s) {', '.join(missing)}")
    t0 = time.perf_counter()
    try:
        outputs = session.run(feeds)
    except Exception as exc:
        raise RunError(f"onnxruntime failed: {str(exc).strip().splitlines()[0]}") from exc
    seconds = time.perf_counter() - t0
    declared = json.loads(session.metadata.get("archspec.outputs", "null") or "null")
    scores = frozenset(o["name"] for o in declared if o.get("scores")) if declared is not None else None
    return RunResult({k: np.asarray(v) for k, v in outputs.items()}, {k: tuple(v.shape) for k, v in feeds.items()},
                     session.providers, session.device, seconds, session.notice, scores)


def _load_array(value: Any) -> "np.ndarray":
    import numpy as np

    if isinstance(value, (str, os.PathLike)):
        try:
            return np.load(os.fspath(value), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RunError(f"cannot read input {value}: {exc}") from None
    return np.asarray(value)


def is_spec(model: Any) -> bool:
    from .analyze import Report
    from .load import Document
    from .resolve import Graph

    if isinstance(model, (Report, Graph, Document)):
        return True
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith((".yaml", ".yml"))


def _session_for_model(model: Any, device: str, threads: int | None, limits: Any) -> Session:
    if isinstance(model, Session):
        return model
    if is_spec(model):
        from .api import check
        from .export_onnx import export_model

        report = check(model, limits=limits)
        with tempfile.TemporaryDirectory(prefix="archspec-run-") as tmp:
            export_model(report, Path(tmp) / f"{report.graph.name}.onnx")
            return Session(Path(tmp) / f"{report.graph.name}.onnx", device=device, threads=threads)
    if not os.path.isfile(model):
        raise RunError(f"no such model file: {model}")
    return session_for(model, device=device, threads=threads)


# -- bench ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    median: float  # seconds per call, over every timed call
    q1: float
    q3: float
    min: float
    max: float
    calls: int  # calls per block; each round times one block of each contender
    rounds: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


@dataclass(frozen=True)
class BenchRow:
    spec: str
    batch: int
    macs: int  # per sample
    torch: Timing
    ort: Timing
    threads: int
    device: str
    exporter: str
    export_seconds: float = 0.0  # `archspec export` of this spec, verification included
    input_shape: tuple[int, ...] = ()  # per sample: shows the sequence length of recurrent specs

    def gflops(self, t: Timing) -> float:
        return 2 * self.macs * self.batch / t.median / 1e9

    def throughput(self, t: Timing) -> float:
        return self.batch / t.median

    @property
    def speedup(self) -> float:
        return self.torch.median / self.ort.median


def _quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[1], q[2]


def time_interleaved(fns: Sequence[Callable[[], Any]], *, rounds: int = 15, warmup: int = 3,
                     min_block: float = 0.02, settle: float = 0.01) -> list[Timing]:
    """Times several calls fairly: warm-up, then per round one block of calls of each (A B A B ...),
    each block long enough (>= min_block s) to be a fair share of the round. Every call is timed on
    its own, so the median is the typical latency even on a busy machine, where an occasional call
    stalls for a scheduler time slice (a block mean would be dominated by those). Between blocks the
    cores idle for `settle` s: a runtime's worker threads busy-wait a while after its call returns
    (torch's OpenMP pool does), and would otherwise slow the next contender down (measured on 2 cores:
    ResNet-50 in onnxruntime 46 ms right after a torch call, 39 ms after a 10 ms pause)."""
    calls = []
    for fn in fns:
        t0 = time.perf_counter()
        for _ in range(max(1, warmup)):
            fn()
        est = (time.perf_counter() - t0) / max(1, warmup)
        calls.append(max(1, math.ceil(min_block / max(est, 1e-7))))
    samples: list[list[float]] = [[] for _ in fns]
    clock = time.perf_counter
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            if settle:
                time.sleep(settle)
            out = samples[i]
            for _ in range(calls[i]):
                t0 = clock()
                fn()
                out.append(clock() - t0)
    result = []
    for xs, n in zip(samples, calls):
        q1, med, q3 = _quartiles(xs)
        result.append(Timing(med, q1, q3, min(xs), max(xs), n, rounds))
    return result


def bench_model(spec: Any, *, batches: Iterable[int] = (1,), rounds: int = 15, warmup: int = 3,
                threads: int | None = None, device: str = "cpu", seed: int = 0, limits: Any = None,
                min_block: float = 0.02, spinning: str = "during_run") -> list[BenchRow]:
    """PyTorch eager (inference_mode) vs onnxruntime on the same weights, inputs and device (torch
    moves to CUDA when the onnxruntime session runs there), with the same CPU thread count."""
    import numpy as np
    import torch

    from .api import check
    from .export_onnx import _examples, export_model
    from .lower import build_module

    report: Report = check(spec, limits=limits)
    module = build_module(report, seed=seed).eval()
    with tempfile.TemporaryDirectory(prefix="archspec-bench-") as tmp:
        path = Path(tmp) / f"{report.graph.name}.onnx"
        result = export_model(report, path, weights=module.state_dict(), seed=seed)
        # pool threads that kept spinning after a run would steal torch's time slices when the two are
        # interleaved on the same cores (measured: LeNet in torch 80 ms instead of 0.3 ms on 2 cores)
        session = Session(path, device=device, threads=threads, spinning=spinning)
    on_cuda = session.device == "cuda"
    if on_cuda:
        module = module.to("cuda")
    if session.notice:
        import sys

        print(f"archspec: notice: {session.notice}", file=sys.stderr)
    rows = []
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(session.threads)
    try:
        for batch in batches:
            xs = _examples(report, tuple((batch, *i.shape) for i in report.graph.inputs), seed=seed)
            feeds = {i.name: x.numpy() for i, x in zip(report.graph.inputs, xs)}
            xs = tuple(x.to("cuda") for x in xs) if on_cuda else xs

            def torch_call(xs: tuple["torch.Tensor", ...] = xs) -> "torch.Tensor":
                y = module(*xs)
                y = y[0] if isinstance(y, tuple) else y  # the first output is compared
                if on_cuda:
                    torch.cuda.synchronize()  # CUDA kernels run asynchronously: time them to completion
                return y

            # a sanity check that both run the same model; on CUDA both engines multiply in TF32 by default
            tol = 1e-2 if on_cuda else 1e-4
            with torch.inference_mode():
                ref = torch_call().cpu().numpy()
                got = session.run(feeds)[report.graph.output_name]
                if not np.allclose(got, ref, rtol=tol, atol=tol * max(1.0, float(np.abs(ref).max()))):
                    raise RunError(f"{report.graph.name}: onnxruntime and PyTorch disagree at batch {batch}")
                t_torch, t_ort = time_interleaved([torch_call, session.run_fn(feeds)], rounds=rounds,
                                                  warmup=warmup, min_block=min_block)
            rows.append(BenchRow(report.graph.name, batch, report.totals.macs, t_torch, t_ort, session.threads,
                                 session.device, result.exporter, result.seconds, report.graph.input.shape))
    finally:
        torch.set_num_threads(saved_threads)
    return rows


def bench_table(rows: Sequence[BenchRow]) -> str:
    """A Markdown table: median latency with its interquartile range, throughput and GFLOP/s."""
    head = ("| spec | input | exporter | export s | batch | MACs/sample | torch eager ms (IQR) | onnxruntime ms (IQR) | "
            "speedup | torch samples/s | ORT samples/s | torch GFLOP/s | ORT GFLOP/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.spec} | {'x'.join(map(str, r.input_shape))} | {r.exporter} | {r.export_seconds:.1f} | {r.batch} | "
            f"{_units(r.macs)} | "
            f"{r.torch.median * 1e3:.3f} ({r.torch.iqr * 1e3:.3f}) | "
            f"{r.ort.median * 1e3:.3f} ({r.ort.iqr * 1e3:.3f}) | "
            f"{r.speedup:.2f}x | {r.throughput(r.torch):,.0f} | {r.throughput(r.ort):,.0f} | "
            f"{r.gflops(r.torch):.1f} | {r.gflops(r.ort):.1f} |")
    return "\n".join(lines)


def _units(n: int) -> str:
    from .render import human_units

    return human_units(n)
