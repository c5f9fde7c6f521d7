"""Symbolic dimensions: an input axis a spec declares dynamic (`[time=50, 128]`, `[3, h=224, w=224]`)
is a `SymInt` during analysis, an `int` holding the nominal size (so every shape and cost rule runs
unchanged and every count is the one at the declared size) that also carries the integer expression
the rules computed from the symbols. Expressions are linear combinations of atoms (a symbol, or a
floor division, remainder or product that is not linear in the symbols), canonical, so two branches
that compute the same size the same way compare equal for every size. Every comparison a rule makes
on a symbolic size is recorded as a `Guard`: the decision taken at the nominal size, which must be
taken again at any other size for the analysis to hold there. Pure Python, no torch.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

Env = Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Op:
    """An atom that is not linear in the symbols: `a // b`, `a % b` or `a * b` (Python's floor semantics)."""

    op: str  # "//", "%", "*"
    args: tuple[Lin, Lin]

    def at(self, env: Env) -> int:
        a, b = (x.at(env) for x in self.args)
        return _OPS[self.op](a, b)

    def __str__(self) -> str:
        a, b = (_operand(x) for x in self.args)
        return f"{a} {self.op} {b}"


def _operand(x: Lin) -> str:
    """A bare symbol or constant as is, anything else in parentheses."""
    return str(x) if not x.terms or (len(x.terms) == 1 and not x.const and x.terms[0][1] == 1
                                     and isinstance(x.terms[0][0], str)) else f"({x})"


_OPS: dict[str, Callable[[int, int], int]] = {"//": operator.floordiv, "%": operator.mod, "*": operator.mul}
Atom = str | Op


def _key(atom: Atom) -> str:
    return atom if isinstance(atom, str) else "~" + repr(atom)


@dataclass(frozen=True, slots=True)
class Lin:
    """const + sum(coeff * atom): canonical (atoms sorted, no zero coefficients), so `==` is identity of
    the computation for every size."""

    terms: tuple[tuple[Atom, int], ...] = ()
    const: int = 0

    @staticmethod
    def of(x: int) -> Lin:
        return x.expr if isinstance(x, SymInt) else Lin((), int(x))

    @staticmethod
    def symbol(name: str) -> Lin:
        return Lin(((name, 1),))

    def at(self, env: Env) -> int:
        return self.const + sum(c * (env[a] if isinstance(a, str) else a.at(env)) for a, c in self.terms)

    @property
    def symbols(self) -> frozenset[str]:
        out: set[str] = set()
        for a, _ in self.terms:
            out |= {a} if isinstance(a, str) else a.args[0].symbols | a.args[1].symbols
        return frozenset(out)

    @property
    def affine(self) -> bool:
        """Linear in the symbols themselves: n -> a*n + b (conv and pool at stride 1, linear, rnn)."""
        return all(isinstance(a, str) for a, _ in self.terms)

    def coefficient(self, name: str) -> int:
        return dict(self.terms).get(name, 0)

    def __add__(self, other: Lin) -> Lin:
        acc = dict(self.terms)
        for a, c in other.terms:
            acc[a] = acc.get(a, 0) + c
        return Lin(tuple(sorted(((a, c) for a, c in acc.items() if c), key=lambda t: _key(t[0]))),
                   self.const + other.const)

    def scale(self, k: int) -> Lin:
        return Lin(tuple((a, c * k) for a, c in self.terms) if k else (), self.const * k)

    def __str__(self) -> str:
        parts = []
        for a, c in self.terms:
            name = str(a) if isinstance(a, str) or abs(c) == 1 else f"({a})"
            parts.append(("- " if c < 0 else "+ ") + (name if abs(c) == 1 else f"{abs(c)}*{name}"))
        if self.const or not parts:
            parts.append(("- " if self.const < 0 else "+ ") + str(abs(self.const)))
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else "-" + text[2:]


@dataclass(frozen=True, slots=True)
class Guard:
    """A comparison a rule made on a symbolic size, and its outcome at the nominal sizes."""

    op: str  # "==", "!=", "<", "<=", ">", ">="
    left: Lin
    right: Lin
    outcome: bool

    def holds(self, env: Env) -> bool:
        return _CMP[self.op](self.left.at(env), self.right.at(env)) == self.outcome

    @property
    def symbols(self) -> frozenset[str]:
        return self.left.symbols | self.right.symbols

    def __str__(self) -> str:
        op = self.op if self.outcome else _NEGATE[self.op]
        return f"{self.left} {op} {self.right}"


_CMP: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_NEGATE = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_GUARDS: ContextVar[list[Guard] | None] = ContextVar("archspec_guards", default=None)


@contextmanager
def recording() -> Iterator[list[Guard]]:
    """Collects the guards of the comparisons made inside the block."""
    guards: list[Guard] = []
    token = _GUARDS.set(guards)
    try:
        yield guards
    finally:
        _GUARDS.reset(token)


def _make(value: int, expr: Lin) -> int:
    """A plain int where the expression is a constant (the size is the same at every size of the symbols)."""
    return SymInt(value, expr) if expr.terms else int(value)


def _floor(a: Lin, b: Lin, op: str) -> Lin:
    if not b.terms and b.const > 0 and all(c % b.const == 0 for _, c in a.terms):
        k = b.const  # (k*m*n + c) // k = m*n + c // k, exactly, for integer atoms n
        if op == "//":
            return Lin(tuple((t, c // k) for t, c in a.terms), a.const // k)
        return Lin((), a.const % k)
    return Lin(((Op(op, (a, b)), 1),))


class SymInt(int):
    """An int at the nominal size that carries its expression in the symbols (see the module doc).
    Arithmetic keeps the expression; comparisons answer at the nominal size and record a guard."""

    expr: Lin

    def __new__(cls, value: int, expr: Lin) -> SymInt:
        self = super().__new__(cls, value)
        self.expr = expr
        return self

    def __repr__(self) -> str:
        return int.__repr__(self)

    __str__ = __repr__

    def __hash__(self) -> int:
        return int.__hash__(self)

    def __add__(self, o: Any) -> Any:
        return _make(int(self) + o, self.expr + Lin.of(o)) if isinstance(o, int) else NotImplemented

    __radd__ = __add__

    def __sub__(self, o: Any) -> Any:
        return _make(int(self) - o, self.expr + Lin.of(o).scale(-1)) if isinstance(o, int) else NotImplemented

    def __rsub__(self, o: Any) -> Any:
        return _make(o - int(self), Lin.of(o) + self.expr.scale(-1)) if isinstance(o, int) else NotImplemented

    def __neg__(self) -> int:
        return _make(-int(self), self.expr.scale(-1))

    def __pos__(self) -> int:
        return self

    def __mul__(self, o: Any) -> Any:
        if not isinstance(o, int):
            return NotImplemented
        other = Lin.of(o)
        if not other.terms:
            return _make(int(self) * int(o), self.expr.scale(other.const))
        pair = tuple(sorted((self.expr, other), key=repr))
        return _make(int(self) * int(o), Lin(((Op("*", pair), 1),)))  # type: ignore[arg-type]

    __rmul__ = __mul__

    def __floordiv__(self, o: Any) -> Any:
        return _make(int(self) // int(o), _floor(self.expr, Lin.of(o), "//")) if isinstance(o, int) else NotImplemented

    def __rfloordiv__(self, o: Any) -> Any:
        return _make(int(o) // int(self), _floor(Lin.of(o), self.expr, "//")) if isinstance(o, int) else NotImplemented

    def __mod__(self, o: Any) -> Any:
        return _make(int(self) % int(o), _floor(self.expr, Lin.of(o), "%")) if isinstance(o, int) else NotImplemented

    def __rmod__(self, o: Any) -> Any:
        return _make(int(o) % int(self), _floor(Lin.of(o), self.expr, "%")) if isinstance(o, int) else NotImplemented

    def _compare(self, o: Any, op: str) -> Any:
        if not isinstance(o, int):
            return NotImplemented
        outcome = _CMP[op](int(self), int(o))
        other = Lin.of(o)
        if (self.expr + other.scale(-1)).terms:  # a constant difference decides it for every size
            guards = _GUARDS.get()
            if guards is not None:
                guards.append(Guard(op, self.expr, other, outcome))
        return outcome

    def __eq__(self, o: object) -> Any:  # type: ignore[override]
        return self._compare(o, "==")

    def __ne__(self, o: object) -> Any:  # type: ignore[override]
        return self._compare(o, "!=")

    def __lt__(self, o: Any) -> Any:
        return self._compare(o, "<")

    def __le__(self, o: Any) -> Any:
        return self._compare(o, "<=")

    def __gt__(self, o: Any) -> Any:
        return self._compare(o, ">")

    def __ge__(self, o: Any) -> Any:
        return self._compare(o, ">=")


def nominal(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Plain ints: what the rest of archspec (costs, lowering, emission) reads."""
    return tuple(int(d) for d in shape)
