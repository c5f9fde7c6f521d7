"""A Triton Inference Server model repository from a spec: the verified ONNX export plus the
`config.pbtxt` that describes it, written as

    DIR/<name>/config.pbtxt
    DIR/<name>/<version>/model.onnx

The config is derived, never guessed: inputs and outputs (names, datatypes, shapes, -1 for a
symbolic axis) are read back from the exported file (`contract.py`); `max_batch_size` > 0 only
when the batch axis of every input and output is dynamic, and then `dims` leave it out, as Triton
requires (Triton docs, "Model Configuration": "Maximum Batch Size"). The text is written here, not
by protobuf, so the `triton` extra is needed only to validate it: when `tritonclient` is
installed, the written text is parsed into Triton's own `ModelConfig` message before it is kept.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contract import Contract, ContractError, Tensor, read_contract
from .errors import ArchspecError, install_hint
from .files import atomic_write_text

if TYPE_CHECKING:
    from .analyze import Report
    from .exporter import ExportResult

TRITON_DEVICES = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
DEFAULT_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 1000
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class TritonError(ArchspecError):
    """The repository cannot be written as asked."""


@dataclass(frozen=True)
class TritonConfig:
    """What goes into config.pbtxt."""

    contract: Contract
    max_batch_size: int  # 0: the model is not batched; its dims carry axis 0 themselves
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    device: str  # "cpu" or "gpu"
    instances: int
    versions_kept: int  # version_policy: latest N

    def text(self) -> str:
        c = self.contract
        lines = ["# written by archspec from the exported model; inputs and outputs as in model.onnx",
                 f"name: {_quote(c.name)}", 'platform: "onnxruntime_onnx"',
                 f"max_batch_size: {self.max_batch_size}",
                 f"version_policy: {{ latest: {{ num_versions: {self.versions_kept} }} }}"]
        for field, tensors in (("input", c.inputs), ("output", c.outputs)):
            lines.append(f"{field} [")
            entries = [f"  {{ name: {_quote(t.name)}, data_type: TYPE_{t.datatype}, dims: [ "
                       f"{', '.join(map(str, self.dims(t)))} ] }}" for t in tensors]
            lines.append(",\n".join(entries))
            lines.append("]")
        if self.max_batch_size > 0:
            lines.append("dynamic_batching {")
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, self.preferred_batch_sizes))} ]")
            lines.append(f"  max_queue_delay_microseconds: {self.max_queue_delay_us}")
            lines.append("}")
        lines.append(f"instance_group [ {{ count: {self.instances}, kind: {TRITON_DEVICES[self.device]} }} ]")
        return "\n".join(lines) + "\n"

    def dims(self, tensor: Tensor) -> tuple[int, ...]:
        """Triton's dims: without the batch axis when max_batch_size > 0; a scalar per sample is [ 1 ]
        with a reshape, which archspec models never need (every output has a feature axis)."""
        return tensor.sample_shape if self.max_batch_size > 0 else tensor.shape


@dataclass(frozen=True)
class TritonRepository:
    root: Path
    model_dir: Path  # root/<name>
    config_path: Path
    model_path: Path  # root/<name>/<version>/model.onnx
    config: TritonConfig
    export: "ExportResult"
    validated_with: str  # "tritonclient X.Y.Z" when the text was parsed into ModelConfig, else ""

    def summary(self) -> str:
        c = self.config
        lines = [self.export.summary(),
                 f"wrote Triton repository {self.root}: {self.config_path.relative_to(self.root)}, "
                 f"{self.model_path.relative_to(self.root)}",
                 f"  max_batch_size {c.max_batch_size}"
                 + (f", dynamic batching (preferred {list(c.preferred_batch_sizes)}, queue delay "
                    f"{c.max_queue_delay_us} us)" if c.max_batch_size else " (batch axis not dynamic)")
                 + f", instance group {c.instances} x {TRITON_DEVICES[c.device]}"]
        for kind, tensors in (("input", c.contract.inputs), ("output", c.contract.outputs)):
            lines += [f"  {kind} {t.name}: TYPE_{t.datatype} dims {list(c.dims(t))}" for t in tensors]
        lines.append(f"  config.pbtxt parsed into Triton's ModelConfig ({self.validated_with})" if self.validated_with
                     else f"  config.pbtxt NOT validated: {install_hint('triton')}")
        return "\n".join(lines)


def preferred_sizes(max_batch: int) -> tuple[int, ...]:
    """Powers of two from 2 up to max_batch, and max_batch itself: the sizes the queue waits for."""
    sizes = {max_batch} | {1 << k for k in range(1, max_batch.bit_length()) if 1 << k <= max_batch}
    return tuple(sorted(s for s in sizes if s > 1)) or (max_batch,)


def triton_config(contract: Contract, *, max_batch: int = DEFAULT_MAX_BATCH, device: str = "cpu",
                  instances: int = 1, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                  versions_kept: int = 1) -> TritonConfig:
    if device not in TRITON_DEVICES:
        raise TritonError(f"unknown Triton device {device!r}; choose one of {', '.join(TRITON_DEVICES)}")
    for what, value, low in (("max batch", max_batch, 1), ("instances", instances, 1),
                             ("queue delay", queue_delay_us, 0), ("versions kept", versions_kept, 1)):
        if value < low:
            raise TritonError(f"{what} must be >= {low}, got {value}")
    if not _MODEL_NAME.fullmatch(contract.name):
        raise TritonError(f"model name {contract.name!r} cannot name a Triton model folder; "
                          "use letters, digits, '_', '.', '-'")
    size = max_batch if contract.batched else 0
    return TritonConfig(contract, size, preferred_sizes(max_batch) if size else (), queue_delay_us, device,
                        instances, versions_kept)


def write_repository(report: "Report", root: str | os.PathLike, *, version: int = 1, max_batch: int = DEFAULT_MAX_BATCH,
                     device: str = "cpu", instances: int = 1, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                     **export_options: Any) -> TritonRepository:
    """Exports (and verifies) the spec into root/<name>/<version>/model.onnx, then writes
    root/<name>/config.pbtxt from the exported file. Other versions already there are kept."""
    from .exporter import export_model

    if version < 1:
        raise TritonError(f"Triton model versions are positive integers, got {version}")
    name = report.graph.name
    if not _MODEL_NAME.fullmatch(name):
        raise TritonError(f"spec name {name!r} cannot name a Triton model folder; use letters, digits, '_', '.', '-'")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise TritonError(f"{root} exists and is not a folder")
    if not root.exists() and not root.parent.is_dir():
        raise TritonError(f"cannot write {root}: folder {root.parent} does not exist")
    model_dir = root / name
    version_dir = model_dir / str(version)
    made = [d for d in (root, model_dir, version_dir) if not d.exists()]
    for d in made:
        d.mkdir()
    try:
        result = export_model(report, version_dir / "model.onnx", **export_options)
    except BaseException:
        for d in reversed(made):  # leave no empty folders behind a failed export
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    try:
        contract = read_contract(result.path, name)
    except ContractError as exc:
        raise TritonError(str(exc)) from None
    config = triton_config(contract, max_batch=max_batch, device=device, instances=instances,
                           queue_delay_us=queue_delay_us)
    text = config.text()
    validated = validate_config_text(text)
    atomic_write_text(model_dir / "config.pbtxt", text)
    return TritonRepository(root, model_dir, model_dir / "config.pbtxt", result.path, config, result, validated)


def validate_config_text(text: str) -> str:
    """Parses config.pbtxt into Triton's ModelConfig when tritonclient is installed; returns
    "tritonclient <version>" then, "" when it is not installed. A parse error is a bug here."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return ""
    from importlib.metadata import version

    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise TritonError(f"internal error: the generated config.pbtxt does not parse into ModelConfig: {exc}") \
            from None
    return f"tritonclient {version('tritonclient')}"


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    if any(ord(c) < 0x20 for c in text):
        raise TritonError(f"name {text!r} contains control characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
