"""Stage 5, lower: the analysed graph -> a torch.nn.Module whose hierarchy mirrors the spec.

Each layer is built by its kind's own `lower` rule with the shapes the checker proved, so no
dummy forward pass is ever needed; containers become `nn.Sequential`/`Parallel` named after the
spec. With device="meta" nothing is allocated (VGG-19's 575 MB of weights included).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .analyze import NodeReport, Report
from .errors import InternalError
from .files import atomic_write, check_output
from .memory import MemoryLimitError, gigabytes, needed, require
from .layers import MERGES, REGISTRY
from .nn import Network
from .nn import Parallel as TorchParallel
from .resolve import Layer, Node, Sequence


def build_module(report: Report, *, device: Any = None, dtype: Any = None, seed: int | None = None) -> Network:
    graph = report.graph
    if str(device or "cpu") != "meta":
        require(f"building '{graph.name}'", needed(report, "build"))
    shapes = {n.path: n for n in report.nodes}
    init = graph.spec.init
    target = torch.device(device or "cpu")
    # A seed must give the same weights on every machine: draw them from the CPU generator, then
    # move them (each CUDA device has its own generator and its own random streams).
    place = torch.device("cpu") if seed is not None and target.type != "meta" else target
    with torch.random.fork_rng(devices=[]), place:
        if seed is not None:
            torch.manual_seed(seed)
        lowerer = _Lowerer(shapes, init.scheme, init.zero_init_residual)
        net = Network(lowerer.children(graph.root.children, ""), name=graph.name, input_name=graph.input.name, sha256=graph.sha256)
    if place != target:
        net = net.to(target)
    if dtype is not None:
        net = net.to(dtype=dtype)
    return net


class _Lowerer:
    def __init__(self, shapes: dict[str, NodeReport], scheme: str, zero_init_residual: bool):
        self.shapes, self.scheme, self.zero_init_residual = shapes, scheme, zero_init_residual

    def node(self, node: Node, path: str) -> nn.Module:
        if isinstance(node, Layer):
            return self.layer(node, path)
        if isinstance(node, Sequence):
            return nn.Sequential(self.children(node.children, path))
        branches, shapes = [], []
        for b in node.branches:
            inline = b.name == node.inline
            branches.append((b.name, self.children(b.children, path if inline else f"{path}.{b.name}"), inline))
            last = f"{path}.{b.children[-1].name}" if inline and b.children else f"{path}.{b.name}"
            shapes.append(self.shapes[last].output.shape if inline and b.children else
                          self.shapes[path].input.shape if inline else self.shapes[last].output.shape)
        merge = MERGES[node.merge].lower(shapes)
        module = TorchParallel(branches, merge, self.children(node.then, path))
        if self.zero_init_residual and node.label == "residual":
            body = node.branches[0]
            self.zero_last_layer(body.children, module if body.name == node.inline else module.get_submodule(body.name))
        return module

    def children(self, nodes: tuple[Node, ...], path: str) -> OrderedDict[str, nn.Module]:
        return OrderedDict((c.name, self.node(c, f"{path}.{c.name}" if path else c.name)) for c in nodes)

    def layer(self, node: Layer, path: str) -> nn.Module:
        report = self.shapes[path]
        kind = REGISTRY[node.kind]
        try:
            module = kind.lower(node.params, report.input.shape, report.output.shape)
            kind.init(module, node.params, self.scheme)
        except (MemoryError, torch.OutOfMemoryError) as exc:  # the machine's limit, not a bug
            raise MemoryLimitError(f"building {node.kind} '{path}' ({node.loc}) ran out of memory; its parameters "
                                   f"alone need {gigabytes(report.params * 4)}") from exc
        except RuntimeError as exc:
            if "allocate" not in str(exc):  # "DefaultCPUAllocator: can't allocate memory"
                raise InternalError(f"lowering {node.kind} '{path}' ({node.loc}) failed: {exc}; "
                                    "please report this with the spec") from exc
            raise MemoryLimitError(f"building {node.kind} '{path}' ({node.loc}) ran out of memory; its parameters "
                                   f"alone need {gigabytes(report.params * 4)}") from exc
        except Exception as exc:  # our bug, not the user's: say which layer
            raise InternalError(f"lowering {node.kind} '{path}' ({node.loc}) failed: {type(exc).__name__}: {exc}; "
                                "please report this with the spec") from exc
        return module

    def zero_last_layer(self, children: tuple[Node, ...], module: nn.Module) -> bool:
        """Zero-init the residual body's last normalisation (Goyal et al. 2017), so each block starts as
        the identity; looks inside blocks the body ends with."""
        for child in reversed(children):
            sub = module.get_submodule(child.name)
            if isinstance(child, Layer) and REGISTRY[child.kind].init(sub, child.params, "zero"):
                return True
            if isinstance(child, Sequence) and self.zero_last_layer(child.children, sub):
                return True
        return False


def save_state(module: nn.Module, report: Report, path: Path, inputs: tuple[str, ...] = ()) -> None:
    """A plain `torch.save(module.state_dict())`, what a training loop writes, plus `<path>.json`
    with the spec's hash so export can tell which spec the weights belong to. Atomic."""
    meta = {"spec": report.graph.name, "spec_sha256": report.graph.sha256, "params": report.totals.params}
    inputs = (*inputs, report.graph.doc.file)
    sidecar = Path(str(path) + ".json")
    check_output(sidecar, inputs=inputs)  # both refused before either is written
    atomic_write(path, lambda fh: torch.save(module.state_dict(), fh), inputs=inputs)
    atomic_write(sidecar, lambda fh: fh.write(json.dumps(meta, indent=2).encode()), inputs=inputs)
