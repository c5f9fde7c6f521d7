"""Architecture diagrams as the lecture draws them: blocks as labelled groups, branches side by
side, residual shortcuts, every edge labelled with its tensor shape. One pass over the graph IR's
nodes builds a small drawing (nodes, the graph's real edges, nested groups from the scope table);
DOT and Mermaid are two printers of it. SVG/PNG go through Graphviz's `dot` via the `graphviz`
package. `depth` means what it means in `summary`: containers whose path has more components are
drawn as one box with their totals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .analyze import Report
from .errors import ArchspecError, MissingExtraError, install_hint
from .layers import REGISTRY
from .render import human_units

FORMATS = (".svg", ".png", ".dot", ".mmd")


@dataclass
class _Group:
    id: str
    label: str
    items: list = field(default_factory=list)  # node ids and nested groups, in order


@dataclass
class Drawing:
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (label, shape: box|circle|plain)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, tensor shape)
    root: _Group = field(default_factory=lambda: _Group("root", ""))


def draw(report: Report, depth: int | None = None) -> Drawing:
    """Layers (or, deeper than `depth`, their containers) as boxes, N-ary merges as circles, an edge
    per value read; inputs and outputs under the spec's names."""
    g = report.graph
    d = Drawing()
    rows = {n.path: n for n in report.nodes}
    scopes = {s.path: s for s in g.scopes}
    counter = iter(range(10**9))
    groups: dict[str, _Group] = {"": d.root}
    members: dict[str, int] = {}  # scope -> layers drawn in it (a one-layer branch gets no frame)
    for n in g.nodes:
        parts = n.scope.split(".")
        for k in range(1, len(parts)):
            members[".".join(parts[:k])] = members.get(".".join(parts[:k]), 0) + 1

    def new(label: str, shape: str, group: _Group) -> str:
        nid = f"n{next(counter)}"
        d.nodes[nid] = (label, shape)
        group.items.append(nid)
        return nid

    def group_of(parts: list[str]) -> _Group:
        """The innermost drawn container of a path's prefixes, created on first use."""
        parent, path = d.root, ""
        for k in range(1, len(parts) + 1):
            path = ".".join(parts[:k])
            s = scopes.get(path)
            if s is None:
                continue
            framed = s.label not in ("sequence", "model") and (s.label != "branch" or members.get(path, 0) > 1)
            if not framed:
                continue
            if path not in groups:
                sub = _Group(f"cluster_{next(counter)}", path.rsplit(".", 1)[-1] if s.label == "branch"
                             else f"{path.rsplit('.', 1)[-1]} ({s.label})")
                parent.items.append(sub)
                groups[path] = sub
            parent = groups[path]
        return parent

    drawn: dict[str, str] = {}  # scope or collapsed container path -> node id
    where: dict[int, str] = {}  # value id -> node id drawing its producer
    for i, inp in enumerate(g.inputs):
        where[i] = new(f"input {inp.name}", "plain", d.root)
    edges: dict[tuple[str, str], str] = {}
    for n in g.nodes:
        parts = n.scope.split(".")
        cut = ".".join(parts[:depth]) if depth is not None and len(parts) > depth else None
        if cut is not None and cut in scopes:
            if cut not in drawn:
                info, s = rows[cut], scopes[cut]
                drawn[cut] = new(f"{cut.rsplit('.', 1)[-1]}\n{s.label}\n{human_units(info.params)} params, "
                                 f"{human_units(info.macs)} MACs",
                                 "box", group_of(parts[:depth - 1]))
            nid = drawn[cut]
        else:
            kind = REGISTRY[n.kind]
            brief = kind.brief(n.params)
            if kind.arity is None:
                nid = new(brief, "circle", group_of(parts[:-1]))
            else:
                nid = new(n.name if brief == n.name else f"{n.name}\n{brief}", "box", group_of(parts[:-1]))
        for v in n.inputs:
            src = where[v]
            if src != nid:
                edges.setdefault((src, nid), str(report.types[v]))
        for v in n.outputs:
            where[v] = nid
    for o in g.outputs:
        last = new(f"output {o.name}" if len(g.outputs) > 1 or o.name != "output" else "output", "plain", d.root)
        edges.setdefault((where[o.value], last), str(report.types[o.value]))
    d.edges = [(a, b, label) for (a, b), label in edges.items()]
    return d


def to_dot(d: Drawing, title: str) -> str:
    out = [f'digraph "{title}" {{', '  rankdir=TB; nodesep=0.25; ranksep=0.3; ordering=out;',
           '  node [fontname="Helvetica", fontsize=10, style="rounded,filled", fillcolor="#eef3fb"];',
           '  edge [fontname="Helvetica", fontsize=8, color="#555555"];']

    def group(g: _Group, indent: str) -> None:
        for item in g.items:
            if isinstance(item, _Group):
                out.append(f'{indent}subgraph "{item.id}" {{')
                out.append(f'{indent}  label="{_esc(item.label)}"; style="rounded"; color="#8899aa"; fontsize=10;')
                group(item, indent + "  ")
                out.append(f"{indent}}}")
            else:
                label, shape = d.nodes[item]
                attrs = {"box": 'shape=box', "circle": 'shape=circle, fillcolor="#fde9c9", width=0.3',
                         "plain": 'shape=plaintext, style=""'}[shape]
                out.append(f'{indent}{item} [label="{_esc(label)}", {attrs}];')

    group(d.root, "  ")
    out += [f'  {a} -> {b} [label=" {label}"];' for a, b, label in d.edges]
    out.append("}")
    return "\n".join(out) + "\n"


def to_mermaid(d: Drawing) -> str:
    out = ["flowchart TB"]

    def group(g: _Group, indent: str) -> None:
        for item in g.items:
            if isinstance(item, _Group):
                out.append(f'{indent}subgraph {item.id}["{_mm(item.label)}"]')
                group(item, indent + "  ")
                out.append(f"{indent}end")
            else:
                label, shape = d.nodes[item]
                text = _mm(label).replace("\n", "<br/>")
                out.append(f'{indent}{item}(("{text}"))' if shape == "circle" else f'{indent}{item}["{text}"]')

    group(d.root, "  ")
    out += [f'  {a} -->|"{label}"| {b}' for a, b, label in d.edges]
    return "\n".join(out) + "\n"


def write(report: Report, output: Path, depth: int | None = None, inputs: tuple[str, ...] = ()) -> None:
    from .files import atomic_write, atomic_write_text, check_output

    inputs = (*inputs, report.graph.doc.file)
    check_output(output, inputs=inputs)  # before drawing
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        raise ArchspecError(f"cannot draw to '{output.name}': use one of {', '.join(FORMATS)}")
    drawing = draw(report, depth)
    if suffix == ".mmd":
        return atomic_write_text(output, to_mermaid(drawing), inputs=inputs)
    dot = to_dot(drawing, report.graph.name)
    if suffix == ".dot":
        return atomic_write_text(output, dot, inputs=inputs)
    try:
        import graphviz
    except ImportError:
        raise MissingExtraError(f"SVG/PNG need the graphviz package: {install_hint('graph')}; and Graphviz's "
                            "`dot` program: apt-get install graphviz (Debian/Ubuntu) or brew install graphviz "
                            "(macOS); .dot and .mmd need nothing") from None
    try:
        data = graphviz.Source(dot).pipe(format=suffix[1:])
    except graphviz.ExecutableNotFound:
        raise ArchspecError("Graphviz's `dot` program is not installed: apt-get install graphviz "
                            "(Debian/Ubuntu) or brew install graphviz (macOS); .dot and .mmd need nothing") from None
    atomic_write(output, lambda fh: fh.write(data), inputs=inputs)


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _mm(text: str) -> str:
    return text.replace('"', "#quot;")
