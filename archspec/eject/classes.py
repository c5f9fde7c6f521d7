"""Generalising the uses of a block into one class: a value that differs between uses, or that
the spec writes as a block parameter, becomes a constructor argument named after that parameter;
a value the spec writes as an expression of parameters (`channels * 4`) is written as that
expression; a value that never changes stays a literal. Numbered uses of one class whose
arguments agree after the first become a loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..expr import ExprError, evaluate, is_identifier, looks_like_expression
from .tree import _NO, _SIZE_ARGS, Box, Leaf, _ident, _simple, _unique


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
