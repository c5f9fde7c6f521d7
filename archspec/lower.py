"""Stage 5, lower: the analysed graph IR -> one torch.nn.Module (`archspec.nn.Network`).

Each layer is built by its kind's own `lower_n` rule with the types the checker proved, so no
dummy forward pass is ever needed, and registered at its scope, so module paths and `state_dict`
keys come straight from the spec. Modules are created in node order, which fixes the random
stream a seed gives. With device="meta" nothing is allocated (VGG-19's 575 MB of weights included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .analyze import Report
from .errors import InternalError
from .files import atomic_write, check_output
from .layers import REGISTRY
from .memory import MemoryLimitError, gigabytes, needed, require
from .nn import Network


def build_module(report: Report, *, device: Any = None, dtype: Any = None, seed: int | None = None) -> Network:
    """With a seed, the initial values are `exporter.initial_state(report, seed)` (seeded numpy, the
    spec's init scheme): the very tensors an export without weights writes, with or without torch.
    Without a seed, PyTorch's own initialisation from its global generator."""
    graph = report.graph
    if str(device or "cpu") != "meta":
        require(f"building '{graph.name}'", needed(report, "build"))
    init = graph.spec.init
    target = torch.device(device or "cpu")
    # With a seed, the module is built on the meta device and takes the seeded numpy values (the
    # same on every machine and device), then moves to the target.
    seeded = seed is not None and target.type != "meta"
    with torch.random.fork_rng(devices=[]), torch.device("meta") if seeded else target:
        net = Network(name=graph.name, input_names=tuple(i.name for i in graph.inputs),
                      output_names=tuple(o.name for o in graph.outputs), sha256=graph.sha256,
                      values=len(graph.values), outputs=tuple(o.value for o in graph.outputs))
        modules = []
        for node in graph.nodes:
            module = _layer(report, node, init.scheme)
            net.add_step(node.scope, module, node.inputs, node.outputs)
            modules.append(module)
        if init.zero_init_residual and not seeded:
            for scope in graph.scopes:
                _zero_last_norm(graph, scope.zero_init, modules)
    if seeded:
        from .exporter.params import initial_state

        state = initial_state(report, seed)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True)
        if target.type != "cpu":
            net = net.to(target)
    if dtype is not None:
        net = net.to(dtype=dtype)
    return net


def _layer(report: Report, node: Any, scheme: str) -> nn.Module:
    kind = REGISTRY[node.kind]
    xs = tuple(report.types[v] for v in node.inputs)
    ys = tuple(report.types[v] for v in node.outputs)
    try:
        module = kind.lower_n(node.params, xs, ys)
        kind.init(module, node.params, scheme)
    except (MemoryError, torch.OutOfMemoryError) as exc:  # the machine's limit, not a bug
        raise _out_of_memory(report, node) from exc
    except RuntimeError as exc:
        if "allocate" not in str(exc):  # "DefaultCPUAllocator: can't allocate memory"
            raise InternalError(f"lowering {node.kind} '{node.scope}' ({node.loc}) failed: {exc}; "
                                "please report this with the spec") from exc
        raise _out_of_memory(report, node) from exc
    except Exception as exc:  # our bug, not the user's: say which layer
        raise InternalError(f"lowering {node.kind} '{node.scope}' ({node.loc}) failed: {type(exc).__name__}: {exc}; "
                            "please report this with the spec") from exc
    return module


def _out_of_memory(report: Report, node: Any) -> MemoryLimitError:
    return MemoryLimitError(f"building {node.kind} '{node.scope}' ({node.loc}) ran out of memory; its parameters "
                            f"alone need {gigabytes(report.node(node.scope).params * 4)}")


def _zero_last_norm(graph: Any, candidates: tuple[int, ...], modules: list[nn.Module]) -> None:
    """Zero-init a residual body's last normalisation (Goyal et al. 2017), so each block starts as
    the identity; the candidates include the layers of blocks the body ends with."""
    for i in reversed(candidates):
        node = graph.nodes[i]
        if REGISTRY[node.kind].init(modules[i], node.params, "zero"):
            return


def save_state(module: nn.Module, report: Report, path: Path, inputs: tuple[str, ...] = ()) -> None:
    """A plain `torch.save(module.state_dict())`, what a training loop writes, plus `<path>.json`
    with the spec's hash so export can tell which spec the weights belong to. Atomic."""
    meta = {"spec": report.graph.name, "spec_sha256": report.graph.sha256, "params": report.totals.params}
    inputs = (*inputs, report.graph.doc.file)
    sidecar = Path(str(path) + ".json")
    check_output(sidecar, inputs=inputs)  # both refused before either is written
    atomic_write(path, lambda fh: torch.save(module.state_dict(), fh), inputs=inputs)
    atomic_write(sidecar, lambda fh: fh.write(json.dumps(meta, indent=2).encode()), inputs=inputs)
