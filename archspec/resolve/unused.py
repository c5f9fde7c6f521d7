"""The warnings resolve attaches to a graph: inputs and values nothing reads."""

from __future__ import annotations

from ..errors import Diagnostic
from .ir import Graph


def unused(graph: Graph) -> tuple[Diagnostic, ...]:
    """Inputs nothing reads, and layers whose output nothing reads (dead code): warnings, not errors."""
    read = {v for n in graph.nodes for v in n.inputs} | {o.value for o in graph.outputs}
    out = []
    for i, inp in enumerate(graph.inputs):
        if i not in read:
            out.append(Diagnostic("AS401", f"input '{inp.name}' is never used", inp.loc, "",
                                  "read it with `from: " + inp.name + "` or remove it", severity="warning"))
    for n in graph.nodes:
        if not any(v in read for v in n.outputs):
            out.append(Diagnostic("AS402", f"the output of {n.kind} '{n.scope}' is never used", n.loc, n.source,
                                  "list it under `outputs:`, read it with `from:`, or remove it", n.calls,
                                  severity="warning"))
        elif len(n.outputs) > 1:  # a piece of a split nothing reads
            for v in n.outputs:
                if v not in read:
                    out.append(Diagnostic("AS402", f"'{graph.values[v].name}' of {n.kind} '{n.scope}' is never used",
                                          n.loc, n.source, "read it with `from:`, or leave it out of the split",
                                          n.calls, severity="warning"))
    return tuple(out)
