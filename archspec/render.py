"""Text for people and machines: diagnostics (human, JSON, GitHub annotations) and summaries."""

from __future__ import annotations

import json
from typing import Iterable, Sequence

from .analyze import NodeReport, Report
from .errors import Diagnostic


def human_diagnostic(d: Diagnostic, source_line: str = "") -> str:
    """`file:line:col: error[AS101]: message`, then the source line with a caret, then hints."""
    lines = [f"{d.loc}: error[{d.code}]: {d.message}"]
    if source_line:
        gutter = f"{d.loc.line:>4} | "
        lines.append(gutter + source_line.rstrip())
        lines.append(" " * (len(gutter) + max(d.loc.col - 1, 0)) + "^")
    if d.path:
        lines.append(f"  at: {d.path}")
    if d.hint:
        lines.append(f"  hint: {d.hint}")
    for note, loc in d.related:
        lines.append(f"  note: {note} ({loc})")
    return "\n".join(lines)


def github_diagnostic(d: Diagnostic) -> str:
    """A GitHub Actions workflow command, so the error shows inline on the pull request."""
    msg = _escape(f"[{d.code}] {d.message}" + (f" ({d.hint})" if d.hint else ""))
    prop = lambda v: _escape(str(v)).replace(":", "%3A").replace(",", "%2C")  # noqa: E731
    return (f"::error file={prop(d.loc.file)},line={d.loc.line},col={d.loc.col},"
            f"title={prop('archspec ' + d.name)}::{msg}")


def _escape(text: str) -> str:
    """Workflow-command escaping, as @actions/core does it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def json_results(results: Iterable[tuple[str, Report | None, tuple[Diagnostic, ...]]]) -> str:
    out = []
    for file, report, diags in results:
        entry: dict = {"file": file, "ok": not diags, "errors": [d.as_dict() for d in diags]}
        if report is not None:
            entry["name"] = report.graph.name
            entry["totals"] = report.totals.as_dict()
            entry["output_shape"] = list(report.output.shape)
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
        "input": {"name": g.input.name, "shape": list(g.input.shape), "dtype": g.input.dtype,
                  "symbolic": {d.name: d.size for d in g.input.dims if d.name}},
        "output_shape": list(report.output.shape),
        "totals": report.totals.as_dict(),
        "layers": [_node_dict(n) for n in _visible(report, depth)],
        "conventions": "per sample (batch 1); macs: conv/linear/recurrent multiply-accumulates, bias excluded; "
                       "flops: 2*macs plus bias, activation, norm, pooling and merge work",
    }


def _node_dict(n: NodeReport) -> dict:
    return {"path": n.path, "kind": n.kind, "depth": n.depth, "output_shape": list(n.output.shape),
            "params": n.params, "macs": n.macs, "flops": n.flops, "leaf": n.leaf,
            "line": n.loc.line}


def _visible(report: Report, depth: int | None) -> list[NodeReport]:
    """Leaves, plus containers cut at `depth` (their totals stand for what they hide)."""
    rows = []
    for n in report.nodes[1:]:
        if depth is None:
            if n.leaf:
                rows.append(n)
        elif n.depth == depth or (n.leaf and n.depth < depth):
            rows.append(n)
    return rows


def summary_table(report: Report, depth: int | None = None) -> str:
    rows = [(n.path, n.kind, str(n.output), f"{n.params:,}", f"{n.macs:,}") for n in _visible(report, depth)]
    header = ("layer", "kind", "output", "params", "MACs")
    t = report.totals
    footer = ("total", "", str(report.output), f"{t.params:,}", f"{t.macs:,}")
    widths = [max(len(r[i]) for r in rows + [header, footer]) for i in range(5)]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    rule = "-" * len(line(header))
    g = report.graph
    out = [f"{g.name}: input {g.input.name} {'x'.join(map(str, g.input.shape))} ({g.input.dtype})", rule,
           line(header), rule, *map(line, rows), rule, line(footer), rule,
           f"params {human_units(t.params)}  MACs {human_units(t.macs)}  FLOPs {human_units(t.flops)}  "
           f"activations {human_units(t.activation_bytes)}B per sample"]
    return "\n".join(out)


def compare_table(reports: Sequence[Report]) -> str:
    """The lecture's side-by-side: parameters, MACs and output shape per spec."""
    header = ("spec", "input", "output", "params", "MACs")
    rows = [(r.graph.name, str(r.graph.input.shape and "x".join(map(str, r.graph.input.shape))), str(r.output),
             f"{r.totals.params:,} ({human_units(r.totals.params)})",
             f"{r.totals.macs:,} ({human_units(r.totals.macs)})") for r in reports]
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(5)]
    fmt = lambda row: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(header), "-" * len(fmt(header)), *map(fmt, rows)])
