"""The safe expression evaluator (archspec/expr.py): arithmetic over block parameters, and
nothing else. Every bad input is an ExprError, never another exception, a hang or a side effect;
inside a spec it becomes a located diagnostic."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

import archspec
from archspec import SpecError
from archspec.expr import MAX_EXPR_CHARS, ExprError, evaluate

ENV = {"c": 64, "channels": 32, "k": 3, "s": "same", "flag": True, "f": 0.5}


# --- what works ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("7 // 2", 3),
    ("-7 // 2", -4),
    ("7 % 3", 1),
    ("2 ** 10", 1024),
    ("2 ** 32", 4294967296),
    ("c * 4", 256),
    ("channels // 2", 16),
    ("-c", -64),
    ("+k", 3),
    ("k // 2", 1),
    ("2 if c > 32 else 1", 2),
    ("2 if c > 100 else 1", 1),
    ("min(c, 32, 48)", 32),
    ("max(1, c)", 64),
    ("min(1.5, 2)", 1.5),
    ("1 < 2 <= 2", True),
    ("3 > 2 > 2", False),
    ("c == 64", True),
    ("c != 64", False),
    ("c >= 64 and k < 5", True),
    ("c < 0 or k == 3", True),
    ("not 0", True),
    ("s == 'same'", True),
    ("s if flag else 'valid'", "same"),
    ("true", True),
    ("f * 2", 1.0),
    ("7 / 2", 3.5),
    ("1.5 * 2", 3.0),
])
def test_evaluates(text, value):
    result = evaluate(text, ENV)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize("text, value", [("6 / 3", 2), ("c / 4", 16), ("-8 / 2", -4), ("0 / 5", 0)])
def test_true_division_is_an_exact_int_when_divisible(text, value):
    result = evaluate(text, ENV)
    assert result == value and type(result) is int


def test_true_division_is_a_float_otherwise():
    assert evaluate("c / 3", ENV) == pytest.approx(64 / 3)
    assert type(evaluate("6.0 / 3", ENV)) is float


def test_whitespace_is_ignored():
    assert evaluate("  c *  2 ", ENV) == 128


# --- what is rejected ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    # resource exhaustion
    ("2**2**2**100", "too large"),
    ("10 ** 100", "too large"),
    ("9 ** 9 ** 9", "too large"),
    ("2 ** -1", "negative integer power"),
    ("4611686018427387904 * 2", "out of range"),
    ("1e400", "out of range"),
    ("1e18 * 1e18", "out of range"),
    ("2.0 ** 1024", "cannot be computed"),
    ("(-8) ** 0.5", "not a real number"),
    # division by zero
    ("1 / 0", "division by zero"),
    ("c // 0", "division by zero"),
    ("c % 0", "division by zero"),
    ("c / 0.0", "division by zero"),
    ("c // (k - 3)", "division by zero"),
    # strings are not numbers
    ("'a' * 3", "non-number"),
    ("'a' + 'b'", "non-number"),
    ("s * 2", "non-number"),
    ("-s", "non-number"),
    ("min('a', 'b')", "non-number"),
    ("flag + 1", "non-number"),
    # no attribute access, calls, lambdas, subscripts, comprehensions
    ("().__class__", "not allowed"),
    ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
    ("c.real", "not allowed"),
    ("c.__class__", "not allowed"),
    ("__import__('os')", "only min() and max()"),
    ("__import__('os').system('echo pwned')", "only min() and max()"),
    ("open('/etc/passwd')", "only min() and max()"),
    ("eval('1')", "only min() and max()"),
    ("abs(-1)", "only min() and max()"),
    ("min()", "only min() and max()"),
    ("max(c, key=abs)", "only min() and max()"),
    ("max(*[1, 2])", "not allowed"),
    ("lambda: 1", "not allowed"),
    ("(lambda x: x)(1)", "only min() and max()"),
    ("[1, 2][0]", "not allowed"),
    ("c[0]", "not allowed"),
    ("{'a': 1}['a']", "not allowed"),
    ("[x for x in (1, 2)]", "not allowed"),
    ("(1, 2)", "not allowed"),
    ("{1}", "not allowed"),
    ("f'{c}'", "not allowed"),
    ("c << 2", "not allowed"),
    ("c ^ 1", "not allowed"),
    ("c @ c", "not allowed"),
    ("~c", "not allowed"),
    ("1 in (1,)", "comparisons"),
    ("c is c", "comparisons"),
    ("None", "not allowed"),
    ("...", "not allowed"),
    ("b'x'", "not allowed"),
    ("1j", "not allowed"),
    # not expressions at all
    ("", "cannot parse"),
    ("   ", "cannot parse"),
    ("1 if", "cannot parse"),
    ("(", "cannot parse"),
    ("x := 1", "cannot parse"),
    ("import os", "cannot parse"),
    ("1; 2", "cannot parse"),
    ("c\x00", "cannot parse"),
    ("1 +" * 70 + "1", "longer than"),
    ("(" * 150 + "1" + ")" * 150, "longer than"),
])
def test_rejected(text, fragment):
    start = time.perf_counter()
    with pytest.raises(ExprError) as info:
        evaluate(text, ENV)
    assert time.perf_counter() - start < 0.5
    assert info.value.code == "AS120"
    assert fragment in str(info.value)


def test_length_limit_is_exact():
    ok = "1+" * ((MAX_EXPR_CHARS - 1) // 2) + "1"
    assert len(ok) <= MAX_EXPR_CHARS
    assert evaluate(ok, {}) == (MAX_EXPR_CHARS - 1) // 2 + 1
    with pytest.raises(ExprError, match="longer than"):
        evaluate(ok + "+1", {})


def test_deep_nesting_within_the_length_limit_is_fine():
    assert evaluate("(" * 99 + "1" + ")" * 99, {}) == 1
    assert evaluate("-" * 199 + "1", {}) == -1
    assert evaluate("not " * 49 + "0", {}) is True


def test_unknown_variable_has_a_did_you_mean_hint():
    with pytest.raises(ExprError) as info:
        evaluate("chanels * 2", ENV)
    assert info.value.code == "AS121"
    assert str(info.value) == "unknown variable 'chanels'"
    assert info.value.hint == "did you mean 'channels'?"


def test_unknown_variable_without_a_close_name():
    with pytest.raises(ExprError) as info:
        evaluate("zzz + 1", ENV)
    assert info.value.code == "AS121" and info.value.hint == ""


def test_builtins_are_not_variables():
    for name in ("min", "__builtins__", "os", "print", "True"):
        with pytest.raises(ExprError):
            evaluate(f"{name} + 1", {})


@pytest.mark.parametrize("text", [
    "0.1 + 0.2", "2.0 ** 0.5", "1e-320 / 1e10", "-(2 ** 32)", "1 == 'a'", "'a' < 'b'", "s != 3",
    "max(0.5, 1)", "0 ** 0", "(-1) ** 3", "-0.0", "c % -3", "--c", "1 if 0 else 2 if 0 else 3",
    ")", "1 +", "* c", "c c", "'", "\\", "#", "c # comment", "c\n+1", "\t1", "0x10", "1_000", "0o7",
    "1e-400", "min(c)", "max(1, 2, 3, 4, 5, 6)", "__", "_", "é", "c if c", "yield c", "await c",
    "[*c]", "{**c}", "c.__dict__['x']", "type(c)", "getattr(c, 'x')", "c()", "c(1)(2)", "min(min(1, 2), 3)",
])
def test_never_raises_anything_but_expr_error(text):
    try:
        evaluate(text, ENV)
    except ExprError:
        pass


@pytest.mark.parametrize("text", ["2 < 'a'", "s < 3", "1 < 2 < 'x'", "max(1, 2) >= s"])
def test_mixed_type_ordering_is_an_expr_error(text):
    with pytest.raises(ExprError):
        evaluate(text, ENV)


@pytest.mark.parametrize("text", ["1e18 / 1e-300", "4611686018427387904 / 0.5"])
def test_true_division_result_is_bounded(text):
    with pytest.raises(ExprError):
        evaluate(text, ENV)


# --- through specs ------------------------------------------------------------------------------

HEADER = "archspec: 1\nname: t\ninput: {x: [3, 8, 8]}\n"


def spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return path


def errors(path: Path) -> list[archspec.Diagnostic]:
    with pytest.raises(SpecError) as info:
        archspec.check(path)
    return list(info.value.diagnostics)


def where(d: archspec.Diagnostic) -> tuple[str, int, int]:
    return d.code, d.loc.line, d.loc.col


def test_block_parameter_used_in_expressions(tmp_path):
    path = spec(tmp_path, """\
        blocks:
          cbr:
            params: {c: int, k: {type: int, default: 3}}
            body:
              - conv2d: {out: "c * 2", kernel: k, padding: "k // 2"}
              - relu
        network:
          - cbr: {c: 4}
          - cbr: {c: 8, k: 5}
        """)
    report = archspec.check(path)
    assert report.node("cbr0.conv2d0").output.shape == (8, 8, 8)
    assert report.node("cbr1.conv2d0").output.shape == (16, 8, 8)
    # 5x5 kernel over 8 input channels, 16 filters, bias
    assert report.node("cbr1.conv2d0").params == 16 * 8 * 25 + 16
    assert report.output.shape == (16, 8, 8)


def test_vars_and_repeat_index_in_expressions(tmp_path):
    path = spec(tmp_path, """\
        vars: {base: 4, wide: "base * 2"}
        network:
          - repeat: "base - 1"
            index: i
            body:
              - conv2d: {out: "wide * (i + 1)", kernel: 3, padding: "1 if i < 2 else 0"}
        """)
    report = archspec.check(path)
    assert [n.output.shape for n in report.nodes if n.leaf] == [(8, 8, 8), (16, 8, 8), (24, 6, 6)]


def test_float_block_parameter(tmp_path):
    path = spec(tmp_path, """\
        blocks:
          act:
            params: {slope: float}
            body:
              - leaky_relu: {slope: "slope / 2"}
        network:
          - act: {slope: 1}
        """)
    layer = archspec.check(path).graph.nodes[0]
    assert layer.params.slope == 0.5


def test_unknown_variable_in_a_spec_is_located(tmp_path):
    path = spec(tmp_path, """\
        vars: {chans: 4}
        network:
          - relu
          - conv2d: {out: "chanz * 2", kernel: 3}
        """)
    d, = errors(path)
    assert where(d) == ("AS121", 7, 19)
    assert d.message == "unknown variable 'chanz' in 'chanz * 2'"
    assert d.hint == "did you mean 'chans'?"
    assert d.path == "network[1].conv2d.out"


def test_unknown_variable_in_a_block_body_is_located_with_its_call_site(tmp_path):
    path = spec(tmp_path, """\
        blocks:
          cbr:
            params: {c: int}
            body:
              - conv2d: {out: "c * q", kernel: 3}
        network:
          - relu
          - cbr: {c: 4}
        """)
    d, = errors(path)
    assert where(d) == ("AS121", 8, 23)
    assert d.path == "blocks.cbr.body[0].conv2d.out"
    assert [(note, loc.line, loc.col) for note, loc in d.related] == [("in block 'cbr' invoked here", 11, 5)]


@pytest.mark.parametrize("expr, code, fragment", [
    ("1/0", "AS120", "division by zero"),
    ("2**2**2**100", "AS120", "too large"),
    ("__import__('os').system('true')", "AS120", "only min() and max()"),
    ("().__class__", "AS120", "not allowed"),
    ("c", "AS103", "expected an integer"),  # a bare unknown word is a literal string
])
def test_bad_expression_in_a_spec(tmp_path, expr, code, fragment):
    path = spec(tmp_path, f'network:\n  - conv2d: {{out: "{expr}", kernel: 3}}\n')
    d, = errors(path)
    assert where(d) == (code, 5, 19)
    assert fragment in d.message


def test_non_integral_division_is_a_type_error_for_channels(tmp_path):
    d, = errors(spec(tmp_path, 'network:\n  - conv2d: {out: "7 / 2", kernel: 3}\n'))
    assert where(d) == ("AS103", 5, 19)
    assert "3.5" in d.message


def test_a_bad_expression_is_reported_once(tmp_path):
    d, = errors(spec(tmp_path, 'network:\n  - conv2d: {out: 4, kernel: "q + 1"}\n'))
    assert where(d) == ("AS121", 5, 30)


def test_a_bad_expression_in_a_repeat_is_reported_once(tmp_path):
    path = spec(tmp_path, """\
        network:
          - repeat: 2
            body:
              - conv2d: {out: 4, kernel: "q + 1"}
        """)
    assert [where(d) for d in errors(path)] == [("AS121", 7, 34)]


def test_mixed_type_comparison_in_a_spec_is_a_diagnostic(tmp_path):
    path = spec(tmp_path, """\
        vars: {mode: same}
        network:
          - conv2d: {out: 4, kernel: 3, padding: "1 if mode < 3 else 0"}
        """)
    d, = errors(path)
    assert where(d) == ("AS120", 6, 42)


def test_expression_cannot_smuggle_infinity_into_a_layer(tmp_path):
    errors(spec(tmp_path, 'network:\n  - leaky_relu: {slope: "1e18 / 1e-300"}\n'))
