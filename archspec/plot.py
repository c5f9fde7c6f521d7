"""`archspec plot`: the zoo as the lecture's "operations vs. accuracy vs. parameters" chart.

Each spec is a bubble: one axis the MACs (or FLOPs, or parameters), the other the published top-1
accuracy that its `meta:` records with a source (or any other count), the bubble's area the
parameters (Canziani, Paszke & Culurciello 2016, "An analysis of deep neural network models for
practical applications", Fig. 2, draws the same). The points are exact checker counts; matplotlib
(the `plot` extra, imported only here) draws them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .analyze import Report
from .errors import ArchspecError
from .render import human_units

AXES = {"macs": "MACs per sample", "flops": "FLOPs per sample", "params": "parameters",
        "top1": "top-1 accuracy (%)", "top5": "top-5 accuracy (%)"}
COUNTS = ("macs", "flops", "params")
FORMATS = (".svg", ".png", ".pdf")


@dataclass(frozen=True, slots=True)
class Point:
    name: str
    x: float
    y: float
    params: int
    source: str  # where the accuracy comes from; "" for counts


def points(reports: Sequence[Report], x: str = "macs", y: str = "top1") -> tuple[list[Point], list[str]]:
    """The bubbles, and the names of the specs that record no value for an axis (left out)."""
    for axis in (x, y):
        if axis not in AXES:
            raise ArchspecError(f"unknown axis '{axis}'; choose one of {', '.join(AXES)}")
    out, missing = [], []
    for report in reports:
        values = {key: getattr(report.totals, key) for key in COUNTS}
        meta = report.graph.spec.meta
        for key in ("top1", "top5"):
            if meta is not None and getattr(meta, key) is not None:
                values[key] = getattr(meta, key)
        if x not in values or y not in values:
            missing.append(report.graph.name)
            continue
        cited = meta.source if meta is not None and {x, y} & {"top1", "top5"} else ""
        out.append(Point(report.graph.name, values[x], values[y], report.totals.params, cited))
    return out, missing


def write(reports: Sequence[Report], output: Path, x: str = "macs", y: str = "top1") -> list[str]:
    """Draws the chart to .svg/.png/.pdf; returns the specs left out for want of a value."""
    from .files import atomic_write

    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        raise ArchspecError(f"cannot plot to '{output.name}': use one of {', '.join(FORMATS)}")
    fig, missing = figure(reports, x, y)
    fmt = suffix[1:]
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "archspec"}):  # text stays text; stable ids
        atomic_write(output, lambda fh: fig.savefig(fh, format=fmt, metadata=_metadata(fmt)))
    return missing


def figure(reports: Sequence[Report], x: str = "macs", y: str = "top1") -> tuple[Any, list[str]]:
    """The chart as a matplotlib Figure (no pyplot, no global backend), and the specs left out."""
    pts, missing = points(reports, x, y)
    if not pts:
        raise ArchspecError(f"no spec records {y if y not in COUNTS else x}; accuracies come from a spec's "
                            "`meta: {top1: ..., source: ...}`; for counts only: --x params --y macs")
    from matplotlib.figure import Figure  # the `plot` extra
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.add_subplot()
    biggest = max(p.params for p in pts) or 1
    sizes = [40 + 2400 * p.params / biggest for p in pts]  # area proportional to the parameters
    ax.scatter([p.x for p in pts], [p.y for p in pts], s=sizes, alpha=0.45, c=range(len(pts)), cmap="viridis",
               edgecolors="black", linewidths=0.6)
    for p in pts:
        ax.annotate(p.name, (p.x, p.y), xytext=(5, 4), textcoords="offset points", fontsize=8)
    for axis, scale, set_scale, values in ((x, ax.xaxis, ax.set_xscale, [p.x for p in pts]),
                                           (y, ax.yaxis, ax.set_yscale, [p.y for p in pts])):
        if axis not in COUNTS:
            continue
        if min(values) > 0 and max(values) / min(values) > 20:
            set_scale("log")
            scale.set_major_locator(LogLocator(subs=(1, 2, 5)))
            scale.set_minor_formatter(NullFormatter())
        scale.set_major_formatter(FuncFormatter(lambda v, _: human_units(int(v))))  # 2G, not 2x10^9
    ax.set_xlabel(AXES[x])
    ax.set_ylabel(AXES[y])
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(f"{AXES[y]} vs. {AXES[x]}; bubble area: parameters", fontsize=10)
    sources = sorted({p.source for p in pts if p.source})
    urls = sorted({u for s in sources for u in re.findall(r"https?://\S+", s)})
    if sources:  # each spec cites its own; the picture names where they come from
        cited = "; ".join(sources) if len(sources) <= 2 else ", ".join(urls) or f"{len(sources)} sources"
        fig.text(0.01, 0.005, f"accuracy as cited in the specs' meta.source: {cited}", fontsize=6, alpha=0.7)
    return fig, missing


def _metadata(fmt: str) -> dict:
    """No creation date in the file, so the same zoo draws the same bytes."""
    return {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}[fmt]
