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

from .errors import ArchspecError, install_hint
from .files import PathError, regular_file
from .memory import gigabytes, needed, require

# onnxruntime writes a device id and a telemetry database under ~/.cache/Microsoft/DeveloperTools
# when it is first loaded, unless this is set before it loads; a user who wants that sets
# ORT_DISABLE_TELEMETRY=0 (docs/api.md).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

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
        # fatal only, for the session and its runs: a failed run is reported once, by archspec, not also
        # as onnxruntime's coloured log line before it
        opts.log_severity_level = 4
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
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
            "pip uninstall onnxruntime, then " + install_hint("gpu"))
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
        return dict(zip(self.outputs, self._session.run(None, dict(feeds), self._run_options)))

    def run_fn(self, feeds: Mapping[str, "np.ndarray"]) -> Callable[[], Any]:
        """A zero-argument call for timing loops (no dict rebuilding per call)."""
        sess, feeds = self._session, dict(feeds)
        options = self._run_options
        return lambda: sess.run(None, feeds, options)

    # Inputs ------------------------------------------------------------------------------
    def example_inputs(self, batch: int = 1, seed: int = 0,
                       shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, "np.ndarray"]:
        """Random inputs of the declared shape: batch for the batch axis, the spec's nominal size for
        other symbolic axes (from archspec's metadata), token ids below the vocabulary size.
        `shapes` gives an input's whole shape (batch included), e.g. {"tokens": (3, 7)}."""
        import numpy as np

        rng = np.random.default_rng(seed)
        metas = self.input_metadata()
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
            nbytes = math.prod(dims) * (4 if "float" in type_ or "int32" in type_ else 8)
            require(f"a random input '{name}' of shape {tuple(dims)}", nbytes)
            if "int64" in type_:
                high = int(meta.get("vocab", 2)) if meta else 2
                feeds[name] = rng.integers(0, high, size=dims, dtype=np.int64)
            elif "int32" in type_:
                feeds[name] = rng.integers(0, 2, size=dims, dtype=np.int32)
            else:
                feeds[name] = rng.standard_normal(dims).astype(np.float32)
        return feeds

    def input_metadata(self) -> list[dict | None]:
        """archspec's per-input metadata (`archspec.inputs`, or `archspec.input` from exports that
        knew one input), checked: a malformed or implausible entry (an edited or hostile file) is an
        error here rather than a crash or a giant allocation later."""
        text = self.metadata.get("archspec.inputs")
        single = self.metadata.get("archspec.input")
        if not text and not single:
            return []
        try:
            metas = json.loads(text) if text else []
            ok = isinstance(metas, list)
            first = [json.loads(single)] if single else []  # kept for readers of one-input exports
            for meta in (metas if ok else []) + first:
                if meta is None:
                    continue
                dims = meta["dims"]
                ok = ok and isinstance(dims, list) and all(
                    isinstance(d, dict) and all(_count(d[k]) for k in ("nominal", "size") if k in d) for d in dims)
                ok = ok and _count(meta.get("vocab", 2))
        except (ValueError, TypeError, KeyError, RecursionError):
            ok = False
        if not ok:
            raise RunError("the model's archspec input metadata is malformed; pass --input FILE.npy")
        return metas or first

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
            meta = json.loads(self.metadata.get("archspec.input", "null") or "null")
            vocab = meta.get("vocab") if meta and name == meta.get("name") else None
            bad = np.flatnonzero((array < 0) | (array >= vocab)) if vocab else ()
            if len(bad):
                at = np.unravel_index(bad[0], array.shape)
                raise RunError(f"input '{name}' has token id {array[at]} at {tuple(map(int, at))}, outside the "
                               f"vocabulary 0..{vocab - 1}" + (f" ({len(bad)} such ids)" if len(bad) > 1 else ""))
        elif "float" in type_:
            array = array.astype(np.float32)
        return {name: array}


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 2**31 - 1


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
    labels: tuple[str, ...] | None = None  # class names of a classifier's output
    scores: frozenset[str] | None = None  # outputs that are class scores (from the export), None: unknown

    def summary(self, top: int = 5, samples: int = 4) -> str:
        import numpy as np

        lines = ["inputs: " + ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in self.inputs.items()),
                 f"ran on {self.device} ({', '.join(self.providers)}) in {self.seconds * 1e3:.2f} ms"]
        for name, y in self.outputs.items():
            lines.append(f"output '{name}': {'x'.join(map(str, y.shape))} {y.dtype}")
            is_scores = name in self.scores if self.scores is not None else y.ndim == 2
            if is_scores and y.ndim == 2 and y.shape[1] > 1 and np.issubdtype(y.dtype, np.floating):
                classes = y.shape[1]
                k = min(top, classes)
                labels = self.labels if self.labels and len(self.labels) == classes else None
                ranked = f"top {k} of {classes} classes" if k < classes else f"all {classes} classes"
                lines.append(f"  {ranked} by output value, per sample (class{' label' * bool(labels)}: value)")
                name_of = (lambda j: f"{j} {labels[j]}") if labels else str
                for i in range(min(samples, y.shape[0])):
                    idx = np.argsort(-y[i], kind="stable")[:k]
                    lines.append(f"  [{i}] " + "  ".join(f"{name_of(j)}: {y[i, j]:.4g}" for j in idx))
                if y.shape[0] > samples:
                    lines.append(f"  ... {y.shape[0] - samples} more")
            else:
                flat = y.reshape(-1)
                head = ", ".join(f"{v:.4g}" for v in flat[:8])
                lines.append(f"  min {flat.min():.4g}  max {flat.max():.4g}  mean {flat.mean():.4g}  "
                             f"first [{head}{', ...' if flat.size > 8 else ''}]")
        return "\n".join(lines)


def run_model(model: Any, inputs: Any = None, *, device: str = "cpu", batch: int = 1, threads: int | None = None,
              seed: int = 0, limits: Any = None, shapes: Mapping[str, tuple[int, ...]] | None = None,
              labels: str | os.PathLike | Sequence[str] | None = None) -> RunResult:
    """Runs an ONNX file (or a spec, exported to a temporary folder first) with onnxruntime.

    inputs: None for random inputs of the model's shape (`batch` samples; `shapes` sets an
    input's whole shape, for its dynamic axes), a numpy array or a .npy path for the first input
    (one sample or a batch), or a dict of arrays or .npy paths by input name.
    labels: class names (or a file of them, one per line) for the first output's top-k; by default
    those the spec names in `meta: {labels: ...}`, which exported models carry.
    """
    import numpy as np

    from .labels import check_count, read_labels

    if batch < 1:
        raise RunError(f"batch must be >= 1, got {batch}")
    if is_spec(model):
        from .api import check

        model = check(model, limits=limits)
        require(f"running '{model.graph.name}' at batch {batch}", needed(model, "run", batch))
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
    if isinstance(labels, (str, os.PathLike)):
        names: tuple[str, ...] | None = read_labels(labels)
        what = f"labels file {labels}"
    elif labels is not None:
        names, what = tuple(map(str, labels)), "the labels given"
    else:
        names = tuple(json.loads(session.metadata["archspec.labels"])) if "archspec.labels" in session.metadata else None
        what = "the model's labels"
    first = np.asarray(next(iter(outputs.values())))
    if names is not None and first.ndim == 2:
        check_count(names, first.shape[1], what)
    try:
        declared = json.loads(session.metadata.get("archspec.outputs", "null") or "null")
        scores = frozenset(o["name"] for o in declared if o.get("scores")) if declared is not None else None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise RunError("the model's archspec.outputs metadata is malformed") from None
    return RunResult({k: np.asarray(v) for k, v in outputs.items()}, {k: tuple(v.shape) for k, v in feeds.items()},
                     session.providers, session.device, seconds, session.notice, names, scores)


def _load_array(value: Any) -> "np.ndarray":
    """A user's array; a .npy file is read only after its header's claimed shape and dtype are
    checked against the bytes the file holds and the memory available."""
    import numpy as np

    if not isinstance(value, (str, os.PathLike)):
        return np.asarray(value)
    where = os.fspath(value)
    try:
        size = regular_file(where)
        with open(where, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version} is not supported")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh, max_header_size=10_000)
            body = size - fh.tell()
    except PathError as exc:
        raise RunError(f"cannot read input {exc}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise RunError(f"cannot read input {where} as a .npy array: {exc}") from None
    if dtype.hasobject:
        raise RunError(f"input {where} holds Python objects; archspec reads numeric arrays only")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != body:
        raise RunError(f"input {where} claims shape {shape} of {dtype} ({gigabytes(claimed)}), but holds "
                       f"{body:,} bytes after its header")
    require(f"input {where}", claimed)
    try:
        return np.load(where, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read input {where}: {exc}") from None


def is_spec(model: Any) -> bool:
    from .analyze import Report
    from .load import Document
    from .resolve.ir import Graph

    if isinstance(model, (Report, Graph, Document)):
        return True
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith((".yaml", ".yml"))


def _session_for_model(model: Any, device: str, threads: int | None, limits: Any) -> Session:
    if isinstance(model, Session):
        return model
    if is_spec(model):
        from .api import check
        from .exporter import export_model

        report = check(model, limits=limits)
        with tempfile.TemporaryDirectory(prefix="archspec-run-") as tmp:
            export_model(report, Path(tmp) / f"{report.graph.name}.onnx")
            return Session(Path(tmp) / f"{report.graph.name}.onnx", device=device, threads=threads)
    try:
        regular_file(model)
    except PathError as exc:
        if exc.missing:
            raise RunError(f"no such model file: {model}") from None
        raise RunError(f"cannot read model {exc}") from None
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

    @property
    def spread(self) -> float:
        """IQR relative to the median: how far one typical call may sit from another."""
        return self.iqr / self.median if self.median > 0 else math.inf


# A timing whose IQR exceeds this share of its median is too noisy to compare: pyperf warns when the
# standard deviation passes 10% of the mean, and for normal noise the IQR is 1.35 standard deviations.
NOISY_SPREAD = 0.135


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

    @property
    def speedup_range(self) -> tuple[float, float]:
        """The ratio's uncertainty, from the quartiles: slowest-typical torch over fastest-typical ORT
        and the reverse, so the interval holds every ratio of two typical calls."""
        return self.torch.q1 / self.ort.q3, self.torch.q3 / self.ort.q1

    @property
    def noisy(self) -> tuple[str, ...]:
        return tuple(name for name, t in (("torch eager", self.torch), ("onnxruntime", self.ort))
                     if t.spread > NOISY_SPREAD)


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
    from .exporter import example_inputs, export_model
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
            xs = tuple(torch.from_numpy(a) for a in
                       example_inputs(report, tuple((batch, *i.shape) for i in report.graph.inputs), seed=seed))
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
                                 session.device, f"emitted, opset {result.opset}", result.seconds, report.graph.input.shape))
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
            f"{_ratio(r)} | {r.throughput(r.torch):,.0f} | {r.throughput(r.ort):,.0f} | "
            f"{r.gflops(r.torch):.1f} | {r.gflops(r.ort):.1f} |")
    return "\n".join(lines)


def _ratio(r: BenchRow) -> str:
    """`2.13x (1.90-2.40)`, and `noisy` when a spread is too wide for the ratio to mean much."""
    low, high = r.speedup_range
    return f"{r.speedup:.2f}x ({low:.2f}-{high:.2f}){' noisy' if r.noisy else ''}"


def bench_notes(rows: Sequence[BenchRow]) -> list[str]:
    """What a reader must know before trusting the table: which timings are too spread out, and what to do."""
    notes = []
    for r in rows:
        for name in r.noisy:
            t = r.torch if name == "torch eager" else r.ort
            notes.append(f"{r.spec} batch {r.batch}: {name}'s spread is too wide to trust: IQR {t.iqr * 1e3:.3g} ms "
                         f"is {t.spread:.0%} of the median {t.median * 1e3:.3g} ms (trusted up to {NOISY_SPREAD:.1%})")
        low, high = r.speedup_range
        if low < 1 < high:
            notes.append(f"{r.spec} batch {r.batch}: neither is clearly faster (speedup {low:.2f}-{high:.2f})")
    if notes:
        notes.append("for steadier timings: --threads 1 (no contention between the two runtimes' pools), "
                     "more --rounds, and an otherwise idle machine")
    return notes


def _units(n: int) -> str:
    from .render import human_units

    return human_units(n)
