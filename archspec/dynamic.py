"""Which declared symbolic axes can vary (`archspec.symbolic`), decided from the checker's report alone:
a symbol that sizes a layer's parameters is pinned, and a symbol is undecidable when no size near its
nominal one keeps every decision the shape rules took there (its guards). Export refuses such an axis
dynamic (`exporter.plan`); `archspec check` warns about it (AS403) with the same reason. No torch,
no onnx: this runs inside every check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .analyze import Report
from .errors import Diagnostic
from .symbolic import Guard

SEQ_OFFSETS = (7, 8, 16, 32)  # second size of a symbolic axis: the first nominal+k where every guard holds
SCAN_OFFSETS = range(1, 65)  # then any nominal+k: rules that hold on one residue (ceil-mode pools) need it
# A second size must also hold one PERIOD further: a multiple of every divisor a rule floors by (up to
# 64), so a decision that repeats with the size (a ceil-mode pool's residue) holds there and one that
# holds in a band only (a strided patch conv feeding a fixed position embedding: h // 4 == 8) fails.
PERIOD = math.lcm(*range(1, 65))


@dataclass(frozen=True, slots=True)
class FixedSymbol:
    """A declared symbolic axis the network accepts at its nominal size only, and the layer that fixes it:
    through its parameter count (`guard` None) or through a decision its shape rule took (`guard`)."""

    symbol: str
    size: int  # the nominal size
    node: int  # index into report.graph.nodes
    guard: Guard | None = None
    why: str = ""  # for a guard: at which sizes it fails

    def reason(self, where: str) -> str:
        """`the parameters of linear 'linear0' take their size from it`: what export and check both say."""
        if self.guard is None:
            return f"the parameters of {where} take their size from it"
        return f"the shape rule of {where} needs {self.need}"

    @property
    def need(self) -> str:
        return f"{self.guard}, which {self.why}"

    def explain(self, where: str) -> str:
        return (f"input axis '{self.symbol}' is declared symbolic ({self.symbol}={self.size}), but the network "
                f"only accepts {self.symbol}={self.size}: {self.reason(where)}")


def pinned(report: Report, names: Iterable[str]) -> list[FixedSymbol]:
    """Each of `names` that sizes a layer's parameters (a linear after a flatten of the time axis), with
    the first such layer."""
    sym = report.symbols
    out = []
    for name in names:
        k = next((k for k, symbols in sym.pins if name in symbols), None)
        if k is not None:
            out.append(FixedSymbol(name, sym.nominal[name], k))
    return out


def second_sizes(report: Report, names: Iterable[str]) -> tuple[dict[str, int], list[FixedSymbol]]:
    """For each symbol in turn, the first nominal+k (k in SEQ_OFFSETS, then 2x nominal, then
    SCAN_OFFSETS) at which every guard holds with the sizes already chosen, and still holds with all of
    them one PERIOD larger: the checker's types hold there by construction, and for every larger size
    of the same residues. A symbol for which none holds stays at its nominal size and is returned, with
    the first rule whose decision changes (only the preferred offsets are named)."""
    sym = report.symbols
    chosen: dict[str, int] = {}
    fixed: list[FixedSymbol] = []
    for name in names:
        size = sym.nominal[name]
        tried: list[tuple[int, list[tuple[int, Guard]], bool]] = []
        preferred = tuple(dict.fromkeys(SEQ_OFFSETS + (size,)))  # 2x nominal is nominal+32 at 32: try it once
        for k in preferred + tuple(k for k in SCAN_OFFSETS if k not in preferred):
            env = {**chosen, name: size + k}
            failed, far = sym.holds(env), False
            if not failed:
                failed, far = sym.holds({n: v + PERIOD for n, v in env.items()}), True
            if not failed:
                chosen[name] = size + k
                break
            if k in preferred:
                tried.append((size + k, failed, far))
        else:
            fixed.append(_undecided(report, name, tried))
    return chosen, fixed


def _undecided(report: Report, name: str, tried: list[tuple[int, list[tuple[int, Guard]], bool]]) -> FixedSymbol:
    """The first rule whose decision at the nominal size changes elsewhere, and at which sizes."""
    size = report.symbols.nominal[name]
    k, guard = tried[0][1][0]
    e = guard.left + guard.right.scale(-1)
    sizes = ", ".join(str(s) for s, failed, far in tried if not far and any(g is guard for _, g in failed))
    if guard.op == "==" and guard.outcome and e.affine and e.symbols == {name}:
        why = f"holds only at {name}={size}"  # a*n + b = 0: one n
    else:
        where = f"but not at {sizes}" if sizes else "and at sizes near it, but not at larger ones"
        why = (f"holds at {name}={size} {where}, nor at a size up to {name}={size + SCAN_OFFSETS[-1]} that "
               f"repeats at larger sizes; it cannot be decided symbolically")
    return FixedSymbol(name, size, k, guard, why)


def fixed_symbols(report: Report) -> list[FixedSymbol]:
    """Every declared symbol that a default export (all of them dynamic) would refuse: the pinned ones,
    then those undecidable with the pinned ones held at their nominal size."""
    names = list(report.symbols.nominal)
    pins = pinned(report, names)
    held = {f.symbol for f in pins}
    return pins + second_sizes(report, [n for n in names if n not in held])[1]


def warnings(report: Report) -> tuple[Diagnostic, ...]:
    """AS403, one per layer and reason, naming every symbol it fixes: h and w pinned by one linear, or
    both needed at their nominal size by one concat, are one mistake."""
    groups: dict[tuple[int, bool], list[FixedSymbol]] = {}
    for f in fixed_symbols(report):
        groups.setdefault((f.node, f.guard is None), []).append(f)
    out = []
    for (k, pin), fs in groups.items():
        node = report.graph.nodes[k]
        where = f"{node.kind} '{node.scope}'"
        if len(fs) == 1:
            message = fs[0].explain(where)
        else:
            sizes = ", ".join(f"{f.symbol}={f.size}" for f in fs)
            reason = (f"the parameters of {where} take their size from them" if pin else
                      f"the shape rule of {where} needs {'; and '.join(f.need for f in fs)}")
            message = (f"input axes {' and '.join(repr(f.symbol) for f in fs)} are declared symbolic ({sizes}), "
                       f"but the network only accepts {sizes}: {reason}")
        axes, sizes = ("this axis", "its size as a number") if len(fs) == 1 else ("these axes", "their sizes as numbers")
        out.append(Diagnostic("AS403", message, node.loc, node.source,
                              f"`archspec export` refuses {axes} dynamic: declare {sizes}, "
                              "or export with --dynamic batch", node.calls, severity="warning"))
    return tuple(out)
