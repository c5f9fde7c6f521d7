"""Blocks read their input (`in.channels`, `in.shape[i]`, ...): the same graphs as the hand-passed
forms, the sizes each layout names, and one located diagnostic per misuse."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import archspec
from archspec import SpecError
from archspec.resolve.ir import Graph

ROOT = Path(__file__).resolve().parent.parent
TORCHVISION_MOBILENET_V2_PARAMS = 3_504_872  # torchvision MobileNet_V2_Weights.IMAGENET1K_V1, "num_params"


def spec(tmp_path: Path, body: str, head: str = "input: {image: [3, 16, 16]}") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"archspec: 1\nname: s\n{head}\n" + textwrap.dedent(body))
    return path


def errors(path: Path) -> tuple:
    with pytest.raises(SpecError) as info:
        archspec.check(path)
    return info.value.diagnostics


def same_graph(a: Graph, b: Graph) -> None:
    assert [(n.kind, n.params, n.inputs, n.outputs, n.scope) for n in a.nodes] == \
           [(n.kind, n.params, n.inputs, n.outputs, n.scope) for n in b.nodes]
    assert [(s.path, s.label, s.zero_init) for s in a.scopes] == [(s.path, s.label, s.zero_init) for s in b.scopes]
    assert a.values == b.values


def test_mobilenet_v2_with_in_channels_equals_the_hand_passed_form() -> None:
    ours = archspec.check(ROOT / "examples/mobilenet_v2_in.yaml")
    hand = archspec.check(ROOT / "tests/data/mobilenet_v2_hand.yaml")
    assert ours.totals.params == hand.totals.params == TORCHVISION_MOBILENET_V2_PARAMS
    assert ours.totals == hand.totals
    same_graph(ours.graph, hand.graph)
    assert [(n.path, n.output, n.params, n.macs) for n in ours.nodes] == \
           [(n.path, n.output, n.params, n.macs) for n in hand.nodes]
    assert sum(n.kind == "add" for n in ours.graph.nodes) == 10  # Table 2: a stage's repeats after its first


def test_in_reads_the_block_input_not_the_item_input(tmp_path: Path) -> None:
    """`in` is the value the block reads, everywhere in its body: layers, `when`, `repeat`, the
    arguments it passes on (an invoked block's own `in` is its own input)."""
    read = archspec.check(spec(tmp_path, """\
        blocks:
          inner:
            params: {w: int}
            body:
              - conv2d: {out: "w + in.channels", kernel: 1}
          outer:
            params: {}
            body:
              - conv2d: {out: 5, kernel: 1}
              - inner: {w: "in.channels"}
              - {relu, when: "in.channels == 3"}
              - {repeat: "in.height // 8", body: [{conv2d: {out: "in.shape[-1]", kernel: 1}}]}
              - residual: {body: [same]}
          same:
            params: {}
            body: [{conv2d: {out: "in.channels", kernel: 1}}]
        network:
          - conv2d: {out: 3, kernel: 1}
          - outer
        """))
    (tmp_path / "h").mkdir()
    hand = archspec.check(spec(tmp_path / "h", """\
        blocks:
          inner:
            params: {w: int, c: int}
            body:
              - conv2d: {out: "w + c", kernel: 1}
          outer:
            params: {}
            body:
              - conv2d: {out: 5, kernel: 1}
              - inner: {w: 3, c: 5}
              - relu
              - {repeat: 2, body: [{conv2d: {out: 16, kernel: 1}}]}
              - residual: {body: [same]}
          same:
            params: {}
            body: [{conv2d: {out: 16, kernel: 1}}]
        network:
          - conv2d: {out: 3, kernel: 1}
          - outer
        """))
    same_graph(read.graph, hand.graph)
    assert read.output.shape == (16, 16, 16)
    residual = next(s for s in read.graph.scopes if s.label == "residual")
    assert [read.graph.nodes[k].scope for k in residual.zero_init] == ["outer0.residual0.same0"]


@pytest.mark.parametrize("head, body, want", [
    ("input: {image: [3, 20, 24]}", "conv2d: {out: 'in.channels + in.height + in.width', kernel: 1}", (47, 20, 24)),
    ("input: {image: [3, 20, 24]}", "conv2d: {out: 'in.shape[0] * in.shape[-1]', kernel: 1}", (72, 20, 24)),
    ("input: {x: [7, 16]}", "lstm: {hidden: 'in.time + in.features'}", (7, 23)),
    ("input: {x: [time=7, 16]}", "lstm: {hidden: 'in.features * 2'}", (7, 32)),  # a fixed axis of a dynamic input
    ("input: {x: [12]}", "linear: {out: 'make_divisible(in.features * 1.5, 8)'}", (24,)),
    ("input: {tokens: {shape: [9], dtype: int64}}", "embedding: {vocab: 100, dim: 'in.time'}", (9, 9)),
])
def test_sizes_by_layout(tmp_path: Path, head: str, body: str, want: tuple[int, ...]) -> None:
    report = archspec.check(spec(tmp_path, f"""\
        blocks:
          b:
            params: {{}}
            body: [{{{body}}}]
        network: [b]
        """, head))
    assert report.output.shape == want


# --- misuse: one located diagnostic each ------------------------------------------------------

@pytest.mark.parametrize("head, expr, code, message, hint", [
    ("input: {image: [3, 16, 16]}", "in.chanels * 2", "AS121", "the block's input (layout CHW) has no axis 'chanels'",
     "did you mean 'channels'?"),
    ("input: {x: [16]}", "in.height", "AS121", "has no axis 'height'", "it has in.features, in.shape[i]"),
    ("input: {image: [3, 16, 16]}", "in.shape[3]", "AS120", "in.shape[3]: the block's input (layout CHW) has 3 axes",
     "index 0 to 2"),
    ("input: {image: [3, 16, 16]}", "in.shape", "AS120", "in.shape is a tuple of sizes", ""),
    ("input: {image: [3, 16, 16]}", "in.__class__", "AS121", "has no axis '__class__'", ""),
    ("input: {image: [3, 16, 16]}", "in.channels.real", "AS120", "only `in` has attributes", ""),
    ("input: {image: [3, 16, 16]}", "k.real + 1", "AS120", "only `in` has attributes", ""),
    ("input: {image: [3, 16, 16]}", "in.channels // 0", "AS120", "division by zero in 'in.channels // 0'", ""),
    ("input: {x: [time=50, 16]}", "in.time", "AS120", "in.time follows the dynamic input axis 'time'", ""),
    ("input: {x: [time=50, 16]}", "in.shape[0] + 1", "AS120", "in.shape[0] follows the dynamic input axis", ""),
])
def test_bad_reads_are_located_once(tmp_path: Path, head: str, expr: str, code: str, message: str, hint: str) -> None:
    kind = "conv2d: {out: '%s', kernel: 1}" if "image" in head else "linear: {out: '%s'}"
    ds = errors(spec(tmp_path, f"""\
        blocks:
          b:
            params: {{k: {{type: int, default: 1}}}}
            body:
              - {kind % expr}
        network: [b, b, b]
        """, head))
    assert len(ds) == 1, ds
    d = ds[0]
    assert (d.code, d.loc.line, d.loc.col) == (code, 8, 9 + len(kind.split("'")[0]))
    assert message in d.message and hint in d.hint
    assert d.path.startswith("blocks.b.body[0].")
    assert any(note == "in block 'b' invoked here" for note, _ in d.related)


def test_a_fixed_axis_after_a_layer_that_fails_at_other_sizes_names_that_layer(tmp_path: Path) -> None:
    """A ViT with dynamic h, w and a fixed-size position embedding: at the second size the checker tries,
    the add fails, so it cannot tell that the tokens' width is fixed; it says so, naming the add, rather
    than that in.features follows h and w."""
    ds = errors(spec(tmp_path, """\
        blocks:
          mlp:
            body: [{linear: {out: "in.features"}}]
        network:
          - conv2d: {out: 16, kernel: 4, stride: 4}
          - flatten: {start: 1}
          - transpose: {dims: [0, 1]}
          - residual: {body: [{parameter: {shape: [16, 16]}}]}
          - mlp
        """, "input: {image: [3, h=16, w=16]}"))
    assert [(d.code, d.loc.line, d.loc.col) for d in ds] == [("AS120", 6, 27)]
    assert ds[0].message.startswith(
        "in.features: archspec cannot tell whether it follows the dynamic input axis 'h', 'w', as add "
        f"'residual0.merge' ({tmp_path / 's.yaml'}:11:15) fails at the second size archspec tries, h = 33, w = 33 "
        "(2 x nominal + 1): \"")


def test_in_outside_a_block(tmp_path: Path) -> None:
    ds = errors(spec(tmp_path, """\
        network:
          - conv2d: {out: "in.channels * 2", kernel: 1}
        """))
    assert [(d.code, d.loc.line, d.loc.col) for d in ds] == [("AS121", 5, 19)]
    assert "`in` is defined only inside a block's body" in ds[0].message
    ds = errors(spec(tmp_path, "vars: {w: in.channels}\nnetwork: [relu]\n"))
    assert [(d.code, d.loc.line) for d in ds] == [("AS121", 4)]


def test_a_block_reading_in_with_several_inputs(tmp_path: Path) -> None:
    ds = errors(spec(tmp_path, """\
        blocks:
          mlp:
            params: {}
            body: [{linear: {out: "in.features"}}]
        network:
          - {mlp, from: [a, b]}
        """, "inputs: {a: [8], b: [8]}"))
    assert [(d.code, d.loc.line, d.loc.col) for d in ds] == [("AS107", 9, 17)]
    assert "mlp reads one value, `from` names 2" in ds[0].message


def test_a_shape_error_before_a_block_reading_in_is_reported_by_analyze(tmp_path: Path) -> None:
    ds = errors(spec(tmp_path, """\
        blocks:
          widen:
            params: {}
            body: [{conv2d: {out: "in.channels * 2", kernel: 1}}]
        network:
          - conv2d: {out: 4, kernel: 17}
          - widen
          - widen
        """))
    assert [(d.code, d.loc.line, d.loc.col) for d in ds] == [("AS202", 9, 30)]
    assert "kernel 17x17 is larger than the padded input 16x16" in ds[0].message


def test_independent_blocks_reading_in_report_their_own_mistakes(tmp_path: Path) -> None:
    """A block that cannot be expanded does not stop one that does not depend on it."""
    ds = errors(spec(tmp_path, """\
        blocks:
          a:
            params: {}
            body: [{linear: {out: "in.chanels"}}]
          b:
            params: {}
            body: [{linear: {out: "in.hieght"}}]
        network:
          - {a, from: x, name: left}
          - {b, from: y, name: right}
        """, "inputs: {x: [8], y: [8]}\noutputs: {l: left, r: right}"))
    assert [(d.code, d.loc.line) for d in ds] == [("AS121", 8), ("AS121", 11)]


def test_recursion_and_the_node_budget(tmp_path: Path) -> None:
    ds = errors(spec(tmp_path, """\
        blocks:
          a:
            params: {}
            body: [{linear: {out: "in.features"}}, a]
        network: [a]
        """, "input: {x: [8]}"))
    assert [d.code for d in ds] == ["AS122"]
    ds = errors(spec(tmp_path, """\
        blocks:
          keep:
            params: {}
            body: [{linear: {out: "in.features"}}, relu]
        network:
          - {repeat: 30000, body: [keep]}
        """, "input: {x: [8]}"))  # 30,000 block items pass the estimate; their layers exceed 50,000 items
    assert [d.code for d in ds] == ["AS002"] and "expands to more than 50,000 items" in ds[0].message


def test_ejected_mobilenet_v2_in_equals_build(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import importlib.util

    from archspec.cli import main

    out = tmp_path / "m.py"
    assert main(["eject", str(ROOT / "examples/mobilenet_v2_in.yaml"), "-o", str(out)]) == 0
    loader = importlib.util.spec_from_file_location("ejected_mobilenet_v2_in", out)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    built = archspec.build(ROOT / "examples/mobilenet_v2_in.yaml", seed=0).eval()
    theirs = module.build().eval()
    theirs.load_state_dict(built.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), built(x), rtol=1e-5, atol=1e-5)


# --- the evaluator: `in` is a keyword, read as a name only before a dot ------------------------

@pytest.mark.parametrize("text, want", [
    ("in.channels", 64),
    ("in .channels + in. width", 120),
    ("min(in.channels, 48) + in.shape[1] - in.shape[-2]", 48),
    ("make_divisible(in.channels * 0.75, 8)", 48),
    ("'in.channels' if in.height == 56 else 'no'", "in.channels"),  # a string constant is left alone
    ("in.shape[in.channels // 64]", 56),
])
def test_evaluator_reads_in(text: str, want: object) -> None:
    from archspec.expr import IN, TypeView, evaluate, looks_like_expression

    view = TypeView((64, 56, 56), ("channels", "height", "width"), "CHW")
    assert looks_like_expression(text)
    assert evaluate(text, {IN: view}) == want


@pytest.mark.parametrize("text, fragment", [
    ("in", "cannot parse"),
    ("in + 1", "cannot parse"),
    ("1 in in.shape", "comparisons"),
    ("in.shape[1.5]", "in.shape[1.5]: the block's input (layout CHW) has 3 axes"),
    ("in.shape[True]", "has 3 axes"),
    ("in.shape[0][0]", "only in.shape can be indexed"),
    ("in.channels(1)", "not allowed"),
    ("__import__('os').x", "not allowed"),
])
def test_evaluator_refuses_other_uses_of_in(text: str, fragment: str) -> None:
    from archspec.expr import IN, ExprError, TypeView, evaluate

    view = TypeView((64, 56, 56), ("channels", "height", "width"), "CHW")
    with pytest.raises(ExprError) as info:
        evaluate(text, {IN: view})
    assert info.value.code == "AS120" and fragment in str(info.value) and "__in__" not in str(info.value)
