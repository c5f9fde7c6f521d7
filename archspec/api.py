"""The public Python API: load -> check (resolve + analyze) -> build -> export -> run.

`load` and `check` never import torch or onnx; `build`, `export` and `run` import them on use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any, Union

from .analyze import Report, analyze
from .errors import MissingExtraError, SpecError, missing_extra
from .limits import Limits
from .load import Document, load_file, load_text
from .resolve import resolve
from .resolve.ir import Graph

if TYPE_CHECKING:
    import torch

__all__ = ["build", "check", "export", "load", "load_text", "run"]

SpecLike = Union[str, os.PathLike, Document, Graph, Report]


def load(spec: str | os.PathLike, *, limits: Limits | None = None) -> Document:
    """Reads a spec file. A string is always a path, never YAML text: use `load_text` for text."""
    return load_file(spec, limits)


def check(spec: SpecLike, *, limits: Limits | None = None, input_shape: tuple[int, ...] | None = None) -> Report:
    """Validates, resolves and analyses a spec; raises SpecError listing every problem."""
    if isinstance(spec, Report) and input_shape is None:
        return spec
    if isinstance(spec, Report):
        spec = spec.graph
    if isinstance(spec, Graph):
        if input_shape is None:
            return analyze(spec, limits)
        spec = spec.doc
    doc = spec if isinstance(spec, Document) else load(spec, limits=limits)
    try:
        return analyze(resolve(doc, limits, input_shape), limits)
    except SpecError as exc:
        exc.sources.setdefault(doc.file, doc.text)  # printed under each diagnostic, never read again
        raise


def build(spec: SpecLike, *, device: Any = None, dtype: Any = None, seed: int | None = None,
          limits: Limits | None = None, weights: str | os.PathLike | Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Compiles a spec into a trainable torch.nn.Module whose submodule names mirror the spec.
    weights: a `.safetensors`/state-dict/`.npz` file or a mapping of arrays under the spec's keys
    (e.g. `load_weights(spec, "resnet18.pth")`), loaded strictly."""
    with _needs_torch("build"):
        from .lower import build_module

    module = build_module(check(spec, limits=limits), device=device, dtype=dtype, seed=seed)
    if weights is not None:
        from .weights import load_into

        load_into(module, weights)
    return module


def load_weights(spec: SpecLike, checkpoint: str | os.PathLike, *, mapping: str | os.PathLike | None = None,
                 limits: Limits | None = None) -> dict[str, Any]:
    """A torchvision/timm-style checkpoint mapped onto the spec's keys (numpy arrays, spec order),
    structurally and with shapes checked; refuses (WeightsError) anything ambiguous.
    mapping: a YAML file stating the correspondence for the hard cases (see `archspec.weights`)."""
    with _needs_torch("load_weights"):
        from .weights import import_checkpoint, read_map

        return import_checkpoint(check(spec, limits=limits), checkpoint,
                                 read_map(mapping) if mapping is not None else None).tensors


def save_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Writes a module's state dict as `.safetensors` (with the spec's hash for archspec modules)."""
    with _needs_torch("save_weights"):
        from .weights import save_weights as save

        save(module, path)


def export(spec: SpecLike, output: str | os.PathLike, **options: Any) -> Any:
    """Exports to ONNX and proves onnxruntime matches PyTorch; see `archspec.exporter.export_model`."""
    with _needs_torch("export"):
        from .exporter import export_model

    return export_model(check(spec, limits=options.pop("limits", None)), FsPath(output), **options)


def run(model: str | os.PathLike, inputs: Any = None, **options: Any) -> Any:
    """Runs an exported model (or a spec, exported on the fly) with onnxruntime."""
    with _needs_torch("run"):
        from .runtime import run_model

    return run_model(model, inputs, **options)


@contextmanager
def _needs_torch(what: str) -> Iterator[None]:
    """The checker installs without torch; say how to get it instead of a bare ImportError."""
    try:
        yield
    except ImportError as exc:
        message = missing_extra(exc, f"`{what}`")
        if message is None:
            raise
        raise MissingExtraError(message) from None
