"""Writing the ejected file: one class per generalised block (and per residual or concat written
outside a block), the network as a class, a `build()` function, and the helper classes from
`archspec.nn` the layers need, copied from their source.
"""

from __future__ import annotations

import inspect
import keyword
import re
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from .. import nn as archspec_nn
from ..analyze import Report
from ..expr import ExprError, evaluate, looks_like_expression
from .classes import _camel, _Class, _NotGeneral
from .tree import _HELPER_MODULES, _NO, Box, _ident, _Tree, _unique


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
    """The standalone PyTorch source of the spec's network (see the package docstring)."""
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
