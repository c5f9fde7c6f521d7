"""Error quality: every mistake a user can make is one located diagnostic with a stable code, a
useful hint, and (inside blocks) the call site; hostile expansion is stopped by the limits
quickly; all errors of a stage come back in one SpecError."""

from __future__ import annotations

import textwrap
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

import pytest

import archspec
import archspec.resolve.expand as expand_module
from archspec import Limits, SpecError

HEADER = "archspec: 1\nname: t\ninput: {x: [3, 8, 8]}\n"  # lines 1-3


def spec(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(header + textwrap.dedent(body), encoding="utf-8")
    return path


def errors(tmp_path: Path, body: str, limits: Limits | None = None, header: str = HEADER) -> list[archspec.Diagnostic]:
    path = spec(tmp_path, body, header)
    with pytest.raises(SpecError) as info:
        archspec.check(path, limits=limits)
    diags = list(info.value.diagnostics)
    assert all(d.loc.file == str(path) for d in diags)
    return diags


def where(d: archspec.Diagnostic) -> tuple[str, int, int]:
    return d.code, d.loc.line, d.loc.col


def only(diags: list[archspec.Diagnostic]) -> archspec.Diagnostic:
    assert len(diags) == 1, [(where(d), d.message) for d in diags]
    return diags[0]


# --- unknown names ----------------------------------------------------------------------------------

def test_unknown_key_suggests_kernel(tmp_path):
    # one mistake, one diagnostic: the missing 'kernel' is explained by 'kernal'
    d = only(errors(tmp_path, "network:\n  - conv2d: {out: 4, kernal: 3}\n"))
    assert where(d) == ("AS101", 5, 22)
    assert d.message == "unknown key 'kernal'"
    assert d.hint == "did you mean 'kernel'?"
    assert d.path == "network[0].conv2d.kernal"


def test_unknown_key_in_block_style_mapping(tmp_path):
    d = only(errors(tmp_path, "network:\n  - conv2d:\n      out: 4\n      kernel: 3\n      stide: 2\n"))
    assert where(d) == ("AS101", 8, 7)
    assert d.hint == "did you mean 'stride'?"


def test_unknown_top_level_key(tmp_path):
    diags = errors(tmp_path, "netwrok:\n  - relu\n")
    d = next(d for d in diags if d.code == "AS101")
    assert where(d) == ("AS101", 4, 1)
    assert d.hint == "did you mean 'network'?"
    assert not any(d.code == "AS102" for d in diags)  # explained by the misspelling


def test_unknown_budget_key(tmp_path):
    d = only(errors(tmp_path, "network: [relu]\nbudget: {parms: 1K}\n"))
    assert where(d) == ("AS101", 5, 10)
    assert d.hint == "did you mean 'params'?"


def test_unknown_block_key(tmp_path):
    diags = errors(tmp_path, "blocks:\n  cbr:\n    bdy: [relu]\nnetwork: [relu]\n")
    d = next(d for d in diags if d.code == "AS101")
    assert where(d) == ("AS101", 6, 5)
    assert d.hint == "did you mean 'body'?"


def test_unknown_input_key_suggests_dtype(tmp_path):
    header = "archspec: 1\nname: t\ninput: {x: {shape: [3, 8, 8], dtyp: int64}}\n"
    d = only(errors(tmp_path, "network: [relu]\n", header=header))
    assert where(d) == ("AS101", 3, 31)
    assert d.hint == "did you mean 'dtype'?"


def test_unknown_key_in_repeat_and_residual(tmp_path):
    diags = errors(tmp_path, "network:\n  - repeat: 2\n    bdy: [relu]\n  - residual: {bdy: [relu]}\n")
    assert [(where(d), d.hint) for d in diags if d.code == "AS101"] == [
        (("AS101", 6, 5), "did you mean 'body'?"), (("AS101", 7, 16), "did you mean 'body'?")]


@pytest.mark.parametrize("item, loc, path, hint", [
    ("- conv2e: {out: 4, kernel: 3}", (5, 5), "network[0].conv2e", "did you mean 'conv2d'?"),
    ("- rellu", (5, 5), "network[0]", "did you mean 'relu'?"),
    ("- {name: c1, maxpool: {kernel: 2}}", (5, 16), "network[0].maxpool", "did you mean 'maxpool2d'?"),
    ("- resudual: {body: [relu]}", (5, 5), "network[0].resudual", "did you mean 'residual'?"),
    ("- bogus", (5, 5), "network[0]", ""),
])
def test_unknown_layer_kind(tmp_path, item, loc, path, hint):
    d = only(errors(tmp_path, f"network:\n  {item}\n"))
    assert where(d) == ("AS105", *loc)
    assert d.path == path
    assert d.hint == hint


def test_unknown_kind_suggests_a_block(tmp_path):
    d = only(errors(tmp_path, "blocks:\n  bottleneck:\n    body: [relu]\nnetwork:\n  - bottlenek\n"))
    assert where(d) == ("AS105", 8, 5)
    assert d.hint == "did you mean 'bottleneck'?"


# --- block arguments --------------------------------------------------------------------------------

BLOCK = """\
blocks:
  cbr:
    params: {channels: int, k: {type: int, default: 3}}
    body:
      - conv2d: {out: channels, kernel: k}
      - relu
"""  # lines 4-9; network starts at line 10


def test_unknown_block_argument(tmp_path):
    d = only(errors(tmp_path, BLOCK + "network:\n  - cbr: {channels: 4, kk: 3}\n"))
    assert where(d) == ("AS101", 11, 24)
    assert d.message == "block 'cbr' has no parameter 'kk'"
    assert d.hint == "did you mean 'k'?"


def test_misspelt_block_argument(tmp_path):
    d = only(errors(tmp_path, BLOCK + "network:\n  - cbr: {chanels: 4}\n"))
    assert where(d) == ("AS101", 11, 11)
    assert d.hint == "did you mean 'channels'?"  # not also "needs parameter 'channels'"


def test_missing_block_argument(tmp_path):
    d = only(errors(tmp_path, BLOCK + "network:\n  - cbr\n"))
    assert where(d) == ("AS102", 11, 5)
    assert d.message == "block 'cbr' needs parameter 'channels' (int)"


def test_wrong_type_block_argument(tmp_path):
    d = only(errors(tmp_path, BLOCK + "network:\n  - cbr: {channels: four}\n"))
    assert where(d) == ("AS103", 11, 21)
    assert d.message == "parameter 'channels' of block 'cbr' expects int, got 'four'"


def test_block_cannot_shadow_a_layer_kind(tmp_path):
    d = only(errors(tmp_path, "blocks:\n  relu:\n    body: [sigmoid]\nnetwork: [relu]\n"))
    assert where(d) == ("AS107", 5, 3)


# --- types and ranges --------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("four", "expected an integer, got 'four' (string)"),
    ('"4"', "expected an integer, got '4' (string)"),
    ("4.0", "expected an integer, got 4.0 (number)"),
    ("true", "expected an integer, got true (boolean)"),
    ("[4]", "expected an integer, got a list"),
    ("null", "expected an integer, got nothing (null)"),
])
def test_wrong_type(tmp_path, value, message):
    d = only(errors(tmp_path, f"network:\n  - conv2d: {{out: {value}, kernel: 3}}\n"))
    assert where(d) == ("AS103", 5, 19)
    assert d.message == message


@pytest.mark.parametrize("value", ["0", "-4"])
def test_out_of_range_channels(tmp_path, value):
    d = only(errors(tmp_path, f"network:\n  - conv2d: {{out: {value}, kernel: 3}}\n"))
    assert where(d) == ("AS104", 5, 19)
    assert d.message == f"must be greater than 0, got {value}"


def test_out_of_range_probability(tmp_path):
    d = only(errors(tmp_path, "network:\n  - dropout: {p: 1.5}\n"))
    assert where(d) == ("AS104", 5, 18)


@pytest.mark.parametrize("params, key, col", [
    ("out: 4, kernel: 0", "kernel", 30),
    ("out: 4, kernel: [3, 0]", "kernel", 30),
    ("out: 4, kernel: 3, stride: 0", "stride", 41),
    ("out: 4, kernel: 3, dilation: -2", "dilation", 43),
    ("out: 4, kernel: 3, padding: -1", "padding", 42),
])
def test_invalid_size_is_located(tmp_path, params, key, col):
    d = only(errors(tmp_path, f"network:\n  - conv2d: {{{params}}}\n"))
    assert (d.loc.line, d.loc.col) == (5, col)
    assert d.path == f"network[0].conv2d.{key}"
    assert d.code == "AS104"
    assert ">= " in d.message


def test_kernel_zero_is_out_of_range_like_out_zero(tmp_path):
    d = only(errors(tmp_path, "network:\n  - conv2d: {out: 4, kernel: 0}\n"))
    assert where(d) == ("AS104", 5, 30)
    assert d.message == "a size must be >= 1, got 0"


def test_yes_for_a_boolean_is_ambiguous(tmp_path):
    d = only(errors(tmp_path, "network:\n  - conv2d: {out: 4, kernel: 3, bias: yes}\n"))
    assert where(d) == ("AS015", 5, 39)


def test_unsupported_format_version(tmp_path):
    d = only(errors(tmp_path, "network: [relu]\n", header="archspec: 2\nname: t\ninput: {x: [3, 8, 8]}\n"))
    assert where(d) == ("AS106", 1, 11)
    assert d.hint == "start the file with `archspec: 1`"


def test_bad_dtype_suggests(tmp_path):
    header = "archspec: 1\nname: t\ninput: {x: {shape: [3, 8, 8], dtype: int32}}\n"
    d = only(errors(tmp_path, "network: [relu]\n", header=header))
    assert where(d) == ("AS107", 3, 38)
    assert d.hint == "did you mean 'int64'?"


def test_bad_input_dimension_is_located(tmp_path):
    header = "archspec: 1\nname: t\ninput: {x: [3, 0, 8]}\n"
    d = only(errors(tmp_path, "network: [relu]\n", header=header))
    assert where(d) == ("AS107", 3, 16)


def test_bad_input_dimension_long_form_is_located(tmp_path):
    header = "archspec: 1\nname: t\ninput: {x: {shape: [3, 0, 8]}}\n"
    d = only(errors(tmp_path, "network: [relu]\n", header=header))
    assert where(d) == ("AS107", 3, 24)
    assert d.path == "input.x.shape[1]"


# --- names and structure ------------------------------------------------------------------------------

def test_duplicate_layer_name(tmp_path):
    d = only(errors(tmp_path, "network:\n  - {name: a, conv2d: {out: 4, kernel: 3}}\n  - {name: a, relu: }\n"))
    assert where(d) == ("AS110", 6, 6)
    assert d.message == "duplicate layer name 'a' in this sequence"
    assert [(l.line, l.col) for _, l in d.related] == [(5, 6)]


def test_user_name_colliding_with_an_automatic_name(tmp_path):
    d = only(errors(tmp_path, "network:\n  - conv2d: {out: 4, kernel: 3}\n  - {name: conv2d0, relu: }\n"))
    assert where(d) == ("AS110", 6, 6)


def test_output_named_like_the_input(tmp_path):
    d = only(errors(tmp_path, "network: [relu]\noutput: x\n"))
    assert where(d) == ("AS110", 5, 9) and d.path == "output"
    assert d.message == "the output is named 'x' like the input" and "output: logits" in d.hint


def test_output_name_must_be_an_identifier(tmp_path):
    d = only(errors(tmp_path, "network: [relu]\noutput: 'my logits'\n"))
    assert d.code == "AS107" and d.path == "output"


def test_same_name_in_different_branches_is_fine(tmp_path):
    report = archspec.check(spec(tmp_path, "network:\n  - add:\n      a: [{name: c, relu: }]\n"
                                           "      b: [{name: c, relu: }]\n"))
    assert {n.path for n in report.nodes} >= {"add0.a.c", "add0.b.c"}


def test_several_kinds_in_one_item(tmp_path):
    d = only(errors(tmp_path, "network:\n  - {relu: , sigmoid: }\n"))
    assert where(d) == ("AS107", 5, 5)
    assert d.hint == "write each layer as its own list item"


def test_direct_block_recursion(tmp_path):
    d = only(errors(tmp_path, "blocks:\n  a:\n    body:\n      - relu\n      - a\nnetwork:\n  - a\n"))
    assert where(d) == ("AS122", 8, 9)
    assert d.message == "block 'a' uses itself (a -> a)"
    assert [(n, l.line, l.col) for n, l in d.related] == [("in block 'a' invoked here", 10, 5)]


def test_indirect_block_recursion(tmp_path):
    body = "blocks:\n  a:\n    body: [b]\n  b:\n    body:\n      - relu\n      - a\nnetwork:\n  - a\n"
    d = only(errors(tmp_path, body))
    assert where(d) == ("AS122", 10, 9)
    assert d.message == "block 'a' uses itself (a -> b -> a)"
    assert [(l.line, l.col) for _, l in d.related] == [(6, 12), (12, 5)]


def test_repeat_count_must_be_positive(tmp_path):
    d = only(errors(tmp_path, "network:\n  - repeat: 0\n    body: [relu]\n"))
    assert where(d) == ("AS104", 5, 13)


def test_empty_network(tmp_path):
    d = only(errors(tmp_path, "network: []\n"))
    assert where(d) == ("AS107", 4, 10)
    assert d.path == "network"


def test_null_network(tmp_path):
    d = only(errors(tmp_path, "network:\n"))
    assert where(d) == ("AS103", 4, 9)


def test_missing_network(tmp_path):
    d = only(errors(tmp_path, "description: nothing\n"))
    assert where(d) == ("AS102", 1, 1)
    assert d.message == "missing required key 'network'"


# --- expansion limits ------------------------------------------------------------------------------

@contextmanager
def expansion_work():
    """Counts the items resolve expands: bounded work, measured without a clock."""
    items: list[int] = []
    original = expand_module.Resolver._item

    def counting(self, *args, **kwargs):
        items.append(1)
        return original(self, *args, **kwargs)

    with patch.object(expand_module.Resolver, "_item", counting):
        yield items


def test_huge_repeat_is_rejected_before_expanding(tmp_path):
    with expansion_work() as items:
        d = only(errors(tmp_path, "network:\n  - repeat: 1000000000\n    body: [relu]\n"))
    assert len(items) <= 2
    assert where(d) == ("AS002", 5, 13)
    assert "50,000 items" in d.message
    assert "--max-expanded-nodes" in d.hint


def test_nested_repeats_whose_product_explodes(tmp_path):
    body = """\
        network:
          - repeat: 1000
            body:
              - repeat: 1000
                body:
                  - repeat: 1000
                    body: [relu, relu]
        """
    with expansion_work() as items:
        d = only(errors(tmp_path, body))
    assert len(items) <= Limits().max_expanded_nodes
    assert where(d) == ("AS002", 7, 17)


def test_repeats_through_blocks_explode_quickly(tmp_path):
    body = """\
        blocks:
          b1:
            body:
              - repeat: 1000
                body: [relu]
          b2:
            body:
              - repeat: 1000
                body: [b1]
        network:
          - repeat: 1000
            body: [b2]
        """
    with expansion_work() as items:
        d = only(errors(tmp_path, body))
    assert len(items) <= Limits().max_expanded_nodes
    assert d.code == "AS002"


def test_expansion_limit_is_configurable(tmp_path):
    body = "network:\n  - repeat: 10\n    body: [relu]\n"  # the repeat item and its 10 layers
    assert archspec.check(spec(tmp_path, body), limits=Limits(max_expanded_nodes=11)).graph.expanded_items == 11
    d = only(errors(tmp_path, body, limits=Limits(max_expanded_nodes=10)))
    assert d.code == "AS002"


def test_repeats_of_nothing_are_bounded(tmp_path):
    body = "network:\n  - relu\n  - repeat: 100\n    body:\n      - repeat: 100\n        body: []\n"
    diags = errors(tmp_path, body, limits=Limits(max_expanded_nodes=1000))
    assert [(d.code, d.message) for d in diags] == [("AS107", "repeat body is empty")]


def test_containers_count_towards_the_expansion_limit(tmp_path):
    body = "network:\n  - relu\n  - repeat: 100\n    body:\n      - repeat: 100\n        body: [{group: []}]\n"
    d = only(errors(tmp_path, body, limits=Limits(max_expanded_nodes=1000)))
    assert d.code == "AS002"


def test_failing_items_in_repeats_are_reported_once_quickly(tmp_path):
    body = "network:\n  - relu\n  - repeat: 1000\n    body:\n      - repeat: 1000\n        body: [bogus]\n"
    with expansion_work() as items:
        d = only(errors(tmp_path, body))
    assert len(items) <= 4  # a repeat stops after a failing first iteration
    assert d.code == "AS105"


def test_deep_block_chain_is_a_spec_error(tmp_path):
    n = 1000
    blocks = "".join(f"  b{i}:\n    body:\n      - relu\n      - b{i + 1}\n" for i in range(n))
    blocks += f"  b{n}:\n    body: [relu]\n"
    d = only(errors(tmp_path, "blocks:\n" + blocks + "network:\n  - b0\n"))
    assert d.code == "AS002"


def test_exploding_channels_are_a_spec_error(tmp_path):
    body = "network:\n  - repeat: 15000\n    body:\n      - concat: {a: [], b: []}\n"
    assert {d.code for d in errors(tmp_path, body)} == {"AS002"}


def test_doubling_channels_hit_the_activation_limit(tmp_path):
    d = only(errors(tmp_path, "network:\n  - repeat: 200\n    body:\n      - concat: {a: [], b: []}\n"))
    assert where(d) == ("AS002", 7, 17)  # the concat whose output outgrows the budget
    assert "--max-activation-bytes" in d.hint


# --- several errors in one run ----------------------------------------------------------------------

def test_errors_from_several_layers_come_in_one_spec_error(tmp_path):
    body = """\
        network:
          - conv2d: {out: 4, kernal: 3}
          - relu
          - conv2d: {out: -1, kernel: 3}
          - bogus
          - linear: {out: four}
        """
    diags = errors(tmp_path, body)
    assert [where(d) for d in diags] == [
        ("AS101", 5, 22), ("AS104", 7, 19), ("AS105", 8, 5), ("AS103", 9, 19)]


def test_shape_errors_in_every_branch_are_reported(tmp_path):
    body = """\
        network:
          - concat:
              a: [flatten, {conv2d: {out: 2, kernel: 3}}]
              b: [flatten, {conv2d: {out: 2, kernel: 1}}]
        """
    diags = errors(tmp_path, body)
    assert [where(d) for d in diags] == [("AS203", 6, 20), ("AS203", 7, 20)]


def test_concat_size_mismatch_points_at_the_layer_that_changed_the_size(tmp_path):
    """The channels differ too, but concat joins them: the fix goes where H x W went wrong (the
    upsample), not at the concat that widened the channels of its input."""
    body = """\
        network:
          - {conv2d: {out: 4, kernel: 3, padding: 1}, name: a}
          - {conv2d: {out: 4, kernel: 3, stride: 2, padding: 1}, name: b}
          - {concat, from: [a, a], name: wide}
          - {upsample: {scale: 4}, from: b, name: up}
          - {concat, from: [wide, up], name: joined}
        """
    d = only(errors(tmp_path, body))
    assert where(d) == ("AS201", 8, 5)
    assert d.message == "concat 'joined': cannot concatenate 8x8x8 and 4x16x16: all axes but channels must agree"
    assert [(n, l.line) for n, l in d.related] == [("input 0 8x8x8 comes from 'wide'", 7),
                                                  ("input 1 4x16x16 comes from 'up'", 8)]


def test_channel_gate_without_spatial_axes_gets_the_reshape_hint(tmp_path):
    """A squeeze-and-excitation gate from global_avgpool + linear is (C); times (C, H, W) it aligns
    with W (NumPy's right alignment), so the hint says how to make it (C, 1, 1)."""
    body = """\
        network:
          - {conv2d: {out: 4, kernel: 1}, name: feat}
          - global_avgpool
          - {linear: {out: 4}, name: gate}
          - {mul, from: [feat, gate]}
        """
    d = only(errors(tmp_path, body))
    assert where(d) == ("AS201", 8, 5)
    assert d.message == ("mul 'mul0': cannot broadcast 4x8x8 and 4: axis 2 is 8 in one and 4 in the other "
                         "(each axis must be equal or 1)")
    assert d.hint.startswith("a per-channel gate of 4 values must be 4x1x1 to broadcast over channels: "
                             "`reshape: {shape: [4, 1, 1]}` before the mul")


def test_channel_gate_is_refused_even_where_channels_equal_width(tmp_path):
    """With C == W the (C) gate broadcasts, but over width: NumPy would scale columns, not channels.
    The layouts say the gate's features axis would meet the map's width, so it is refused the same
    way, with the same hint; the (C, 1, 1) gate is accepted and computes the per-channel product."""
    body = """\
        network:
          - {conv2d: {out: 8, kernel: 1}, name: feat}
          - global_avgpool
          - {linear: {out: 8}, name: gate}
          - {mul, from: [feat, gate]}
        """
    d = only(errors(tmp_path, body))
    assert where(d) == ("AS201", 8, 5)
    assert d.message == ("mul 'mul0': shapes align on the right, so the features axis of 8 would multiply the "
                         "width axis of 8x8x8")
    assert d.hint.startswith("a per-channel gate of 8 values must be 8x1x1 to broadcast over channels")
    fixed = spec(tmp_path, body.replace("          - {mul, from: [feat, gate]}\n",
                                        "          - {reshape: {shape: [8, 1, 1]}, name: g}\n"
                                        "          - {mul, from: [feat, g]}\n"))
    report = archspec.check(fixed)
    torch = pytest.importorskip("torch")
    module = archspec.build(report, seed=0).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        feat = module.feat(x)  # the per-channel SE product, by hand
        gate = module.gate(feat.mean((2, 3))).view(2, 8, 1, 1)
        torch.testing.assert_close(module(x), feat * gate)


def test_a_failed_split_is_reported_once_not_again_at_what_reads_its_readers(tmp_path):
    """`size` for `sizes`: the split fails; `up` reads one of its pieces and is left out with it, so
    `joined` reading `up` says nothing more (it used to add "unknown name 'up'", did you mean 'sp'?)."""
    body = """\
        network:
          - {conv2d: {out: 8, kernel: 1}, name: c}
          - {split: {size: [2, 6], as: [lo, hi]}, name: sp}
          - {upsample: {scale: 1}, from: hi, name: up}
          - {concat, from: [up, c], name: joined}
        """
    d = only(errors(tmp_path, body))
    assert where(d) == ("AS101", 6, 14)
    assert d.hint == "did you mean 'sizes'?"


def test_spec_error_message_is_the_first_diagnostic(tmp_path):
    path = spec(tmp_path, "network:\n  - rellu\n")
    with pytest.raises(SpecError, match=r"spec\.yaml:5:5: error\[AS105\]: unknown layer kind or block 'rellu'"):
        archspec.check(path)


# --- errors inside blocks ----------------------------------------------------------------------------

def test_validation_error_inside_a_block_names_the_call_site(tmp_path):
    body = """\
        blocks:
          cbr:
            params: {c: int}
            body:
              - conv2d: {out: c, kernal: 3}
        network:
          - relu
          - cbr: {c: 4}
        """
    diags = errors(tmp_path, body)
    assert [where(d) for d in diags] == [("AS101", 8, 26)]
    for d in diags:
        assert d.path.startswith("blocks.cbr.body[0].conv2d")
        assert [(n, l.line, l.col) for n, l in d.related] == [("in block 'cbr' invoked here", 11, 5)]


def test_shape_error_inside_a_block_names_the_call_site_and_the_input(tmp_path):
    body = """\
        blocks:
          cbr:
            params: {c: int}
            body:
              - conv2d: {out: c, kernel: 30}
        network:
          - relu
          - cbr: {c: 4}
        """
    d = only(errors(tmp_path, body))
    assert where(d) == ("AS202", 8, 34)
    assert [(l.line, l.col) for _, l in d.related] == [(10, 5), (11, 5)]
    assert "comes from 'relu0'" in d.related[0][0]
    assert d.related[1][0] == "in block 'cbr' invoked here"


def test_nested_blocks_report_the_whole_call_chain(tmp_path):
    body = """\
        blocks:
          inner:
            body:
              - conv2d: {out: 4, kernel: 30}
          outer:
            body:
              - relu
              - inner
        network:
          - outer
        """
    d = only(errors(tmp_path, body))
    assert where(d) == ("AS202", 7, 34)
    assert [(n, l.line) for n, l in d.related[1:]] == [
        ("in block 'inner' invoked here", 11), ("in block 'outer' invoked here", 13)]


# --- budgets ------------------------------------------------------------------------------------------

def test_runner_limit_names_its_flag(tmp_path):
    d = only(errors(tmp_path, "network:\n  - conv2d: {out: 64, kernel: 3}\n", limits=Limits(max_params=100)))
    assert where(d) == ("AS002", 5, 5)  # a limit is no line of the spec: the largest layer, where a fix starts
    assert d.message == "params 1,792 exceed the limit of 100"
    assert "--max-params" in d.hint


@pytest.mark.parametrize("field, flag", [("max_macs", "--max-macs"),
                                         ("max_activation_bytes", "--max-activation-bytes")])
def test_other_runner_limits(tmp_path, field, flag):
    d = only(errors(tmp_path, "network:\n  - conv2d: {out: 64, kernel: 3}\n", limits=Limits(**{field: 10})))
    assert d.code == "AS002" and flag in d.hint


def test_spec_budget(tmp_path):
    d = only(errors(tmp_path, "network:\n  - conv2d: {out: 64, kernel: 3}\nbudget: {params: 1K}\n"))
    assert where(d) == ("AS301", 6, 18)
    assert d.message == "params 1,792 exceed the spec's budget of 1,000"


def test_budget_errors_point_at_the_largest_layer(tmp_path):
    body = "network:\n  - conv2d: {out: 8, kernel: 3}\n  - conv2d: {out: 64, kernel: 3}\n  - flatten\nbudget: {params: 1K}\n"
    d = only(errors(tmp_path, body))
    assert where(d) == ("AS301", 8, 18)
    (note, loc), = d.related
    assert note == "the largest share, 4,672 (95%), is conv2d 'conv2d1'" and loc.line == 6
    d = only(errors(tmp_path, body.replace("budget: {params: 1K}", ""), limits=Limits(max_macs=10_000)))
    assert d.code == "AS002" and d.related[0][0].startswith("the largest share") and d.related[0][1].line == 6


def test_every_exceeded_budget_is_reported(tmp_path):
    diags = errors(tmp_path, "network:\n  - conv2d: {out: 64, kernel: 3}\nbudget: {params: 1K, macs: 0.05M}\n")
    assert [where(d) for d in diags] == [("AS301", 6, 18), ("AS301", 6, 28)]


def test_budget_within_limits_passes(tmp_path):
    report = archspec.check(spec(tmp_path, "network:\n  - conv2d: {out: 64, kernel: 3}\nbudget: {params: 1.8K}\n"))
    assert report.totals.params == 1792


def test_bad_budget_amount(tmp_path):
    d = only(errors(tmp_path, "network: [relu]\nbudget: {params: lots}\n"))
    assert where(d) == ("AS107", 5, 18)
