"""Diagnostics that name the root cause: each mistake a new user made in a trial is one located
diagnostic saying what was expected, what was found and the fix (pasted, the fix makes the spec
check), rather than a consequence of it."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

import archspec
from archspec import SpecError
from archspec.layers import REGISTRY


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text("archspec: 1\nname: t\n" + textwrap.dedent(text))  # the spec's own lines from line 3
    return path


def diagnostics(path: Path) -> tuple[archspec.Diagnostic, ...]:
    with pytest.raises(SpecError) as info:
        archspec.check(path)
    return info.value.diagnostics


def one(path: Path) -> archspec.Diagnostic:
    ds = diagnostics(path)
    assert len(ds) == 1, [(d.code, str(d.loc), d.message) for d in ds]
    return ds[0]


def line_of(path: Path, fragment: str) -> int:
    """The 1-based line of the only line holding `fragment`."""
    (line,) = [i + 1 for i, text in enumerate(path.read_text().splitlines()) if fragment in text]
    return line


# --- a block that reads `in`, given the wrong kind of value --------------------------------------

ENCODER = """\
    input: {image: [3, 32, 32]}
    blocks:
      encoder:
        params: {}
        body:
          - residual: {body: [layernorm, {attention: {heads: 1}}]}
          - residual: {body: [layernorm, {linear: {out: "in.features * 4"}}, gelu, {linear: {out: "in.features"}}]}
    network:
      - encoder
      - linear: {out: 10}
    """


def test_attention_given_an_image_in_a_block_reading_in_is_the_one_diagnostic(tmp_path: Path) -> None:
    """The block's `in.features` does not exist for an image only because the block is given an image:
    the attention that refuses it says so, and the reads are not reported besides."""
    path = write(tmp_path, ENCODER)
    d = one(path)
    assert d.code == "AS203" and d.message == "attention expects a (T, D) input, got 3x32x32 (rank 3)"
    line = line_of(path, "{attention")
    assert (d.loc.line, d.loc.col) == (line, path.read_text().splitlines()[line - 1].index("{attention") + 1)
    assert d.path == "blocks.encoder.body[0].residual.body[1]"
    assert ("in block 'encoder' invoked here", d.related[-1][1]) == d.related[-1] and d.related[-1][1].line == 11
    assert "`- flatten: {start: 1}` and `- transpose: {dims: [0, 1]}`" in d.hint


def test_attention_given_an_image_first_in_a_block_body(tmp_path: Path) -> None:
    """The read is in the item after the attention, whose input it would be."""
    path = write(tmp_path, """\
        input: {image: [3, 32, 32]}
        blocks:
          mixer:
            params: {}
            body:
              - {attention: {heads: 1}}
              - {linear: {out: "in.features"}}
        network: [mixer]
        """)
    d = one(path)
    assert (d.code, d.loc.line, d.loc.col) == ("AS203", 8, 9) and d.message.startswith("attention expects a (T, D)")


def test_a_misread_with_no_layer_refusing_the_input_is_still_reported(tmp_path: Path) -> None:
    """A conv reads the image: nothing refuses it, so `in.features` is the mistake, as before."""
    path = write(tmp_path, """\
        input: {image: [3, 32, 32]}
        blocks:
          widen:
            params: {}
            body:
              - {conv2d: {out: 8, kernel: 1}}
              - {conv2d: {out: "in.features", kernel: 1}}
        network: [widen]
        """)
    d = one(path)
    assert (d.code, d.loc.line) == ("AS121", 9)
    assert "the block's input (layout CHW) has no axis 'features'" in d.message


@pytest.mark.parametrize("read, message", [("in.features", "has no axis 'features'"),
                                           ("in.chanels", "has no axis 'chanels'")])
def test_a_bad_read_in_a_block_argument_is_one_diagnostic(tmp_path: Path, read: str, message: str) -> None:
    """Not again as the argument's wrong type (it was AS121 and AS103 `expects int, got None`)."""
    path = write(tmp_path, f"""\
        input: {{image: [3, 32, 32]}}
        blocks:
          inner:
            params: {{w: int}}
            body: [{{conv2d: {{out: w, kernel: 1}}}}]
          outer:
            params: {{}}
            body: [{{inner: {{w: "{read}"}}}}]
        network: [outer]
        """)
    d = one(path)
    assert (d.code, d.loc.line) == ("AS121", 10) and message in d.message


# --- AS203 of a sequence kind given an image: the patch-token idiom, pasteable ------------------

SEQUENCE_KINDS = sorted(k for k, v in REGISTRY.items() if v.input_layouts == ("TF",) and v.example is not None)


@pytest.mark.parametrize("name", SEQUENCE_KINDS)
def test_a_sequence_kind_given_an_image_hints_items_that_make_the_spec_check(tmp_path: Path, name: str) -> None:
    kind = REGISTRY[name]
    spec = (f"input: {{image: [4, 6, 6]}}\nnetwork:\n  - conv2d: {{out: 4, kernel: 1}}\n"
            f"  - {name}: {json.dumps(kind.example)}\n")
    path = write(tmp_path, spec)
    d = one(path)
    assert (d.code, d.loc.line, d.loc.col) == ("AS203", 6, 5)
    assert d.message == f"{name} expects a {kind.input_desc} input, got 4x6x6 (rank 3)"
    items = re.findall(r"`(- [^`]+)`", d.hint)
    assert items == ["- flatten: {start: 1}", "- transpose: {dims: [0, 1]}"], d.hint
    fixed = spec.replace(f"  - {name}:", "".join(f"  {item}\n" for item in items) + f"  - {name}:")
    report = archspec.check(write(tmp_path, fixed))
    assert report.nodes[-2].output.shape == (36, 4)  # the 6x6 positions are 36 tokens of the 4 channels
    assert report.nodes[-1].kind == name


def test_a_transposed_sequence_gets_the_transpose_back(tmp_path: Path) -> None:
    path = write(tmp_path, "input: {x: [6, 8]}\nnetwork:\n  - transpose: {dims: [0, 1]}\n  - attention: {heads: 2}\n")
    d = one(path)
    assert d.hint == "permute its axes back to TF first: insert `- transpose: {dims: [0, 1]}` before it"


def test_a_channels_last_image_gets_the_permutation_back(tmp_path: Path) -> None:
    path = write(tmp_path, "input: {x: [3, 8, 8]}\nnetwork:\n  - permute: {dims: [1, 2, 0]}\n"
                           "  - conv2d: {out: 4, kernel: 3}\n")
    d = one(path)
    assert d.hint == "permute its axes back to CHW first: insert `- permute: {dims: [2, 0, 1]}` before it"
    fixed = path.read_text().replace("  - conv2d", "  - permute: {dims: [2, 0, 1]}\n  - conv2d")
    assert archspec.check(write(tmp_path, fixed[len("archspec: 1\nname: t\n"):])).output.shape == (4, 6, 6)


# --- an axis that does not exist names the axes that do ------------------------------------------

@pytest.mark.parametrize("inp, layer, col, message", [
    ("[time=7, 16]", "transpose: {dims: [0, 2]}", 23,
     "dims [0, 2]: axis 2 does not exist; the 7x16 input has axes 0..1 (time, features)"),
    ("[3, 8, 8]", "permute: {dims: [0, 3, 1]}", 21,
     "dims [0, 3, 1]: axis 3 does not exist; the 3x8x8 input has axes 0..2 (channels, height, width)"),
    ("[6, 8]", "select: {dim: -3, index: 0}", 19,
     "dim=-3: axis -3 does not exist; the 6x8 input has axes 0..1 (time, features)"),
])
def test_an_axis_out_of_range_names_the_axes(tmp_path: Path, inp: str, layer: str, col: int, message: str) -> None:
    d = one(write(tmp_path, f"input: {{x: {inp}}}\nnetwork:\n  - {layer}\n"))
    assert (d.code, d.loc.line, d.loc.col) == ("AS201", 5, col)
    assert d.message.endswith(message), d.message


# --- a piece named like a layer ------------------------------------------------------------------

def test_a_piece_named_like_an_earlier_layer(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        input: {image: [8, 5, 7]}
        network:
          - {relu, name: left}
          - {split: {sizes: [3, 5], as: [left, right]}}
          - {concat, from: [right, left]}
        """)
    d = one(path)
    assert (d.code, d.loc.line, d.loc.col) == ("AS110", 6, 34)
    assert d.message == "duplicate name 'left': piece 'left' of split 'split0' is named like layer 'left'"
    assert d.hint == (f"rename piece 'left' of split 'split0' here or layer 'left' at {path}:5:12: a later item "
                      "reads each value by its own name")
    assert [(note, loc.line, loc.col) for note, loc in d.related] == [("layer 'left' is named here", 5, 12)]
    assert "repeat" not in d.hint


def test_a_layer_named_like_an_earlier_piece(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        input: {image: [8, 5, 7]}
        network:
          - {chunk: {as: [a, b]}}
          - {relu, from: a, name: b}
        """)
    d = one(path)
    assert (d.code, d.loc.line) == ("AS110", 6)
    assert d.message == "duplicate name 'b': layer 'b' is named like piece 'b' of chunk 'chunk0'"
    assert d.hint.startswith(f"rename layer 'b' here or piece 'b' of chunk 'chunk0' at {path}:5:22")


def test_a_piece_named_like_the_input(tmp_path: Path) -> None:
    d = one(write(tmp_path, "input: {image: [8, 5, 7]}\nnetwork:\n  - {chunk: {as: [image, b]}}\n"
                            "  - {relu, from: b}\n"))
    assert d.code == "AS110" and d.message == "duplicate name 'image': piece 'image' of chunk 'chunk0' is named " \
                                              "like the model input 'image'"


# --- an unknown reference gets the closest name --------------------------------------------------

def test_upsample_to_a_longer_name_suggests_the_one_it_begins_with(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        input: {image: [8, 16, 16]}
        network:
          - {conv2d: {out: 8, kernel: 1}, name: stem}
          - {conv2d: {out: 8, kernel: 1}, name: aux}
          - {maxpool2d: {kernel: 2}, name: pool}
          - {conv2d: {out: 8, kernel: 1}, name: lateral}
          - {upsample: {to: aux_head}}
        """)
    d = one(path)
    assert (d.code, d.loc.line, d.loc.col) == ("AS123", 9, 21)
    assert d.message == "unknown name 'aux_head'" and d.hint == "did you mean 'aux'?"


# --- a chunk on a dynamic axis before a block reading `in` ---------------------------------------

def test_a_chunk_that_fails_at_the_second_size_says_which_size_and_why(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        input: {x: [time=50, 16]}
        blocks:
          mlp:
            params: {}
            body: [{linear: {out: "in.features"}}]
        network:
          - {chunk: {axis: time, as: [a, b]}}
          - {mlp, from: a}
        """)
    d = one(path)
    assert (d.code, d.loc.line) == ("AS120", 7)
    assert d.message.startswith(
        f"in.features: archspec cannot tell whether it follows the dynamic input axis 'time', as chunk 'chunk0' "
        f"({path}:9:5) fails at the second size archspec tries, time = 101 (2 x nominal + 1): \"2 equal pieces do "
        "not divide the time axis of the 101x16 input (101)"), d.message
