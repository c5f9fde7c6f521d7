"""The hardened YAML loader (archspec/load.py): every hostile or ambiguous input is a located
SpecError with a stable code, never a Python object, a hang, a crash or a silent misreading."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import archspec
from archspec import Limits, SpecError

SPEC = (
    "archspec: 1\n"
    "name: t\n"
    "input: {x: [3, 8, 8]}\n"
    "network:\n"
    "  - relu\n"
)


def write(tmp_path: Path, data: str | bytes, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def load_errors(tmp_path: Path, data: str | bytes, limits: Limits | None = None) -> list[archspec.Diagnostic]:
    """Diagnostics of the load stage alone (archspec.load does not validate the schema)."""
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        archspec.load(path, limits=limits)
    diags = list(info.value.diagnostics)
    assert diags, "a SpecError must carry at least one diagnostic"
    for d in diags:
        assert d.loc.file == str(path)
    return diags


def check_errors(tmp_path: Path, data: str | bytes, limits: Limits | None = None) -> list[archspec.Diagnostic]:
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        archspec.check(path, limits=limits)
    return list(info.value.diagnostics)


def where(d: archspec.Diagnostic) -> tuple[str, int, int]:
    return d.code, d.loc.line, d.loc.col


def only(diags: list[archspec.Diagnostic]) -> archspec.Diagnostic:
    assert len(diags) == 1, [where(d) for d in diags]
    return diags[0]


# --- the baseline -----------------------------------------------------------------------------

def test_valid_spec_loads_with_locations(tmp_path):
    path = write(tmp_path, SPEC)
    doc = archspec.load(path)
    assert doc.data == {"archspec": 1, "name": "t", "input": {"x": [3, 8, 8]}, "network": ["relu"]}
    assert doc.file == str(path)
    assert (doc.loc(("network", 0)).line, doc.loc(("network", 0)).col) == (5, 5)
    assert (doc.loc(("input", "x", 2)).line, doc.loc(("input", "x", 2)).col) == (3, 19)
    assert (doc.key_loc(("network",)).line, doc.key_loc(("network",)).col) == (4, 1)
    assert archspec.check(path).output.shape == (3, 8, 8)


# --- tags ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("tagged", [
    "!!python/object:os.system x",
    "!!python/object/apply:os.system ['true']",
    "!!python/object/new:os.system ['true']",
    "!!python/name:os.system ''",
    "!!python/tuple [1, 2]",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!timestamp 2001-12-14",
    "!custom thing",
    "!<tag:example.com,2000:app/foo> x",
])
def test_non_core_tags_are_rejected(tmp_path, tagged):
    d = only(load_errors(tmp_path, f"a: {tagged}\n"))
    assert where(d) == ("AS011", 1, 4)
    assert "not allowed" in d.message


def test_unsafe_tag_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    text = SPEC + f"description: !!python/object/apply:os.system ['touch {marker}']\n"
    d = only(check_errors(tmp_path, text))
    assert where(d) == ("AS011", 6, 14)
    assert not marker.exists()


def test_unsafe_tag_on_a_key_and_deep_inside_is_rejected(tmp_path):
    d = only(load_errors(tmp_path, "a:\n  b:\n    - 1\n    - !!python/name:os.system x\n"))
    assert where(d) == ("AS011", 4, 7)
    d = only(load_errors(tmp_path, "? !!python/name:os.system k\n: 1\n"))
    assert where(d) == ("AS011", 1, 3)


def test_core_tags_are_plain_data(tmp_path):
    doc = archspec.load(write(tmp_path, "a: !!str 010\nb: !!int 12\nc: !!float 1\nd: ! yes\ne: !!null\n"))
    assert doc.data == {"a": "010", "b": 12, "c": 1.0, "d": "yes", "e": None}


# --- aliases ------------------------------------------------------------------------------------

def test_alias_is_rejected(tmp_path):
    d = only(load_errors(tmp_path, "a: &x 1\nb: *x\n"))
    assert where(d) == ("AS014", 2, 4)
    assert "*x" in d.message
    assert "blocks" in d.hint


def test_billion_laughs_is_rejected_at_the_first_alias(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    start = time.perf_counter()
    d = only(load_errors(tmp_path, "\n".join(lines) + "\n"))
    assert time.perf_counter() - start < 1.0
    assert where(d) == ("AS014", 2, 8)


def test_self_referential_alias_is_rejected(tmp_path):
    d = only(load_errors(tmp_path, "a: &a [1, *a]\n"))
    assert where(d) == ("AS014", 1, 11)


def test_anchor_without_alias_is_harmless(tmp_path):
    assert archspec.load(write(tmp_path, "a: &x 1\n")).data == {"a": 1}


# --- duplicate and merge keys --------------------------------------------------------------------

def test_duplicate_top_level_key(tmp_path):
    d = only(load_errors(tmp_path, "a: 1\nb: 2\na: 3\n"))
    assert where(d) == ("AS012", 3, 1)
    assert d.message == "duplicate key 'a'"
    assert d.path == "a"
    (note, first), = d.related
    assert "first" in note and (first.line, first.col) == (1, 1)


def test_duplicate_nested_key(tmp_path):
    text = SPEC + "blocks:\n  cbr:\n    body: [relu]\n    doc: x\n    body: [sigmoid]\n"
    d = only(check_errors(tmp_path, text))
    assert where(d) == ("AS012", 10, 5)
    assert d.path == "blocks.cbr.body"
    assert [(l.line, l.col) for _, l in d.related] == [(8, 5)]


def test_duplicate_key_in_a_flow_mapping_inside_a_list(tmp_path):
    d = only(load_errors(tmp_path, "a:\n  - {b: 1, c: 2, b: 3}\n"))
    assert where(d) == ("AS012", 2, 18)
    assert d.path == "a[0].b"


def test_every_duplicate_key_is_reported(tmp_path):
    diags = load_errors(tmp_path, "a: 1\nb: 2\na: 3\nb: 4\n")
    assert [where(d) for d in diags] == [("AS012", 3, 1), ("AS012", 4, 1)]


def test_merge_key_is_rejected(tmp_path):
    d = only(load_errors(tmp_path, "base: {x: 1}\nderived:\n  <<: {y: 2}\n"))
    assert where(d) == ("AS013", 3, 3)


def test_quoted_merge_key_is_a_plain_key(tmp_path):
    assert archspec.load(write(tmp_path, '"<<": 1\n')).data == {"<<": 1}


# --- ambiguous scalars ----------------------------------------------------------------------------

@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "Yes", "NO", "On", "OFF"])
def test_yaml11_booleans_are_ambiguous(tmp_path, word):
    d = only(load_errors(tmp_path, f"a: {word}\n"))
    assert where(d) == ("AS015", 1, 4)
    assert d.path == "a"
    assert "true/false" in d.hint


def test_yaml11_boolean_in_a_layer_is_located(tmp_path):
    text = SPEC.replace("  - relu\n", "  - conv2d: {out: 4, kernel: 3, bias: no}\n")
    d = only(check_errors(tmp_path, text))
    assert where(d) == ("AS015", 5, 39)
    assert d.path == "network[0].conv2d.bias"


@pytest.mark.parametrize("quoted", ['"yes"', "'no'", '"on"', "'off'"])
def test_quoted_yes_is_a_string(tmp_path, quoted):
    path = write(tmp_path, SPEC + f"description: {quoted}\n")
    assert archspec.load(path).data["description"] == quoted[1:-1]
    assert archspec.check(path).graph.description == quoted[1:-1]


def test_real_booleans_are_booleans(tmp_path):
    doc = archspec.load(write(tmp_path, "a: true\nb: False\nc: TRUE\nd: y\ne: n\n"))
    assert doc.data == {"a": True, "b": False, "c": True, "d": "y", "e": "n"}


@pytest.mark.parametrize("text, hint", [
    ("010", "write 10 without the leading zero"),
    ("00", "write 0 without the leading zero"),
    ("1:30", "plain decimal"),
    ("0x10", "plain decimal"),
    ("0o17", "plain decimal"),
    ("1_000", "plain decimal"),
])
def test_yaml11_numbers_are_ambiguous(tmp_path, text, hint):
    d = only(load_errors(tmp_path, f"a: {text}\n"))
    assert where(d) == ("AS015", 1, 4)
    assert hint in d.hint


def test_quoted_numbers_are_strings(tmp_path):
    assert archspec.load(write(tmp_path, "a: \"010\"\nb: '1:30'\n")).data == {"a": "010", "b": "1:30"}


def test_plain_numbers(tmp_path):
    doc = archspec.load(write(tmp_path, "a: +1\nb: -0\nc: 1e3\nd: 0.5\ne: -7\n"))
    assert doc.data == {"a": 1, "b": 0, "c": 1000.0, "d": 0.5, "e": -7}
    assert type(doc.data["c"]) is float


# --- numbers out of range -------------------------------------------------------------------------

def test_huge_integer_is_rejected_fast(tmp_path):
    start = time.perf_counter()
    d = only(load_errors(tmp_path, "a: " + "9" * 5000 + "\n"))
    assert time.perf_counter() - start < 1.0
    assert where(d) == ("AS104", 1, 4)
    assert "5,000 digits" in d.message


def test_integer_digit_bound(tmp_path):
    assert archspec.load(write(tmp_path, "a: " + "9" * 30 + "\n")).data == {"a": int("9" * 30)}
    assert where(only(load_errors(tmp_path, "a: -" + "9" * 31 + "\n"))) == ("AS104", 1, 4)


@pytest.mark.parametrize("text", [".nan", ".NaN", ".NAN", ".inf", ".Inf", "-.inf", "+.INF"])
def test_non_finite_numbers_are_rejected(tmp_path, text):
    d = only(load_errors(tmp_path, f"a: 1\nb: {text}\n"))
    assert where(d) == ("AS104", 2, 4)
    assert "non-finite" in d.message
    assert d.path == "b"


@pytest.mark.parametrize("text", ["1e999", "-1.5e400"])
def test_overflowing_float_literal_is_rejected(tmp_path, text):
    d = only(load_errors(tmp_path, f"a: {text}\n"))
    assert where(d) == ("AS104", 1, 4)


def test_overflowing_float_does_not_reach_a_layer(tmp_path):
    text = SPEC.replace("  - relu\n", "  - leaky_relu: {slope: 1e999}\n")
    d = only(check_errors(tmp_path, text))
    assert where(d) == ("AS104", 5, 25)


# --- size and depth limits ------------------------------------------------------------------------

def test_deep_nesting_is_rejected_without_crashing(tmp_path):
    start = time.perf_counter()
    d = only(load_errors(tmp_path, "[" * 100_000))
    assert time.perf_counter() - start < 3.0
    assert where(d) == ("AS002", 1, 65)
    assert "nesting deeper than 64 levels" in d.message
    assert "--max-depth" in d.hint


@pytest.mark.parametrize("text, col", [("{a: " * 100_000, 257), ("- " * 100_000 + "x", 129)])
def test_deep_nesting_other_styles(tmp_path, text, col):
    d = only(load_errors(tmp_path, text))
    assert where(d) == ("AS002", 1, col)


def test_depth_limit_is_configurable(tmp_path):
    assert archspec.load(write(tmp_path, "a: [[1]]\n"), limits=Limits(max_depth=3)).data == {"a": [[1]]}
    d = only(load_errors(tmp_path, "a: [[[1]]]\n", limits=Limits(max_depth=3)))
    assert where(d) == ("AS002", 1, 6)


def test_file_over_the_size_limit_is_rejected_by_size(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.truncate(50 * 1024 * 1024)  # sparse: 50 MB that are never read
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        archspec.check(big)
    assert time.perf_counter() - start < 0.5
    d = only(list(info.value.diagnostics))
    assert where(d) == ("AS002", 1, 1)
    assert d.loc.file == str(big)
    assert "52,428,800" in d.message and "1,048,576" in d.message
    assert "--max-file-bytes" in d.hint


def test_size_limit_is_configurable_and_exact(tmp_path):
    path = write(tmp_path, "a: 1\n" + "#" * 94 + "\n")  # 100 bytes
    assert archspec.load(path, limits=Limits(max_file_bytes=100)).data == {"a": 1}
    with pytest.raises(SpecError) as info:
        archspec.load(path, limits=Limits(max_file_bytes=99))
    assert where(info.value.diagnostics[0]) == ("AS002", 1, 1)


def test_size_limit_applies_to_yaml_text_too():
    with pytest.raises(SpecError) as info:
        archspec.load_text("a: 1\n" * 300_000)
    d = only(list(info.value.diagnostics))
    assert where(d) == ("AS002", 1, 1) and d.loc.file == "<string>"


def test_node_limit(tmp_path):
    # root mapping, key, list, then items: the 11th node is the 8th item, at column 5 + 2*7.
    d = only(load_errors(tmp_path, "a: [" + ",".join(["0"] * 20) + "]\n", limits=Limits(max_yaml_nodes=10)))
    assert where(d) == ("AS002", 1, 19)
    assert "--max-yaml-nodes" in d.hint
    assert "more than 10 YAML nodes" in d.message


# --- documents ----------------------------------------------------------------------------------

def test_several_documents(tmp_path):
    d = only(load_errors(tmp_path, "a: 1\n---\nb: 2\n"))
    assert where(d) == ("AS016", 2, 1)
    assert "---" in d.hint


def test_one_explicit_document_is_fine(tmp_path):
    assert archspec.load(write(tmp_path, "---\na: 1\n...\n")).data == {"a": 1}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "   \n"])
def test_empty_file(tmp_path, text):
    d = only(check_errors(tmp_path, text))
    assert where(d) == ("AS018", 1, 1)


def test_root_must_be_a_mapping(tmp_path):
    d = only(check_errors(tmp_path, "- a\n- b\n"))
    assert where(d) == ("AS103", 1, 1)


# --- encodings ----------------------------------------------------------------------------------

def test_non_utf8_byte_is_located(tmp_path):
    d = only(load_errors(tmp_path, b"archspec: 1\nname: t\ndescription: caf\xe9\n"))
    assert where(d) == ("AS017", 3, 17)
    assert "0xe9" in d.message
    assert "UTF-8" in d.hint


def test_non_utf8_byte_on_first_line(tmp_path):
    assert where(only(load_errors(tmp_path, b"\xffa: 1\n"))) == ("AS017", 1, 1)


def test_non_utf8_column_counts_characters(tmp_path):
    d = only(load_errors(tmp_path, "a: \u00e9".encode() + b"\xff\n"))
    assert where(d) == ("AS017", 1, 5)


@pytest.mark.parametrize("encoding, bom", [
    ("utf-16", b""), ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-32", b""),
    ("utf-32-be", b"\x00\x00\xfe\xff"), ("utf-32-le", b"\xff\xfe\x00\x00"),
    ("utf-16-le", b""), ("utf-16-be", b""), ("utf-32-le", b""), ("utf-32-be", b"")])  # the last four: no BOM
def test_utf16_and_utf32_are_rejected(tmp_path, encoding, bom):
    d = only(load_errors(tmp_path, bom + SPEC.encode(encoding)))
    assert where(d) == ("AS017", 1, 1)
    assert "UTF-16" in d.message


def test_utf8_bom_is_accepted(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf" + SPEC.encode())
    assert archspec.check(path).output.shape == (3, 8, 8)


def test_utf8_bom_does_not_shift_locations(tmp_path):
    d = only(check_errors(tmp_path, b"\xef\xbb\xbf" + SPEC.replace("relu", "rellu").encode()))
    assert where(d) == ("AS105", 5, 5)


# --- syntax --------------------------------------------------------------------------------------

def test_tab_indentation(tmp_path):
    d = only(check_errors(tmp_path, SPEC.replace("  - relu", "\t- relu")))
    assert where(d) == ("AS010", 5, 1)
    assert "\\t" in d.message


def test_tab_in_a_mapping(tmp_path):
    d = only(load_errors(tmp_path, "input:\n\tx: [3, 8, 8]\n"))
    assert where(d) == ("AS010", 2, 1)


def test_tab_error_has_a_hint(tmp_path):
    d = only(load_errors(tmp_path, "a:\n\t- 1\n"))
    assert "tab" in d.hint


def test_control_character_is_located_without_tab_hint(tmp_path):
    d = only(load_errors(tmp_path, b"a: \x00\n"))
    assert where(d) == ("AS010", 1, 4)
    assert "tab" not in d.hint


@pytest.mark.parametrize("text, loc", [
    ("a: [1, 2\n", (2, 1)),
    ("a: b: c\n", (1, 5)),
    ("a: 'open\n", (2, 1)),
])
def test_syntax_errors_are_located(tmp_path, text, loc):
    d = only(load_errors(tmp_path, text))
    assert (d.code, d.loc.line, d.loc.col) == ("AS010", *loc)
    assert d.message.startswith("YAML syntax")


@pytest.mark.parametrize("text, loc, hint", [
    ("a:\n  - 1\n   - b: 2\n", (3, 7), "this line starts at column 4, the line above at column 3"),
    ("a:\n  b: 1\n c: 2\n", (3, 2), "this line starts at column 2, the line above at column 3"),
    ("a: {b: 1\n\nc: 2\n", (3, 2), "the `{` opened at line 1, column 4 is still open here"),
])
def test_indentation_and_unclosed_bracket_errors_say_where_the_cause_is(tmp_path, text, loc, hint):
    """PyYAML's message names the symptom, often lines after the cause; the hint names the cause."""
    d = only(load_errors(tmp_path, text))
    assert (d.code, d.loc.line, d.loc.col) == ("AS010", *loc)
    assert hint in d.hint


def test_a_syntax_error_on_an_aligned_line_gets_no_indentation_hint(tmp_path):
    d = only(load_errors(tmp_path, "a: b: c\n"))
    assert d.hint == ""


def test_mapping_keys_must_be_scalars(tmp_path):
    d = only(load_errors(tmp_path, "? [a]\n: 1\n"))
    assert where(d) == ("AS103", 1, 3)
