"""One onnxruntime session, created once and reused: graph optimisation ORT_ENABLE_ALL (Conv+BN
folding, Gemm+activation fusion, NCHWc layouts), intra-op threads = the physical cores this
process may use. Devices: "cpu"; "cuda" (strict: an error when onnxruntime cannot run on CUDA,
because onnxruntime itself silently falls back to the CPU); "auto" (CUDA when it works, else the
CPU with a notice). The exporter's verification runs its files here too.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import ArchspecError, install_hint
from ..memory import require

# onnxruntime writes a device id and a telemetry database under ~/.cache/Microsoft/DeveloperTools
# when it is first loaded, unless this is set before it loads; a user who wants that sets
# ORT_DISABLE_TELEMETRY=0 (docs/api.md).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

if TYPE_CHECKING:
    import numpy as np

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
        # runs log fatal errors only: a failed run is reported once, by archspec, not also as onnxruntime's
        # coloured log line before it
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
            else:  # float16 for a `--dtype float16` export
                feeds[name] = rng.standard_normal(dims).astype(np.float16 if "float16" in type_ else np.float32)
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
            array = array.astype(np.float16 if "float16" in type_ else np.float32)
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
