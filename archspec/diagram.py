"""Architecture diagrams as the lecture draws them: blocks as labelled groups, branches side by
side, residual shortcuts, every edge labelled with its tensor shape. One walk builds a small
drawing (nodes, edges, nested groups); DOT and Mermaid are two printers of it. SVG/PNG go
through Graphviz's `dot` via the `graphviz` package."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .analyze import Report
from .errors import ArchspecError, MissingExtraError, install_hint
from .layers import REGISTRY, TensorType
from .render import human_units
from .resolve import Layer, Node, Sequence

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
    """Walks the graph; containers deeper than `depth` become one node with their totals."""
    d = Drawing()
    by_path = {n.path: n for n in report.nodes}
    counter = iter(range(10**9))

    def new(label: str, shape: str, group: _Group) -> str:
        nid = f"n{next(counter)}"
        d.nodes[nid] = (label, shape)
        group.items.append(nid)
        return nid

    def walk(node: Node, path: str, level: int, inputs: list[str], shape_in: str,
             group: _Group) -> tuple[list[str], str]:
        """Draws `node` fed by `inputs` (carrying `shape_in`); returns its exits and their shape."""
        if isinstance(node, Layer):
            info = by_path[path]
            brief = REGISTRY[node.kind].brief(node.params)
            nid = new(node.name if brief == node.name else f"{node.name}\n{brief}", "box", group)
            d.edges += [(src, nid, shape_in) for src in inputs]
            return [nid], str(info.output)
        if depth is not None and level > depth:
            info = by_path[path]
            nid = new(f"{node.name}\n{node.label}\n{human_units(info.params)} params, "
                      f"{human_units(info.macs)} MACs", "box", group)
            d.edges += [(src, nid, shape_in) for src in inputs]
            return [nid], str(info.output)
        sub = group
        if node.label not in ("sequence", "branch", "model"):
            sub = _Group(f"cluster_{next(counter)}", f"{node.name} ({node.label})")
            group.items.append(sub)
        if isinstance(node, Sequence):
            return run(node.children, path, level, inputs, shape_in, sub)
        ends: list[tuple[list[str], str]] = []
        for branch in node.branches:
            if not branch.children:
                ends.append((inputs, "identity"))
            elif branch.name == node.inline:
                ends.append(run(branch.children, path, level, inputs, shape_in, sub))
            else:
                bsub = _Group(f"cluster_{next(counter)}", branch.name) if len(branch.children) > 1 else sub
                if bsub is not sub:
                    sub.items.append(bsub)
                ends.append(run(branch.children, f"{path}.{branch.name}", level + 1, inputs, shape_in, bsub))
        merged = new("+" if node.merge == "add" else "concat", "circle", sub)
        d.edges += [(src, merged, label) for exits, label in ends for src in exits]
        merged_shape = str(by_path[f"{path}.{node.then[0].name}"].input) if node.then else str(by_path[path].output)
        return run(node.then, path, level, [merged], merged_shape, sub)

    def run(children: tuple[Node, ...], path: str, level: int, inputs: list[str], shape: str,
            group: _Group) -> tuple[list[str], str]:
        for child in children:
            inputs, shape = walk(child, f"{path}.{child.name}" if path else child.name, level + 1, inputs, shape, group)
        return inputs, shape

    first = new(f"input {report.graph.input.name}", "plain", d.root)
    exits, _ = walk(report.graph.root, "", 0, [first], str(TensorType(report.graph.input.shape)), d.root)
    last = new("output", "plain", d.root)
    d.edges += [(src, last, str(report.output)) for src in exits]
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
