"""Text for people and machines: diagnostics (human, JSON, GitHub annotations) and summaries."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from .analyze import NodeReport, Report
from .errors import Diagnostic


def human_diagnostic(d: Diagnostic, source_line: str = "") -> str:
    """`file:line:col: error[AS101]: message`, then the source line with a caret, then hints."""
    lines = [f"{d.loc}: {d.severity}[{d.code}]: {d.message}"]
    if source_line:
        text, col = _clip(source_line.rstrip(), max(d.loc.col - 1, 0))
        gutter = f"{d.loc.line:>4} | "
        lines.append(gutter + text)
        # the caret line repeats the source's tabs, so the caret lines up however tabs are shown
        lines.append(" " * len(gutter) + "".join("\t" if ch == "\t" else " " for ch in text[:col]) + "^")
    if d.path:
        lines.append(f"  at: {d.path}")
    if d.hint:
        lines.append(f"  hint: {d.hint}")
    for note, loc in d.related:
        lines.append(f"  note: {note} ({loc})")
    return "\n".join(lines)


def _clip(line: str, col: int, width: int = 120) -> tuple[str, int]:
    """At most `width` characters of a long source line, around the column (which moves with it)."""
    if len(line) <= width:
        return line, col
    start = max(0, min(col - width // 2, len(line) - width))
    text = ("..." if start else "") + line[start:start + width] + ("..." if start + width < len(line) else "")
    return text, col - start + (3 if start else 0)


def github_diagnostic(d: Diagnostic) -> str:
    """A GitHub Actions workflow command, so the error shows inline on the pull request."""
    msg = _escape(f"[{d.code}] {d.message}" + (f" ({d.hint})" if d.hint else ""))
    prop = lambda v: _escape(str(v)).replace(":", "%3A").replace(",", "%2C")
    return (f"::{d.severity} file={prop(d.loc.file)},line={d.loc.line},col={d.loc.col},"
            f"title={prop('archspec ' + d.name)}::{msg}")


def _escape(text: str) -> str:
    """Workflow-command escaping, as @actions/core does it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def json_results(results: Iterable[tuple[str, Report | None, tuple[Diagnostic, ...]]]) -> str:
    out = []
    for file, report, diags in results:
        entry: dict = {"file": file, "ok": not diags, "errors": [d.as_dict() for d in diags]}
        if report is not None:
            entry["warnings"] = [d.as_dict() for d in report.warnings]
            entry["name"] = report.graph.name
            entry["totals"] = report.totals.as_dict()
            entry["output_shape"] = list(report.output.shape)
            entry["outputs"] = {name: list(t.shape) for name, t in report.outputs.items()}
        out.append(entry)
    return json.dumps(out, indent=2)


def human_units(n: int) -> str:
    """61.7K, 4.09G: three significant digits, decimal units as torchvision reports GFLOPS."""
    for unit, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            v = n / scale
            return f"{v:.3g}{unit}" if v < 1000 else f"{v:.0f}{unit}"
    return str(n)


def summary_dict(report: Report, depth: int | None = None) -> dict:
    g = report.graph
    return {
        "name": g.name,
        "input": _input_dict(g.input),
        "inputs": [_input_dict(i) for i in g.inputs],
        "output_shape": list(report.output.shape),
        "outputs": {name: list(t.shape) for name, t in report.outputs.items()},
        "totals": report.totals.as_dict(),
        "layers": [_node_dict(n) for n in _visible(report, depth)],
        "conventions": "per sample (batch 1); macs: conv/linear/recurrent multiply-accumulates, bias excluded; "
                       "flops: 2*macs plus bias, activation, norm, pooling and merge work",
    }


def _input_dict(i) -> dict:
    return {"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "layout": i.layout,
            "symbolic": {d.name: d.size for d in i.dims if d.name}}


def _node_dict(n: NodeReport) -> dict:
    """A row; a layer with several outputs also names each, `{name: shape}` as the model's `outputs`."""
    row = {"path": n.path, "kind": n.kind, "depth": n.depth, "output_shape": list(n.output.shape)}
    if n.outputs:
        row["outputs"] = {name: list(t.shape) for name, t in n.outputs}
    return row | {"params": n.params, "weights": n.weights, "macs": n.macs, "flops": n.flops, "leaf": n.leaf,
                  "line": n.loc.line, "reads": list(n.reads)}


def _visible(report: Report, depth: int | None) -> list[NodeReport]:
    """Without a depth: every container row (so a reader sees which block a layer belongs to) and
    every layer. With one: rows down to `depth` path components; a container at `depth` stands, with
    its totals, for what it hides (`graph --depth` cuts at the same place)."""
    return [n for n in report.nodes[1:] if depth is None or n.depth <= depth]


def print_summary(report: Report, depth: int | None = None, file: TextIO | None = None,
                  weights: bool = False) -> None:
    """A torchinfo-style table, computed statically. Colour only on a terminal; NO_COLOR respected.
    One line per row at any width (at least 100): the `reads` column takes the room the others leave."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    g, t = report.graph, report.totals
    chained, previous = {}, (0,)  # a layer reading something other than the row above says what it reads
    for node in g.nodes:
        chained[node.scope] = len(previous) == 1 and node.inputs == previous
        previous = node.outputs
    rows, reads = [], []
    for n in _visible(report, depth):
        label = n.path if depth is not None else "  " * max(n.depth - 1, 0) + n.path.rsplit(".", 1)[-1]
        if not n.leaf and depth is None:
            label = f"[bold]{label}[/bold]"
        output = ", ".join(str(t) for _, t in n.outputs) if n.outputs else str(n.output)  # a split: every piece
        rows.append([label, n.kind, output, f"{n.params:,}"] + ([f"{n.weights:,}"] if weights else []) +
                    [f"{n.macs:,}"])
        reads.append(() if chained.get(n.path, True) else n.reads)

    def table(room: int | None = None) -> Table:
        """Without `room`, no reads column; with it, the reads fitted into `room` characters."""
        inputs = ", ".join(f"{i.name} {_shape(i.shape)} ({i.dtype})" for i in g.inputs)
        out = Table(box=box.SIMPLE_HEAD, title=f"{g.name}: input{'s' * (len(g.inputs) > 1)} {inputs}",
                    title_justify="left", show_footer=True, header_style="bold")
        out.add_column("layer", footer="total", style="cyan", no_wrap=True)
        out.add_column("kind", style="magenta", no_wrap=True)
        out.add_column("output", footer=str(report.output), no_wrap=True)
        out.add_column("params", footer=f"{t.params:,}", justify="right", no_wrap=True)
        if weights:
            out.add_column("weights", footer=f"{report.nodes[0].weights:,}", justify="right", no_wrap=True)
        out.add_column("MACs", footer=f"{t.macs:,}", justify="right", no_wrap=True)
        if room is not None:
            out.add_column("reads", style="dim", no_wrap=True)
        for cells, names in zip(rows, reads):
            out.add_row(*cells, *([_fit(names, room)] if room is not None else []))
        return out

    console = Console(file=file, highlight=False, soft_wrap=False, width=max(100, Console(file=file).width))
    shown = table()
    if any(reads):  # a column is its cells' width, 1 space of padding each side and 1 between columns
        shown = table(max(console.width - console.measure(shown).maximum - 3, _MIN_READS))
    with console.capture() as captured:
        console.print(shown)
        if len(report.outputs) > 1 or g.outputs[0].name != "output":
            console.print("outputs: " + ", ".join(f"{name} {t}" for name, t in report.outputs.items()))
        console.print(f"params {human_units(t.params)}  MACs {human_units(t.macs)}  FLOPs {human_units(t.flops)}  "
                      f"activations {human_units(t.activation_bytes)}B per sample (batch 1)")
    # rich pads every line to the table's width; drop the padding, keep any closing colour codes
    (file or sys.stdout).write(_TRAILING.sub(r"\1", captured.get()))


_MIN_READS = 10  # the reads column's least width, however wide the other columns are: a name and a count


def _fit(names: Sequence[str], room: int) -> str:
    """`a, b, c` in at most `room` characters: the first names that fit whole, then how many more
    (`a, b +1`); a first name longer than the room is cut at its end (`stage2.bl… +1`)."""
    text = ", ".join(names)
    if len(text) <= room:
        return text
    for k in range(len(names) - 1, 0, -1):
        text = f"{', '.join(names[:k])} +{len(names) - k}"
        if len(text) <= room:
            return text
    more = f" +{len(names) - 1}" if len(names) > 1 else ""
    return names[0][:max(room - len(more) - 1, 1)] + "…" + more


_TRAILING = re.compile(r"[ \t]+((?:\x1b\[[0-9;]*m)*)$", re.M)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def compare_table(rows: Sequence[tuple[str, NodeReport]]) -> str:
    """The lecture's side-by-side: parameters, weights (bias excluded), MACs and shapes per spec or block."""
    header = ("spec", "input", "output", "params", "weights", "MACs")
    cells = [(name, str(n.input), str(n.output), f"{n.params:,} ({human_units(n.params)})",
              f"{n.weights:,} ({human_units(n.weights)})", f"{n.macs:,} ({human_units(n.macs)})") for name, n in rows]
    widths = [max(len(row[i]) for row in cells + [header]) for i in range(len(header))]
    fmt = lambda row: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(header), "-" * len(fmt(header)), *map(fmt, cells)])
