"""`slice` on a symbolic axis keeps the axis's expression (it was read as a plain int, so the checker
took a varying axis for a fixed one): Python's bounds, written so the rule records its guards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import archspec
from archspec.layers.shape import _slice_length
from archspec.symbolic import Lin, SymInt, recording


@given(st.integers(1, 40), st.integers(-45, 45), st.none() | st.integers(-45, 45), st.integers(1, 5))
def test_length_is_pythons(n: int, start: int, end: int | None, step: int) -> None:
    assert _slice_length(n, start, end, step) == len(range(n)[start:end:step])


@given(st.integers(1, 30), st.integers(0, 30), st.integers(-35, 35), st.none() | st.integers(-35, 35),
       st.integers(1, 4))
def test_where_the_guards_hold_the_expression_is_pythons(n: int, other: int, start: int, end: int | None,
                                                        step: int) -> None:
    with recording() as guards:
        got = _slice_length(SymInt(n, Lin.symbol("t")), start, end, step)
    if all(g.holds({"t": other}) for g in guards):
        assert Lin.of(got).at({"t": other}) == len(range(other)[start:end:step])


def test_a_sliced_symbolic_axis_stays_dynamic(tmp_path: Path) -> None:
    from archspec.exporter import export_model

    path = tmp_path / "s.yaml"
    path.write_text("archspec: 1\nname: s\ninput: {image: [3, h=8, w=9]}\nnetwork:\n"
                    "  - slice: {dim: 2, start: 1, step: 2}\n  - flatten\n")
    report = archspec.check(path)
    assert report.output.shape == (3 * 8 * 4,)
    (expr,) = report.symbols.dims[report.graph.outputs[0].value]
    assert expr.symbols == {"h", "w"}  # before, the sliced axis read as the constant 4
    assert all(expr.at({"h": h, "w": w}) == 3 * h * len(range(w)[1::2]) for h in (1, 8, 13) for w in (2, 9, 16))
    result = export_model(report, tmp_path / "s.onnx")
    assert result.compared
    (second,) = [c for c in result.checks if c.input_shape[0] == 3]
    h, w = second.input_shape[2:]
    want = torch.zeros(1, 3, h, w)[:, :, :, 1::2].flatten(1).shape[1]
    assert second.output_shape == (3, want)


@pytest.mark.parametrize("start, end", [(-3, None), (2, -1), (0, 100)])
def test_guards_name_the_sizes_where_the_slice_changes_form(start: int, end: int | None) -> None:
    """A bound that counts from the end or is clipped is a decision at the nominal size: recorded."""
    with recording() as guards:
        _slice_length(SymInt(9, Lin.symbol("t")), start, end, 1)
    assert guards
