"""The concrete tree `archspec eject` writes from: the graph IR walked beside the module
`archspec.build` makes, one Box per container in each use of a block, one Leaf per layer.

A layer is read back from its built module (its constructor's arguments from the module's
attributes), so the ejected model has `archspec.build`'s state-dict keys in the same order. The
form of each container follows its dataflow in the graph IR: a chain (each part reads the one
before) is an `nn.Sequential`; a residual, concat or add whose branches all read the container's
input is a parallel (`out = out + self.shortcut(x)`); anything else (several inputs or outputs,
`from:` references inside it) a graph, written as a straight-line forward, one line per part.
"""

from __future__ import annotations

import inspect
import keyword
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .. import nn as archspec_nn
from ..analyze import Report
from ..errors import InternalError, call_note
from ..expr import is_identifier
from ..lower import build_module
from ..resolve.ir import Node

_SKIP_ARGS = {"self", "device", "dtype"}
_HELPER_MODULES = ("archspec.nn", "archspec.nn_transformer", "archspec.nn_peephole")  # copied into the file
_SIZE_ARGS = ("in_channels", "in_features", "num_features", "input_size")
_NO = object()  # no default


@dataclass
class Leaf:
    name: str
    ctor: str  # nn.Conv2d, or a helper class copied into the file
    args: OrderedDict[str, Any]  # constructor arguments that differ from their defaults
    positional: int  # how many of them are written positionally (the required ones)
    defaults: dict[str, Any]  # the constructor's defaults, for a use that leaves one out
    node: Node
    written: dict[str, Any]  # the layer's parameters as the spec writes them


@dataclass
class Box:
    """A container: a class (`key` set: a block, or a residual/concat) or an inline nn.Sequential."""

    name: str
    key: str | None
    children: list[Any]  # Leaf | Box, in registration (state-dict) order
    role: dict[str, str] = field(default_factory=dict)  # child -> body | branch | then (parallels only)
    merge: tuple[Any, ...] = ()  # ("cat", dim) or ("add",) for a parallel
    inline: bool = False  # a parallel whose first branch (a residual body, maybe empty) runs in place
    when: dict[str, str] = field(default_factory=dict)  # child -> the `when:` condition written for it
    written: dict[str, Any] = field(default_factory=dict)  # a block's arguments as its invocation writes them
    cls: str = ""  # the class chosen for it
    call: list[tuple[str, Any]] = field(default_factory=list)  # its constructor arguments
    mode: str = "chain"  # chain (nn.Sequential), parallel (`_forward`) or graph (`_graph_forward`)
    wiring: tuple[Any, ...] = ()  # (inputs read, ((child, its inputs, outputs), ...), outputs): see _Tree.box
    inputs: tuple[str, ...] = ("x",)  # the forward's parameters
    branch: bool = False  # a branch of a parallel
    pieces: dict[str, tuple[str, ...]] = field(default_factory=dict)  # child with several outputs -> their names


def _ctor(module: nn.Module) -> tuple[str, OrderedDict[str, Any], int, dict[str, Any]]:
    """The constructor call that rebuilds `module`: named parameters of __init__ through the MRO,
    values read back from the module's attributes, defaults left out."""
    cls = type(module)
    name = f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn") else cls.__name__
    args: OrderedDict[str, Any] = OrderedDict()
    defaults: dict[str, Any] = {}
    required: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__ or klass is nn.Module:
            continue
        sig = inspect.signature(klass.__dict__["__init__"])
        variadic = False
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                variadic = True
                continue
            if p.name in _SKIP_ARGS or p.name in seen or p.name.startswith("_"):
                continue
            if p.name == "mode" and isinstance(module, nn.RNNBase):  # fixed by nn.LSTM/GRU/RNN themselves
                continue
            seen.add(p.name)
            if p.name == "bias" and not isinstance(getattr(module, "bias", None), bool):
                value = module.bias is not None
            elif hasattr(module, p.name):
                value = getattr(module, p.name)
            else:
                continue
            value = value if p.name == "pads" else _simple(value)  # F.pad needs the sequence, (2, 2) too
            if p.default is p.empty and p.kind == p.POSITIONAL_OR_KEYWORD:
                required.append((p.name, value))  # written positionally, first, in signature order
            elif p.default is p.empty:
                args[p.name] = value
            else:
                defaults[p.name] = _simple(p.default)
                if not _is_default(value, defaults[p.name]):
                    args[p.name] = value
        if not variadic:
            break
    return name, OrderedDict(required + list(args.items())), len(required), defaults


def _is_default(value: Any, default: Any) -> bool:
    """Conv1d's padding (0,) is its default 0: torch's _single/_pair repeat a scalar default."""
    if isinstance(value, tuple) and type(default) is int and value:
        return all(type(v) is int and v == default for v in value)
    return default == value and type(default) is type(value)


def _simple(value: Any) -> Any:
    """(3, 3) -> 3, as one writes a square kernel."""
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return value[0]
    return value


class _Tree:
    """Walks the graph IR beside the built module, into Leaf/Box trees: one Box per scope prefix
    (block, group, repeat, branch, residual, concat), its layers and sub-containers in node order,
    and how values flow between them (`Box.wiring`), from which the Box's form is chosen."""

    def __init__(self, report: Report):
        self.graph = report.graph
        self.blocks = set(report.graph.spec.blocks)
        self.module = build_module(report, device="meta")
        self.helpers: set[type] = set()
        self.paths: dict[Any, tuple[Any, ...]] | None = None  # source location -> YAML path
        self.scopes = {s.path: s for s in self.graph.scopes}
        self.kids: dict[str, list[tuple[str, Any]]] = {"": []}  # container -> ("node", index) | ("box", path)
        for i, node in enumerate(self.graph.nodes):
            parts = node.scope.split(".")
            for depth in range(1, len(parts)):
                self.open(".".join(parts[:depth]))
            parent = ".".join(parts[:-1])
            if parts[-1] == "merge" and parent in self.scopes:  # empty branches (identity shortcuts) go before it
                for s in self.graph.scopes:
                    if s.label == "branch" and s.path.rsplit(".", 1)[0] == parent:
                        self.open(s.path)
            self.kids[parent].append(("node", i))

    def open(self, path: str) -> None:
        if path not in self.kids:
            self.kids[path] = []
            self.kids[path.rsplit(".", 1)[0] if "." in path else ""].append(("box", path))

    def root(self) -> Box:
        return self.box("")

    def written(self, node: Node) -> dict[str, Any]:
        data: Any = self.graph.doc.data
        try:
            for part in node.yaml_path:
                data = data[part]
        except (KeyError, IndexError, TypeError):
            return {}
        return data if isinstance(data, dict) else {}

    def invocation(self, path: str, block: str) -> dict[str, Any]:
        """The arguments written where a block is used (`{bottleneck: {width: width, ...}}`): the
        invocation's location is in the call chain of the block's layers."""
        if self.paths is None:
            self.paths = {}
            for ypath, loc in self.graph.doc.value_locs.items():
                if loc not in self.paths or len(ypath) < len(self.paths[loc]):
                    self.paths[loc] = ypath
        first = next((n for n in self.graph.nodes if n.scope.startswith(path + ".")), None)
        loc = next((where for note, where in (first.calls if first else ()) if note == call_note(block)),
                   self.scopes[path].loc if path in self.scopes else None)
        data: Any = self.graph.doc.data
        for part in self.paths.get(loc, ("-",)):
            data = data.get(part) if isinstance(data, dict) else data[part] if isinstance(data, list) else None
        args = data.get(block) if isinstance(data, dict) else None
        return args if isinstance(args, dict) else {}

    def when(self, node: Node) -> str:
        cond = self.written(node).get("when")
        return cond if isinstance(cond, str) and is_identifier(cond) else ""

    def nodes_in(self, path: str) -> list[int]:
        out: list[int] = []
        for what, ref in self.kids[path]:
            out += [ref] if what == "node" else self.nodes_in(ref)
        return out

    def ends(self, path: str) -> tuple[list[int], list[int]]:
        """The values a container reads from outside (in order of first use) and those it gives:
        the model's inputs and outputs for the network, else its last layer's output."""
        nodes = self.nodes_in(path)
        if not path:
            return list(range(len(self.graph.inputs))), [o.value for o in self.graph.outputs]
        made = {v for i in nodes for v in self.graph.nodes[i].outputs}
        reads = list(dict.fromkeys(v for i in nodes for v in self.graph.nodes[i].inputs if v not in made))
        return reads, list(self.graph.nodes[nodes[-1]].outputs) if nodes else []

    def box(self, path: str) -> Box:
        name = path.rsplit(".", 1)[-1] if path else self.graph.name
        module = self.module.get_submodule(path) if path and self.nodes_in(path) else self.module
        label = self.scopes[path].label if path in self.scopes else "network"
        key = "network" if not path else label if label in self.blocks else None
        box = Box(name, key, [], written=self.invocation(path, label) if key and path else {})
        reads, gives = self.ends(path)
        local: dict[int, Any] = {v: ("in", k) for k, v in enumerate(reads)}
        steps: list[tuple[str, tuple[Any, ...], int]] = []
        merge_at = None
        for what, ref in self.kids[path]:
            at = len(box.children)
            if what == "node":
                node = self.graph.nodes[ref]
                sub = module.get_submodule(node.name)
                ctor, args, positional, defaults = _ctor(sub)
                written = self.written(node).get(node.kind)
                child: Leaf | Box = Leaf(node.name, ctor, args, positional, defaults, node,
                                         written if isinstance(written, dict) else {})
                if self.when(node):
                    box.when[node.name] = self.when(node)
                ins, outs = node.inputs, node.outputs
                if len(outs) > 1:  # a split's pieces, named as the spec names them (`as:`)
                    box.pieces[node.name] = tuple(self.graph.values[v].name.rsplit(".", 1)[-1] for v in outs)
                if isinstance(sub, (archspec_nn.Concat, archspec_nn.Add)) and node.name == "merge":
                    merge_at = at
                    box.merge = ("cat", sub.dim) if isinstance(sub, archspec_nn.Concat) else ("add",)
            else:
                child = self.box(ref)
                child.branch = self.scopes[ref].label == "branch" if ref in self.scopes else False
                ins, outs = tuple(self.ends(ref)[0]), tuple(self.ends(ref)[1])
            box.children.append(child)
            steps.append((child.name, tuple(local.get(v, ("?", v)) for v in ins), len(outs)))
            for j, v in enumerate(outs):
                local[v] = at if len(outs) == 1 else (at, j)
        result = tuple(local.get(v, ("?", v)) for v in gives) if gives else (("in", 0),) if reads else ()
        box.wiring = (len(reads), tuple(steps), result)
        if any(isinstance(r, tuple) and r[0] == "?" for r in (*result, *(r for _, ins, _ in steps for r in ins))):
            raise InternalError(f"eject: a layer in '{path or self.graph.name}' reads a value private to another "
                                "container, which resolve does not allow; please report this with the spec")
        if path:
            box.inputs = ("x",) if len(reads) == 1 else tuple(f"x{k}" for k in range(len(reads)))
        else:
            box.inputs = tuple(_ident(i.name) for i in self.graph.inputs)
        box.mode = "chain" if _is_chain(box.wiring) else "graph"
        if merge_at is not None and self.parallel(box, merge_at):
            box.mode = "parallel"
            del box.children[merge_at]
            key = key or label
        else:
            box.merge = ()
        if box.mode == "graph":
            key = key or label
        for c in box.children:  # the helper classes the file must define (a merge written in place needs none)
            if isinstance(c, Leaf) and type(self.module.get_submodule(c.node.scope)).__module__ in _HELPER_MODULES:
                self.helpers.add(type(self.module.get_submodule(c.node.scope)))
        box.key = key
        return box

    @staticmethod
    def parallel(box: Box, m: int) -> bool:
        """Body layers in place (a residual's), branches beside them from the same input, merged,
        then `then` layers: the form `_forward` writes; roles set on the box when it holds."""
        reads, steps, result = box.wiring
        if reads != 1 or any(n != 1 for i, (_, _, n) in enumerate(steps) if not _empty(box.children[i])):
            return False
        branches = [i for i in range(m) if isinstance(box.children[i], Box) and box.children[i].branch]
        body = [i for i in range(m) if i not in branches]
        if body and max(body) > min(branches or [m]):
            return False
        prev: Any = ("in", 0)
        for i in body:
            if steps[i][1] != (prev,):
                return False
            prev = i
        ends = []
        for i in branches:
            if steps[i][1] not in ((("in", 0),), ()):
                return False
            ends.append(i if box.children[i].children else ("in", 0))
        inline = len(steps[m][1]) == len(branches) + 1
        if steps[m][1] != tuple(([prev] if inline else []) + ends) or (body and not inline):
            return False
        prev = m
        for i in range(m + 1, len(steps)):
            if steps[i][1] != (prev,):
                return False
            prev = i
        if result != (prev,):
            return False
        box.inline = inline
        for i in range(len(steps)):
            box.role[box.children[i].name] = "body" if i in body else "branch" if i in branches else "then"
        return True


def _empty(child: Leaf | Box) -> bool:
    return isinstance(child, Box) and not child.children


def _is_chain(wiring: tuple[Any, ...]) -> bool:
    """Each part reads the one before it (the first the one input), the last gives the output."""
    reads, steps, result = wiring
    if not reads and not steps:
        return True  # an empty branch: the identity
    if reads != 1 or any(n != 1 for _, _, n in steps):
        return False
    prev: Any = ("in", 0)
    for i, (_, ins, _) in enumerate(steps):
        if ins != (prev,):
            return False
        prev = i
    return result == (prev,)


def _ident(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    # keywords, the file's own names, and E741's ambiguous l, O, I (a paper's k, l, m, n)
    return f"{name}_" if keyword.iskeyword(name) or name in ("self", "nn", "torch", "F", "x", "l", "O", "I") else name


def _unique(name: str, taken: dict[str, Any]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}{k}", k + 1
    return out
