"""The tensors an export writes, without torch: seeded numpy initial values of the spec's `init`
scheme, or values read from a file and checked strictly against the spec (`archspec.weights`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..analyze import Report
from ..layers import REGISTRY
from ..resolve.ir import Graph, Node
from ..weights.fit import node_types


def iter_layers(graph: Graph) -> Iterator[tuple[str, Node]]:
    """(module path, node) for every layer, in the module paths lowering gives them."""
    for node in graph.nodes:
        yield node.scope, node


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
        values = REGISTRY[node.kind].initial_n(node.params, *node_types(report, node),
                                               "zero" if i in zeroed else init.scheme, rng)
        state.update((f"{node.scope}.{k}", v) for k, v in values.items())
    return state
