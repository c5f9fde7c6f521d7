"""`archspec eject`: the compiled network as standalone, readable PyTorch source.

One class per spec block (and per kind of residual/concat written outside a block), the network
as a class, loops for repeated blocks; the file imports only torch (and `math`, for the attention's
scale and the peephole LSTM's init; `collections.namedtuple`, for several outputs). Constructor arguments are
found by generalising over every place a block is used: a value that differs between uses, or
that the spec writes as a block parameter, becomes an argument named after that parameter; a
value the spec writes as an expression of parameters (`channels * 4`) is written as that
expression; a value that never changes stays a literal. Layers are written from the module the
kind's own `lower` rule builds (its constructor's arguments read back from the module), so the
ejected model has `archspec.build`'s state-dict keys, in the same order, and its outputs.

The form of each container follows its dataflow in the graph IR: a chain (each part reads the one
before) is an `nn.Sequential`; a residual, concat or add whose branches all read the container's
input gets the forward those constructs read as (`out = out + self.shortcut(x)`); anything else
(several inputs or outputs, `from:` references inside it) gets a correct straight-line forward,
one line per part, rather than a failure. Loops are written only in `nn.Sequential`s.
"""

from __future__ import annotations

import inspect
import keyword
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from . import nn as archspec_nn
from .analyze import Report
from .errors import InternalError, call_note
from .expr import ExprError, evaluate, is_identifier, looks_like_expression
from .lower import build_module
from .resolve.ir import Node

_SKIP_ARGS = {"self", "device", "dtype"}
_HELPER_MODULES = ("archspec.nn", "archspec.nn_transformer", "archspec.nn_peephole")  # copied into the file
_SIZE_ARGS = ("in_channels", "in_features", "num_features", "input_size")
_NO = object()  # no default


# -- the concrete tree: one per use of a block --------------------------------------------------

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


# -- generalising the uses of one class ---------------------------------------------------------

class _NotGeneral(Exception):
    """The uses of a block differ in structure; they get one class each kind of structure."""


@dataclass
class _Slot:
    """One value in a class's source, across its uses (None where a use does not reach it)."""

    values: list[Any]
    name: str = ""  # the spec's parameter written there, if any
    expr: str = ""  # the spec's expression written there, if any
    fallback: str = ""  # a name to give it when it becomes an argument
    out: str = ""  # the source it becomes
    derived: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # child-class expressions


def _camel(name: str) -> str:
    text = "".join(p[:1].upper() + p[1:] for p in re.split(r"[^0-9A-Za-z]+", name) if p)
    return text if text and not text[0].isdigit() else f"Block{text}"


def _ident(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    # keywords, the file's own names, and E741's ambiguous l, O, I (a paper's k, l, m, n)
    return f"{name}_" if keyword.iskeyword(name) or name in ("self", "nn", "torch", "F", "x", "l", "O", "I") else name


class _Class:
    """The merged source skeleton of one class over its uses, and the slots it needs."""

    def __init__(self, name: str, uses: list[Box], expressions: dict[str, tuple[str, ...]]):
        self.name, self.uses = name, uses
        self.expressions = expressions  # class -> the spec expressions its source uses (those classed so far)
        self.slots: list[_Slot] = []
        self.args: list[str] = []
        self.entries: list[tuple[str, Any]] = []

    def slot(self, values: list[Any], name: str = "", expr: str = "", fallback: str = "") -> _Slot:
        expr = re.sub(r"[A-Za-z_]\w*", lambda m: _ident(m.group(0)), expr)  # its names as the arguments are written
        s = _Slot(values, name, expr, fallback)
        self.slots.append(s)
        return s

    # pass 1: a skeleton of the body with a slot for every value
    def merge(self, boxes: list[Box | None], path: str) -> list[tuple[str, Any]]:
        """Children merged by name over the uses; (name, entry) in registration order."""
        if len({(b.mode, b.wiring if b.mode == "graph" else ()) for b in boxes if b}) > 1:
            raise _NotGeneral(path)  # a straight-line forward is written from one use: all must match it
        # loops only in chains: a parallel's and a graph's forward name each child
        kids = [(_collapse(box.children) if box.mode == "chain" else list(box.children)) if box else []
                for box in boxes]
        order: list[str] = []  # every use's children, in each use's order (a child a use lacks goes where others have it)
        for children in kids:
            at = 0
            for c in children:
                if c.name in order:
                    at = order.index(c.name) + 1
                else:
                    order.insert(at, c.name)
                    at += 1
        for children in kids:
            positions = [order.index(c.name) for c in children]
            if positions != sorted(positions):
                raise _NotGeneral(path)
        entries = []
        for cname in order:
            items = [next((c for c in children if c.name == cname), None) if box else None
                     for box, children in zip(boxes, kids)]
            present = [i is not None for i in items]
            kinds = {(type(i).__name__, getattr(i, "ctor", None) or getattr(i, "cls", None)) for i in items if i}
            if len(kinds) != 1:
                raise _NotGeneral(cname)
            guard = None
            if not all(p for p, b in zip(present, boxes) if b):
                conds = {b.when.get(cname, "") for b, i in zip(boxes, items) if b and i}
                cond = conds.pop() if len(conds) == 1 else ""
                if any(b and b.mode == "parallel" and b.role.get(cname) == "branch" for b in boxes):
                    raise _NotGeneral(cname)  # a branch some uses lack: one class per set of branches
                guard = self.slot([p if b else None for p, b in zip(present, boxes)], name=cond,
                                  fallback=f"with_{path}{cname}")
            first = next(i for i in items if i)
            if isinstance(first, _Run):
                firsts = [i.first if i else None for i in items]
                rests = [i.rest[0] if i and i.rest else None for i in items]
                count = self.slot([len(i.rest) + 1 if i else None for i in items], fallback=f"{cname}s")
                entries.append((cname, ("run", guard, first.first.cls, self.inst_args(firsts, f"{cname}0"),
                                        self.inst_args(rests, cname), count)))
            elif isinstance(first, Leaf):
                entries.append((cname, ("leaf", guard, first.ctor, self.leaf(items, f"{path}{cname}"), first.positional)))
            elif first.cls:
                entries.append((cname, ("inst", guard, first.cls, self.inst_args(items, cname))))
            else:
                entries.append((cname, ("seq", guard, self.merge(items, f"{path}{cname}_"))))
        return entries

    def inst_args(self, items: list[Box | None], cname: str) -> list[tuple[str, _Slot]]:
        first = next((i for i in items if i), None)
        if first is None:
            return []
        if any(i and [a for a, _ in i.call] != [a for a, _ in first.call] for i in items):
            raise _NotGeneral(cname)
        args = []
        for a, _ in first.call:
            values = [dict(i.call).get(a) if i else None for i in items]
            raws = {repr(i.written.get(a)) for i in items if i}
            raw = next((i.written.get(a) for i in items if i), None) if len(raws) == 1 else None
            name = expr = ""
            if isinstance(raw, str) and raw not in values:  # written as the parent's parameter or expression
                name = raw if is_identifier(raw) else ""
                expr = raw if not name and looks_like_expression(raw) else ""
            args.append((a, self.slot(values, name=name, expr=expr, fallback=a)))
        slots = dict(args)
        for _, slot in args:  # the child's own expressions of its arguments, in the parent's terms
            slot.derived = [(e, {n: slots[n] for n in re.findall(r"[A-Za-z_]\w*", e) if n in slots})
                            for e in self.expressions.get(first.cls, ())]
        return args

    def leaf(self, items: list[Leaf | None], path: str) -> list[tuple[str, _Slot, Any]]:
        names: list[str] = []
        for i in items:
            for a in i.args if i else ():
                if a not in names:
                    names.append(a)
        first = next(i for i in items if i)
        signature = list(first.args)[:first.positional] + list(first.defaults)
        names.sort(key=lambda a: signature.index(a) if a in signature else len(signature))
        out = []
        for a in names:
            if any(i and a not in i.args and a not in i.defaults for i in items):
                raise _NotGeneral(path)
            values = [i.args.get(a, i.defaults.get(a)) if i else None for i in items]
            name, expr = self.written_for(items, values, a)
            fallback = a if a in _SIZE_ARGS and not self.slots else f"{path}_{a}"
            out.append((a, self.slot(values, name, expr, fallback), next((x.defaults.get(a, _NO) for x in items if x), _NO)))
        return out

    @staticmethod
    def written_for(items: list[Leaf | None], values: list[Any], arg: str) -> tuple[str, str]:
        """The spec's own parameter (or expression) written for constructor argument `arg` (the
        field of that name: out -> out_channels, kernel -> kernel_size), when it holds at every use."""
        found: set[str] | None = None
        for item, value in zip(items, values):
            if item is None:
                continue
            here = set()
            for fname, raw in item.written.items():
                if not (fname == arg or fname in arg.split("_")):
                    continue
                if (isinstance(raw, str) and raw != value and (is_identifier(raw) or looks_like_expression(raw))
                        and _simple(getattr(item.node.params, fname, None)) == value):
                    here.add(raw)
            found = here if found is None else found & here
        candidates = sorted(found or ())
        idents = [c for c in candidates if is_identifier(c)]
        if idents:
            return idents[0], ""
        return "", candidates[0] if candidates else ""

    # pass 2: slots -> literals, arguments and expressions
    def assign(self, constants: dict[str, Any]) -> None:
        """constants: the spec's `vars`, which the file defines at module level."""
        groups: dict[str, list[Any]] = {}

        def fits(vec: list[Any], values: list[Any]) -> bool:
            return all(a is None or b is None or (a == b and type(a) is type(b)) for a, b in zip(vec, values))

        def join(name: str, values: list[Any]) -> None:
            old = groups.setdefault(name, [None] * len(values))
            groups[name] = [a if a is not None else b for a, b in zip(old, values)]

        known = lambda s: [v for v in s.values if v is not None]  # noqa: E731
        for s in self.slots:  # the spec's parameters
            if s.name and fits(groups.get(s.name, [None] * len(s.values)), s.values):
                s.out = _ident(s.name)
                join(s.out, s.values)
        for s in self.slots:  # never changes: a literal
            if not s.out and len({repr(v) for v in known(s)}) <= 1:
                s.out = repr(known(s)[0]) if known(s) else "None"
        for s in self.slots:  # the spec's expressions of its parameters
            if not s.out and s.expr and self.expression_holds(s, groups, constants):
                s.out = s.expr
        for s in self.slots:  # what remains: share an argument with an equal one, or get its own
            if s.out:
                continue
            same = next((g for g, vec in groups.items() if fits(vec, s.values)
                         and all(v is not None for v, w in zip(vec, s.values) if w is not None)), None)
            same_expr = next((e.out for e in self.slots if e.expr and e.out == e.expr and e.values == s.values), None)
            for expr, mapping in s.derived:
                if all(m.out and is_identifier(m.out) for m in mapping.values()):
                    text = re.sub(r"[A-Za-z_]\w*", lambda t, m=mapping: m[t.group(0)].out if t.group(0) in m
                                  else t.group(0), expr)
                    if self.expression_holds(_Slot(s.values, expr=text), groups, constants):
                        same_expr = same_expr or text
            if same is None and same_expr:
                s.out = same_expr  # bn3's features: the conv3's `width * expansion`
                continue
            name = same or _unique(_ident(s.fallback), groups)
            s.out = name
            join(name, s.values)
        self.args = list(groups)
        for use_index, use in enumerate(self.uses):
            use.call = [(g, groups[g][use_index]) for g in self.args]

    @staticmethod
    def expression_holds(s: _Slot, groups: dict[str, list[Any]], constants: dict[str, Any]) -> bool:
        for i, value in enumerate(s.values):
            if value is None:
                continue
            env = {**constants, **{g: vec[i] for g, vec in groups.items() if vec[i] is not None}}
            try:
                if evaluate(s.expr, env) != value:
                    return False
            except ExprError:
                return False
        return True


def _unique(name: str, taken: dict[str, Any]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}{k}", k + 1
    return out


# -- writing the source -------------------------------------------------------------------------

@dataclass
class _Run:
    """Uses of one class named prefix0, prefix1, ... whose arguments after the first are equal: a loop."""

    name: str  # the prefix
    first: Box
    rest: list[Box]


def _collapse(children: list[Any]) -> list[Any]:
    out: list[Any] = []
    names = {c.name for c in children}
    i = 0
    while i < len(children):
        c = children[i]
        m = re.fullmatch(r"(.*?)0", c.name)
        if m and m.group(1) in names:
            m = None  # bneck10 beside bneck1: the eleventh of a numbered list, not the start of a repeat
        j = i + 1
        if m and isinstance(c, Box) and c.cls:
            while (j < len(children) and isinstance(children[j], Box) and children[j].name == f"{m.group(1)}{j - i}"
                   and children[j].cls == c.cls and children[j].call == children[i + 1].call):
                j += 1
        if j - i >= 2 or (m and isinstance(c, Box) and c.cls and m.group(1)):
            out.append(_Run(m.group(1), c, children[i + 1:j]))
        else:
            out.extend(children[i:j])
        i = j
    return out


def _call(ctor: str, args: list[tuple[Any, ...]], positional: int = 0) -> str:
    """`args`: (name, slot) or, for layers, (name, slot, the constructor's default), left out when met."""
    parts = []
    for k, (a, s, *default) in enumerate(args):
        if k >= positional and default and default[0] is not _NO and s.out == repr(default[0]):
            continue
        parts.append(s.out if k < positional else f"{a}={s.out}")
    return f"{ctor}({', '.join(parts)})"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def body(self, entries: list[tuple[str, Any]], target: str, indent: str) -> None:
        """Registers children on `target` (self or a Sequential) in order."""
        guard = None
        for name, entry in entries:
            pad = indent
            if entry[1] is not None:
                if entry[1].out != guard:
                    self.lines.append(f"{indent}if {entry[1].out}:")
                pad += "    "
            guard = entry[1].out if entry[1] is not None else None
            if entry[0] == "run":
                _, _, cls, first, rest, count = entry
                self.lines.append(f"{pad}{self.register(target, name + '0', _call(cls, first))}")
                if count.out == "1":
                    continue
                self.lines.append(f"{pad}for i in range(1, {count.out}):")
                self.lines.append(f'{pad}    {target}.add_module(f"{name}{{i}}", {_call(cls, rest)})')
            elif entry[0] == "seq":
                self.lines.append(f"{pad}{self.register(target, name, 'nn.Sequential()')}")
                self.body(entry[2], f"{target}.{name}" if name.isidentifier() else f'{target}.get_submodule("{name}")',
                          pad)
            else:
                self.lines.append(f"{pad}{self.register(target, name, self.expr(entry))}")

    @staticmethod
    def register(target: str, name: str, value: str) -> str:
        if target == "self" and name.isidentifier() and not keyword.iskeyword(name):
            return f"self.{name} = {value}"
        return f'{target}.add_module("{name}", {value})'

    @staticmethod
    def expr(entry: Any) -> str:
        if entry[0] == "leaf":
            return _call(entry[2], entry[3], entry[4])
        return _call(entry[2], entry[3])


def eject_source(report: Report) -> str:
    """The standalone PyTorch source of the spec's network (see the module docstring)."""
    tree = _Tree(report)
    root = tree.root()
    by_key: dict[str, list[Box]] = {}
    height: dict[str, int] = {}  # a class's nesting above the classes inside it, over all its uses

    def collect(box: Box) -> int:
        below = max((collect(c) for c in box.children if isinstance(c, Box)), default=0)
        if box.key:
            by_key.setdefault(box.key, []).append(box)
            height[box.key] = max(height.get(box.key, 0), below + 1)
            return below + 1
        return below

    collect(root)
    by_key = {k: by_key[k] for k in sorted(by_key, key=lambda k: height[k])}  # stable: post-order among equals
    classes: list[_Class] = []
    constants = _constants(report)
    expressions: dict[str, tuple[str, ...]] = {}
    for key, uses in by_key.items():  # post-order: a class's parts are classed before it
        variants: list[list[Box]] = [uses]
        while variants:
            group = variants.pop(0)
            base = _camel(report.graph.name) if key == "network" else _camel(key)
            name = _unique(base, {c.name for c in classes} | {h.__name__ for h in tree.helpers})
            cls = _Class(name, group, expressions)
            try:
                cls.entries = cls.merge(group, "")
            except _NotGeneral:
                if len(group) == 1:
                    raise
                split: dict[str, list[Box]] = {}
                for use in group:
                    split.setdefault(_signature(use), []).append(use)
                variants = list(split.values()) + variants if len(split) > 1 else [[u] for u in group] + variants
                continue
            cls.assign(constants)
            expressions[name] = tuple(dict.fromkeys(x.out for x in cls.slots if x.expr and x.out == x.expr))
            for use in group:
                use.cls = name
            classes.append(cls)
    return _render(report, classes, tree.helpers, constants)


def _signature(box: Box) -> str:
    return "|".join(f"{c.name}:{getattr(c, 'ctor', '') or c.cls or _signature(c)}" for c in box.children)


def _constants(report: Report) -> dict[str, Any]:
    """The spec's `vars`, evaluated in order as resolve does."""
    out: dict[str, Any] = {}
    for name, raw in report.graph.spec.vars.items():
        try:
            out[name] = evaluate(raw, out) if isinstance(raw, str) and looks_like_expression(raw) else raw
        except ExprError:
            continue
    return out


def _render(report: Report, classes: list[_Class], helpers: set[type], constants: dict[str, Any]) -> str:
    g = report.graph
    out = [f'"""{g.name}: {g.description or "ejected by archspec"}.', "",
           f"Written by `archspec eject` from {Path(g.doc.file).name} (sha256 {g.sha256[:12]}).",
           "Standalone PyTorch: the state-dict keys and outputs equal those of `archspec.build` on the same spec.",
           '"""', "",
           "from __future__ import annotations", ""]
    copied = _support(helpers)
    sources = [inspect.getsource(h) for h in copied]
    uses_f = any("F." in s for s in sources)
    uses_math = any("math." in s for s in sources)
    fields = archspec_nn.result_fields(tuple(o.name for o in g.outputs)) if len(g.outputs) > 1 else ()
    stdlib = ["import math"] * uses_math + ["from collections import namedtuple"] * bool(fields)
    out += (stdlib + [""]) * bool(stdlib) + ["import torch"] + (
        ["import torch.nn.functional as F"] if uses_f else []) + ["from torch import nn", ""]
    used = {n for c in classes for s in c.slots if s.expr and s.out == s.expr for n in re.findall(r"[A-Za-z_]\w*", s.expr)}
    written = [f"{n} = {v!r}" for n, v in constants.items() if n in used and not any(n in c.args for c in classes)]
    if written:
        out += ["# the spec's vars", *written, ""]
    if any(re.search(r"\bmake_divisible\(", s.out) for c in classes for s in c.slots):
        out += ["", _MAKE_DIVISIBLE, ""]
    for source in sources:
        out += ["", source.rstrip(), ""]
    taken = dict.fromkeys([*(c.name for c in classes), *(h.__name__ for h in copied), *constants])
    result = _unique("Outputs", taken) if fields else ""
    if fields:  # as `archspec.build`'s module returns them (archspec.nn.result_type)
        listed, rename = ", ".join(f'"{f}"' for f in fields), ", rename=True" * any(f[0] == "_" for f in fields)
        out += ["", f'{result} = namedtuple("{result}", [{listed}]{rename})', ""]
    blocks = g.spec.blocks
    for cls in classes:
        w = _Writer()
        key = cls.uses[0].key or ""
        mode = cls.uses[0].mode
        base = "nn.Sequential" if mode == "chain" else "nn.Module"
        doc = blocks[key].doc if key in blocks and getattr(blocks[key], "doc", "") else ""
        what = f"Block '{key}' of the spec" if key in blocks else ("The network" if key == "network" else
                                                                    f"A {key} written in the spec")
        out += ["", "", f"class {cls.name}({base}):", f'    """{what}{": " + doc if doc else "."}"""', ""]
        args = "".join(f", {a}" for a in cls.args)
        out.append(f"    def __init__(self{args}):")
        out.append("        super().__init__()")
        w.body(cls.entries, "self", "        ")
        if mode == "parallel":
            w.lines += _forward(cls)
        elif mode == "graph":
            w.lines += _graph_forward(cls.uses[0], *((fields, result) if key == "network" else ()))
        out += w.lines
    net = classes[-1]
    call = ", ".join(f"{a}={v!r}" for a, v in net.uses[0].call)
    out += ["", "", "def build() -> nn.Module:", f'    """The network of {g.doc.file}, as `archspec.build` makes it."""',
            f"    return {net.name}({call})", ""]
    text = "\n".join(_wrap(line) for line in _tidy(out)).rstrip() + "\n"
    if "torch." not in text.replace("import torch.nn", ""):
        text = text.replace("import torch\n", "", 1)
    return text


_MAKE_DIVISIBLE = '''def make_divisible(v, divisor, min_value=None):
    """torchvision.models._utils._make_divisible, as the spec's expressions call it."""
    new = max(divisor if min_value is None else min_value, int(v + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * v else new)'''


def _support(helpers: set[type]) -> list[Any]:
    """The helper classes and the module-level functions and classes their source names (their
    bases too), from the modules eject copies, in module then definition order."""
    import sys

    found: set[Any] = set()
    todo = list(helpers)
    while todo:
        obj = todo.pop()
        if obj in found:
            continue
        found.add(obj)
        module = sys.modules[obj.__module__]
        names = set(re.findall(r"[A-Za-z_]\w*", inspect.getsource(obj)))
        names |= {b.__name__ for b in getattr(obj, "__bases__", ())}
        for name in names:
            dep = getattr(module, name, None)
            if (inspect.isclass(dep) or inspect.isfunction(dep)) and getattr(dep, "__module__", "") in _HELPER_MODULES:
                todo.append(dep)
    return sorted(found, key=lambda o: (_HELPER_MODULES.index(o.__module__), inspect.getsourcelines(o)[1]))


def _forward(cls: _Class) -> list[str]:
    """A parallel's forward: the body in place, branches beside it, merged, then the `then` layers."""
    use = cls.uses[0]
    role = {}
    for u in cls.uses:
        role.update(u.role)
    merge = use.merge
    guards = {name: e[1].out for name, e in cls.entries if e[1] is not None}
    lines = ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
    body = [n for n, _ in cls.entries if role.get(n) == "body"]
    branches = [n for n, _ in cls.entries if role.get(n) == "branch"]
    then = [n for n, _ in cls.entries if role.get(n) == "then"]
    outs = []
    if use.inline:
        lines.append("        out = x")
        for n in body:
            lines.append(f"        out = self.{n}(out)" if n not in guards else
                         f"        out = self.{n}(out) if hasattr(self, {n!r}) else out")
        outs.append("out")
    outs += [f"self.{n}(x)" for n in branches]
    if merge[0] == "cat":
        lines.append(f"        out = torch.cat([{', '.join(outs)}], {merge[1]})")
    else:
        lines.append(f"        out = {' + '.join(outs)}")
    for n in then:
        lines.append(f"        out = self.{n}(out)" if n not in guards else
                     f"        out = self.{n}(out) if hasattr(self, {n!r}) else out")
    lines.append("        return out")
    return lines


def _graph_forward(use: Box, fields: tuple[str, ...] = (), made: str = "") -> list[str]:
    """Any other dataflow (several inputs or outputs, `from:` references): one line per part in
    order, a value kept in a variable named after its part while a later part still reads it. The
    network's several outputs are returned as the named tuple `made` with these `fields`."""
    _, steps, result = use.wiring
    reads = Counter(r for _, ins, _ in steps for r in ins) + Counter(result)
    names = set(use.inputs) | {_ident(n) for n, _, _ in steps}
    temp = next(t for t in ("x", "h", "out", "y", "tmp") if t not in names)
    var: dict[Any, str] = {("in", k): p for k, p in enumerate(use.inputs)}
    taken = set(use.inputs) | {temp}
    params = ", ".join(f"{p}: torch.Tensor" for p in use.inputs)
    returns = made or ("torch.Tensor" if len(result) == 1 else "tuple[torch.Tensor, ...]")
    lines = ["", f"    def forward(self, {params}) -> {returns}:"]
    for i, (name, ins, n) in enumerate(steps):
        if not n:
            continue  # an empty branch: the identity, its readers read its input
        call = f"self.{name}({', '.join(var[r] for r in ins)})"
        refs = [i] if n == 1 else [(i, j) for j in range(n)]
        for r in refs:
            passing = n == 1 and reads[r] == 1 and i + 1 < len(steps) and steps[i + 1][1] == (i,)
            piece = use.pieces[name][r[1]] if name in use.pieces else f"{name}_{r[1]}" if n > 1 else name
            var[r] = temp if passing else _unique(_ident(piece), dict.fromkeys(taken))
            taken.add(var[r])
        lines.append(f"        {', '.join(var[r] for r in refs)} = {call}")
    values = [var[r] for r in result]
    lines.append(f"        return {made}({', '.join(f'{f}={v}' for f, v in zip(fields, values))})" if fields else
                 f"        return {', '.join(values)}")
    return lines


def _wrap(line: str, width: int = 116) -> str:
    """A long call gets one argument per line; a long docstring is wrapped."""
    if len(line) <= width:
        return line
    indent = line[: len(line) - len(line.lstrip())]
    stripped = line.strip()
    if stripped.startswith('"""') and stripped.endswith('"""'):
        import textwrap

        body = textwrap.fill(stripped[3:-3], width - len(indent), initial_indent=indent + '"""',
                             subsequent_indent=indent, break_on_hyphens=False)
        return body + f"\n{indent}" + '"""'
    m = re.match(r"(\s*)(.*?\()(.*)\)([:,]?)$", line)
    if not m or m.group(3).count("(") != m.group(3).count(")"):
        return line
    parts, depth, cur = [], 0, ""
    for ch in m.group(3):
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += ch in "([{"
        depth -= ch in ")]}"
        cur += ch
    parts.append(cur.strip())
    inner = indent + "    "
    return (f"{indent}{m.group(2)}\n" + "".join(_wrap(f"{inner}{p},", width) + "\n" for p in parts if p)
            + f"{indent}){m.group(4)}")


def _tidy(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in "\n".join(lines).splitlines():
        if not line.strip() and out and not out[-1].strip() and len(out) > 1 and not out[-2].strip():
            continue
        out.append(line.rstrip())
    return out
