"""`archspec run`: an ONNX file, or a spec exported on the fly, run once on given or random inputs,
its outputs summarised (a classifier's top-k by label)."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..files import PathError, regular_file
from ..memory import gigabytes, needed, require
from .session import RunError, Session, session_for

if TYPE_CHECKING:
    import numpy as np


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

    from ..labels import check_count, read_labels

    if batch < 1:
        raise RunError(f"batch must be >= 1, got {batch}")
    if is_spec(model):
        from ..api import check

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
    from ..analyze import Report
    from ..load import Document
    from ..resolve.ir import Graph

    if isinstance(model, (Report, Graph, Document)):
        return True
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith((".yaml", ".yml"))


def _session_for_model(model: Any, device: str, threads: int | None, limits: Any) -> Session:
    if isinstance(model, Session):
        return model
    if is_spec(model):
        from ..api import check
        from ..exporter import export_model

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
