"""Stage 3, resolve: expand the spec into the graph IR, one flat, topologically ordered dataflow graph.

The v1 constructs (blocks, `repeat`, `residual`, branch `concat`/`add`, `group`, `when`) are sugar.
The package, in the order resolve runs it:

- `expand`: the expander, which validates items, evaluates parameters and turns the sugar into the
  surface tree (`tree`), binding names through `names`;
- `flatten`: the one walker from the surface tree to the IR (`ir`), which names every scope;
- `deferred`: blocks that read `in` (their input's type), expanded during the walk by a flattener
  that types values with the registry's shape rules;
- `unused`: the warnings about inputs and layers nothing reads.

resolve returns one complete graph of plain numbers; every later stage reads only `ir`.
"""

from __future__ import annotations

from ..limits import Limits
from ..load import Document
from ..schema import validate_spec
from .expand import Resolver
from .ir import Graph


def resolve(doc: Document, limits: Limits | None = None, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Validates and expands a loaded document; raises SpecError with every problem found."""
    spec = validate_spec(doc)
    return Resolver(doc, spec, limits or Limits()).run(input_shape)
