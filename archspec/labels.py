"""Class names for a classifier's outputs: a spec's `meta: {labels: [...]}` or `labels: FILE` (one
name per line, relative to the spec), carried into exported models so `archspec run` names its top-k."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ArchspecError

MAX_LABELS_BYTES = 16 << 20  # a labels file is names, not data


def read_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """One class name per line; blank lines are skipped, so a trailing newline does not count."""
    try:
        if os.path.getsize(path) > MAX_LABELS_BYTES:
            raise ArchspecError(f"labels file {path} is larger than {MAX_LABELS_BYTES:,} bytes")
        with open(path, encoding="utf-8") as fh:
            return tuple(line.strip() for line in fh if line.strip())
    except OSError as exc:
        raise ArchspecError(f"cannot read labels file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ArchspecError(f"labels file {path} is not UTF-8 text") from None


def spec_labels(report: Any) -> tuple[str, ...] | None:
    """The spec's class names, checked against the number of outputs of its last axis."""
    meta = report.graph.spec.meta
    if meta is None or meta.labels is None:
        return None
    if isinstance(meta.labels, str):
        labels = read_labels(Path(report.graph.doc.file).parent / meta.labels)
    else:
        labels = tuple(meta.labels)
    check_count(labels, report.output.shape[-1], f"spec '{report.graph.name}'")
    return labels


def check_count(labels: tuple[str, ...], classes: int, what: str) -> None:
    if len(labels) != classes:
        raise ArchspecError(f"{what} names {len(labels)} classes but its output has {classes}")
