"""The public Python API: load -> check (resolve + analyze) -> build -> export -> run.

`load` and `check` never import torch or onnx; `build`, `export` and `run` import them on use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any, Union

from .analyze import Report, analyze
from .errors import ArchspecError, MissingExtraError, SpecError, missing_extra
from .limits import Limits
from .load import Document, load_file, load_text
from .resolve import Graph, resolve

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
          limits: Limits | None = None) -> torch.nn.Module:
    """Compiles a spec into a trainable torch.nn.Module whose submodule names mirror the spec."""
    with _needs_torch("build"):
        from .lower import build_module

    return build_module(check(spec, limits=limits), device=device, dtype=dtype, seed=seed)


def export(spec: SpecLike, output: str | os.PathLike, **options: Any) -> Any:
    """Exports to ONNX and proves onnxruntime matches PyTorch; see `archspec.export_onnx.export_model`."""
    with _needs_torch("export"):
        from .export_onnx import export_model

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
