"""The surface tree: what the expander makes of the spec's sugar (blocks, `repeat`, `residual`,
branch `concat`/`add`, `group`, `when`) before the flattener turns it into the graph IR.

Private to resolve: no stage after it sees these records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import Loc
from ..layers import LayerParams
from ..load import Path
from .ir import CallChain


@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    kind: str
    params: LayerParams
    loc: Loc
    yaml_path: Path  # where the layer is written (inside its block definition, if any)
    calls: CallChain = ()
    refs: tuple[int, ...] | None = None  # `from:` tokens; None: the previous item's output
    token: int | None = None  # set when the item has a `name:` others may reference
    extra: tuple[int, ...] = ()  # tokens its parameters name (`reference_fields`), read after `refs`
    pieces: tuple[int, ...] = ()  # tokens of its several outputs (`output_names`), in order


@dataclass(frozen=True, slots=True)
class Sequence:
    name: str
    children: tuple[Tree, ...]
    loc: Loc
    label: str = "sequence"  # block name, "group", "branch", "repeat"
    refs: tuple[int, ...] | None = None
    token: int | None = None


@dataclass(frozen=True, slots=True)
class Parallel:
    name: str
    branches: tuple[Sequence, ...]
    merge: str  # a key of layers.MERGES
    loc: Loc
    label: str = "parallel"  # "concat", "add" or "residual"
    calls: CallChain = ()
    yaml_path: Path = ()
    inline: str | None = None  # the branch whose layers are direct children of this node (a residual body)
    then: tuple[Tree, ...] = ()  # applied after the merge, also direct children (the post-add relu)
    refs: tuple[int, ...] | None = None
    token: int | None = None


@dataclass(frozen=True, slots=True)
class Deferred:
    """An invocation of a block that reads `in` (its input's type): arguments bound, body not yet
    expanded. The flattener expands it when it reaches it, with its input's type known."""

    name: str
    block: str
    scope: Mapping[str, Any]  # the bound parameters and globals (never mutated)
    loc: Loc
    calls: CallChain
    stack: tuple[str, ...]
    nesting: int  # items open around the invocation, restored while its body is expanded
    label: str | None = None  # the container label `rename` gave it when it became a block's only child
    refs: tuple[int, ...] | None = None
    token: int | None = None


@dataclass(frozen=True, slots=True)
class Misread:
    """An item of a deferred block's body left out because it reads a size its input lacks (`in.features`
    of an image): its value is untyped, so that the typing flattener checks the layers that do not
    depend on it, one of which may refuse the input itself (`deferred`). Never in a returned graph."""

    name: str
    loc: Loc
    refs: tuple[int, ...] | None = None
    token: int | None = None


Tree = Layer | Sequence | Parallel | Deferred | Misread  # the surface tree, private to resolve


def piece_names(args: Any) -> list[str]:
    """The names a layer's parameters give its pieces (`as:`), as written, before validation."""
    names = args.get("as") if isinstance(args, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def rename(node: Tree, name: str, label: str | None = None) -> Tree:
    """A container with one child collapses into it: `inception3a.branch1`, not `inception3a.concat0.branch1`."""
    if label and not isinstance(node, (Layer, Misread)):
        return replace(node, name=name, label=label)
    return replace(node, name=name)

