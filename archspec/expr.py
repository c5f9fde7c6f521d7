"""Safe arithmetic over block parameters (`channels * 4`, `2 if i == 0 else 1`) and the sizes of a
block's input (`in.channels`, `in.shape[0]`).

`ast.parse` only parses; we walk a whitelist of node types and compute ourselves, so no
user string can call, import or index anything. Operands and results are bounded so that
`2**2**2**100` is an error, not a hang.
"""

from __future__ import annotations

import ast
import io
import math
import operator
import re
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from .errors import did_you_mean

MAX_EXPR_CHARS = 200
MAX_ABS = 1 << 62  # larger than any real tensor dimension or count
IN = "in."  # the environment's key for a block's input type: not a name, so only `in.x` reads it
_IN_NAME = "__in__"  # what `in` is parsed as: `in` is a Python keyword, so `in.channels` does not parse as is
_IN_USE = re.compile(r"(?<![\w.])in\s*\.")


@dataclass(frozen=True, slots=True)
class TypeView:
    """What an expression may read of the type of a block's input: a size by axis name
    (`in.channels`) or by position (`in.shape[0]`). Only sizes: nothing else of the tensor (its
    producer, its values) exists while the spec is resolved."""

    shape: tuple[int, ...]
    axes: tuple[str, ...]  # per axis its name ("channels", "height", ...), "" for an unnamed one
    layout: str  # "CHW", "TF", ... for messages that read the same at every invocation
    varying: frozenset[int] = frozenset()  # axes whose size follows a dynamic (symbolic) input axis
    dynamic: str = ""  # the dynamic input axes' names, for the message
    undecided: str = ""  # the layer before that fails at other sizes, and why (every axis then counts as varying)
    known: frozenset[str] = frozenset()  # the axis names of every layout: reading one the input lacks is a misread

    def size(self, attr: str) -> int:
        if attr == "shape":
            raise ExprError("AS120", "in.shape is a tuple of sizes; read one of them, e.g. in.shape[0]")
        if attr not in self.axes or not attr:
            named = [a for a in self.axes if a]
            listing = ", ".join(f"in.{a}" for a in named + ["shape[i]"])
            raise ExprError("AS121", f"the block's input (layout {self.layout}) has no axis '{attr}'",
                            did_you_mean(attr, named) or f"it has {listing}", misread=attr in self.known)
        return self.at(self.axes.index(attr), f"in.{attr}")

    def at(self, axis: int, text: str) -> int:
        if axis in self.varying and self.undecided:
            raise ExprError("AS120", f"{text}: archspec cannot tell whether it follows the dynamic input axis "
                            f"{self.dynamic}, as {self.undecided}",
                            "make that layer accept other sizes, or give the dynamic axis a fixed size")
        if axis in self.varying:
            raise ExprError("AS120", f"{text} follows the dynamic input axis {self.dynamic}; a layer's "
                            "parameters must be the same at every size",
                            "read a fixed axis (channels, features), or give the dynamic axis a fixed size")
        return self.shape[axis]


Value = int | float | bool | str | TypeView


class ExprError(Exception):
    """A bad expression; `code` is the diagnostic code, message is user-facing. `misread`: it reads an
    axis a block's input of another layout or rank would have (`in.features` of an image), so the
    mistake may be the value the block is given rather than the expression (`deferred` decides)."""

    def __init__(self, code: str, message: str, hint: str = "", misread: bool = False):
        super().__init__(message)
        self.code, self.hint, self.misread = code, hint, misread


_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Div: None, ast.Pow: None,
}
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}


def _make_divisible(v: Value, divisor: Value, min_value: Value = None) -> int:
    """The nearest multiple of `divisor` not below 90% of `v` (MobileNet/EfficientNet/RegNet width
    rule: torchvision.models._utils._make_divisible)."""
    if divisor <= 0:
        raise ExprError("AS120", f"make_divisible needs a positive divisor, got {divisor}")
    low = divisor if min_value is None else min_value
    new = max(low, int(v + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * v else new)


# name -> (function, fewest and most arguments); min/max take one list of numbers
_FUNCS = {"min": (min, 1, None), "max": (max, 1, None), "round": (round, 1, 1), "floor": (math.floor, 1, 1),
          "ceil": (math.ceil, 1, 1), "make_divisible": (_make_divisible, 2, 3)}
_ALLOWED = "only min() and max() may be called, and round(), floor(), ceil(), make_divisible(v, divisor)"
_IDENT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789")
_OPERATOR_CHARS = set("+-*/%()<>=")


def looks_like_expression(text: str) -> bool:
    """A string with an operator is meant as arithmetic; a bare word may be an option like `same`;
    `in.channels` reads the block's input."""
    words = text.split()
    return (any(ch in _OPERATOR_CHARS for ch in text) or bool(_IN_USE.search(text))
            or (len(words) > 1 and (words[0] == "not" or {"if", "and", "or"} & set(words))))


def is_identifier(text: str) -> bool:
    return bool(text) and text.isidentifier() and set(text) <= _IDENT_CHARS


class Steps:
    """A budget of evaluation steps (syntax nodes visited) shared by every expression of one spec:
    each expression is short, but a repeat can evaluate it a hundred thousand times."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise ExprError("AS002", f"evaluating the spec's expressions takes more than {self.limit:,} steps",
                            "raise it with --max-expr-steps if this spec is trusted")


def evaluate(text: str, env: Mapping[str, Value], steps: Steps | None = None) -> Value:
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError("AS120", f"expression longer than {MAX_EXPR_CHARS} characters")
    tree = _parse(text.strip())
    if steps is not None:
        steps.take(_size(tree))  # charged up front: a visit never takes more steps than the tree has nodes
    try:
        return _Evaluator(env).visit(tree)
    except ExprError as exc:
        if _IN_NAME not in str(exc):
            raise
        raise ExprError(exc.code, str(exc).replace(_IN_NAME + " ", "in").replace(_IN_NAME, "in"), exc.hint,
                        exc.misread) from None


@lru_cache(maxsize=4096)
def _size(tree: ast.expr) -> int:
    return sum(1 for _ in ast.walk(tree))


@lru_cache(maxsize=4096)
def _parse(text: str) -> ast.expr:
    """Parsed once per distinct text: a ResNet-152 evaluates the same few expressions hundreds of times."""
    try:
        return ast.parse(_rename_in(text) if _IN_USE.search(text) else text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError, tokenize.TokenError, IndentationError):
        raise ExprError("AS120", f"cannot parse expression {text!r}") from None


def reads_input(text: str) -> bool:
    """Whether a spec string may read `in` (a block holding one is expanded once its input's type is known)."""
    return bool(_IN_USE.search(text))


def _rename_in(text: str) -> str:
    """`in.channels` -> `__in__.channels`: the keyword `in` renamed where it is a name followed by a
    dot (tokens, so a string constant that contains "in." is left alone)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    out = [(tokenize.NAME, _IN_NAME) if t.type == tokenize.NAME and t.string == "in" and i + 1 < len(tokens)
           and tokens[i + 1].string == "." else (t.type, t.string) for i, t in enumerate(tokens)]
    return tokenize.untokenize(out)


class _Evaluator:
    def __init__(self, env: Mapping[str, Value]):
        self.env = env

    def visit(self, node: ast.AST) -> Value:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise ExprError("AS120", f"'{ast.unparse(node)}' is not allowed in an expression",
                            "expressions may use numbers, parameters, + - * / // % **, comparisons, "
                            "`a if cond else b`, min() and max()")
        return method(node)

    def visit_Constant(self, node: ast.Constant) -> Value:
        if isinstance(node.value, (bool, int, float)) or isinstance(node.value, str):
            return _bounded(node.value)
        raise ExprError("AS120", f"constant {node.value!r} is not allowed")

    def visit_Name(self, node: ast.Name) -> Value:
        if node.id == _IN_NAME:
            raise ExprError("AS120", "`in` is a type, not a number; read one of its sizes",
                            "e.g. in.channels, in.shape[0]")
        if node.id in self.env:
            return self.env[node.id]
        if node.id in ("true", "false"):
            return node.id == "true"
        raise ExprError("AS121", f"unknown variable '{node.id}'",
                        did_you_mean(node.id, (n for n in self.env if n != IN)))

    def input_view(self, node: ast.expr, whole: ast.expr) -> TypeView:
        """The base of `in.x`: only the name `in`, and only where a block's input is known."""
        if not (isinstance(node, ast.Name) and node.id == _IN_NAME):
            raise ExprError("AS120", f"'{ast.unparse(whole)}' is not allowed in an expression: "
                            "only `in` has attributes (in.channels, in.shape[i])")
        view = self.env.get(IN)
        if not isinstance(view, TypeView):
            raise ExprError("AS121", "`in` is defined only inside a block's body: it is the value the block reads",
                            "pass the size to the block as a parameter, or move these layers into a block")
        return view

    def visit_Attribute(self, node: ast.Attribute) -> Value:
        return self.input_view(node.value, node).size(node.attr)

    def visit_Subscript(self, node: ast.Subscript) -> Value:
        if not (isinstance(node.value, ast.Attribute) and node.value.attr == "shape"):
            raise ExprError("AS120", f"'{ast.unparse(node)}' is not allowed in an expression: "
                            "only in.shape can be indexed")
        view = self.input_view(node.value.value, node)
        index = self.visit(node.slice)
        if not isinstance(index, int) or isinstance(index, bool) or not -len(view.shape) <= index < len(view.shape):
            raise ExprError("AS120", f"in.shape[{index!r}]: the block's input (layout {view.layout}) has "
                            f"{len(view.shape)} axes", f"index 0 to {len(view.shape) - 1}",
                            misread=isinstance(index, int) and not isinstance(index, bool))
        return view.at(index % len(view.shape), f"in.shape[{index}]")

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Value:
        value = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return not value
        _numeric(value, node)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return +value
        raise ExprError("AS120", "operator not allowed")

    def visit_BinOp(self, node: ast.BinOp) -> Value:
        if type(node.op) not in _BINARY:
            raise ExprError("AS120", f"operator in '{ast.unparse(node)}' is not allowed")
        left, right = self.visit(node.left), self.visit(node.right)
        _numeric(left, node)
        _numeric(right, node)
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise ExprError("AS120", f"division by zero in '{ast.unparse(node)}'")
        if isinstance(node.op, ast.Pow):
            return _power(left, right, node)
        if isinstance(node.op, ast.Div):
            # Exact when it divides: channel arithmetic stays integral.
            if isinstance(left, int) and isinstance(right, int) and left % right == 0:
                return left // right
            return _bounded(left / right)
        return _bounded(_BINARY[type(node.op)](left, right))

    def visit_Compare(self, node: ast.Compare) -> Value:
        left = self.visit(node.left)
        for op, comparator in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE:
                raise ExprError("AS120", "only == != < <= > >= comparisons are allowed")
            right = self.visit(comparator)
            try:
                holds = _COMPARE[type(op)](left, right)
            except TypeError:
                raise ExprError("AS120", f"cannot compare {left!r} with {right!r} in '{ast.unparse(node)}'") from None
            if not holds:
                return False
            left = right
        return True

    def visit_BoolOp(self, node: ast.BoolOp) -> Value:
        values = [bool(self.visit(v)) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)

    def visit_IfExp(self, node: ast.IfExp) -> Value:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_Call(self, node: ast.Call) -> Value:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords or not node.args:
            raise ExprError("AS120", f"'{ast.unparse(node)}' is not allowed; {_ALLOWED}")
        fn, least, most = _FUNCS[node.func.id]
        if len(node.args) < least or (most is not None and len(node.args) > most):
            raise ExprError("AS120", f"'{ast.unparse(node)}': {node.func.id}() takes "
                            f"{least if least == most else f'{least} to {most}'} argument{'s' * (most != 1)}")
        args = [self.visit(a) for a in node.args]
        for a in args:
            _numeric(a, node)
        if most is None:
            return fn(args)
        return _bounded(fn(*args))


def _numeric(value: Value, node: ast.AST) -> None:
    if isinstance(value, (str, bool, TypeView)) or value is None:
        raise ExprError("AS120", f"arithmetic on a non-number in '{ast.unparse(node)}' "
                        f"(got {type(value).__name__} {value!r})")


def _power(base: Value, exp: Value, node: ast.AST) -> Value:
    if isinstance(exp, int) and isinstance(base, int):
        if exp < 0:
            raise ExprError("AS120", f"negative integer power in '{ast.unparse(node)}'")
        if base not in (0, 1, -1) and exp * (abs(base).bit_length() - 1) > 62:  # |result| >= 2**that
            raise ExprError("AS120", f"'{ast.unparse(node)}' is too large")
    elif abs(exp) > 1024:
        raise ExprError("AS120", f"'{ast.unparse(node)}' is too large")
    try:
        return _bounded(base ** exp)
    except (OverflowError, ZeroDivisionError):
        raise ExprError("AS120", f"'{ast.unparse(node)}' cannot be computed") from None


def _bounded(value: Value) -> Value:
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, complex):
        raise ExprError("AS120", "result is not a real number")
    if abs(value) > MAX_ABS or value != value:  # also rejects NaN
        raise ExprError("AS120", f"value {value!r} is out of range")
    return value
