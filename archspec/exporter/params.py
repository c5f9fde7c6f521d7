"""The tensors an export writes, without torch: what each layer holds (its kind's `tensors`, named
as the lowered module's state dict), seeded numpy initial values of the spec's `init` scheme, or
values read from a file, checked strictly against the spec."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..analyze import Report
from ..layers import REGISTRY, TensorType
from ..resolve.ir import Graph, Node
from ..weights import WeightsError, fit_problems


def iter_layers(graph: Graph) -> Iterator[tuple[str, Node]]:
    """(module path, node) for every layer, in the module paths lowering gives them."""
    for node in graph.nodes:
        yield node.scope, node


def _types(report: Report, node: Node) -> tuple[tuple[TensorType, ...], tuple[TensorType, ...]]:
    return tuple(report.types[v] for v in node.inputs), tuple(report.types[v] for v in node.outputs)


def expected_tensors(report: Report) -> dict[str, tuple[tuple[int, ...], str]]:
    """State-dict name -> (shape, dtype) of every tensor the spec's module holds."""
    out = {}
    for node in report.graph.nodes:
        for local, spec in REGISTRY[node.kind].tensors_n(node.params, *_types(report, node)).items():
            out[f"{node.scope}.{local}"] = spec
    return out


def initial_state(report: Report, seed: int = 0) -> dict[str, Any]:
    """Seeded initial values (numpy.random.default_rng(seed), layers in graph order) from the
    distributions of the spec's `init.scheme`; with `zero_init_residual` the last normalisation of
    each residual body starts at zero (Goyal et al. 2017), as `archspec.build` does."""
    import numpy as np

    rng = np.random.default_rng(seed)
    graph, init = report.graph, report.graph.spec.init
    zeroed = set()
    if init.zero_init_residual:
        for scope in graph.scopes:
            last = next((i for i in reversed(scope.zero_init) if REGISTRY[graph.nodes[i].kind].zero_init), None)
            if last is not None:
                zeroed.add(last)
    state = {}
    for i, node in enumerate(graph.nodes):
        values = REGISTRY[node.kind].initial_n(node.params, *_types(report, node),
                                               "zero" if i in zeroed else init.scheme, rng)
        state.update((f"{node.scope}.{k}", v) for k, v in values.items())
    return state


def check_weights(state: Mapping[str, Any], expected: Mapping[str, tuple[tuple[int, ...], str]], spec: str,
                  where: str) -> dict[str, Any]:
    """Strict, as `archspec.weights.load_into`: every key present, none extra, shapes equal, values
    finite, floats where floats belong and within float32's range; otherwise a WeightsError naming
    every offending tensor. Returns contiguous arrays of the expected dtypes."""
    import numpy as np

    problems = fit_problems({k: shape for k, (shape, _) in expected.items()}, state)
    if problems:
        raise WeightsError(f"weights {where} do not fit the module built from spec '{spec}': " + "; ".join(problems))
    typed = [f"{k} ({state[k].dtype}, spec {dtype})" for k, (_, dtype) in expected.items()
             if np.iscomplexobj(state[k]) or np.issubdtype(state[k].dtype, np.floating) != (dtype != "int64")]
    if typed:  # a cast would be silent: complex to real, integers to floats
        raise WeightsError(f"weights {where} have tensors of the wrong type: {', '.join(typed)}")
    limit = float(np.finfo(np.float32).max)
    overflow = [k for k, (_, dtype) in expected.items()
                if dtype == "float32" and state[k].size and float(np.abs(state[k]).max()) > limit]
    if overflow:
        raise WeightsError(f"weights {where} hold values beyond float32's range (+-{limit:.3g}) in: {', '.join(overflow)}")
    return {k: np.ascontiguousarray(state[k], dtype=expected[k][1]) for k in expected}
