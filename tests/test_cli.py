"""The `archspec` command, run as a user runs it: a subprocess, exit codes 0/1/2, diagnostics as
`file:line:col: error[CODE]` with a caret, JSON and GitHub formats, and no torch/onnx import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import archspec

ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "specs" / "lenet.yaml"

GOOD = "archspec: 1\nname: good\ninput: {x: [3, 8, 8]}\nnetwork:\n  - conv2d: {out: 4, kernel: 3}\n  - relu\n"
BAD = "archspec: 1\nname: bad\ninput: {x: [3, 8, 8]}\nnetwork:\n  - conv2d: {out: 4, kernal: 3}\n"


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archspec.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def main(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str]:
    """The same entry point in-process (fast), for the variants; exit code, stdout, stderr."""
    from archspec.cli import main as cli_main

    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as exc:  # argparse, or SystemExit(message) as Python itself reports it
        code = exc.code if isinstance(exc.code, int) else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_check_specs_folder_is_ok():
    r = run("check", "specs/")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    n = len(list((ROOT / "specs").rglob("*.yaml")))
    assert r.stdout.strip() == f"{n} of {n} specs ok"


def test_check_quiet_prints_nothing(capsys):
    assert main(capsys, "check", "-q", LENET) == (0, "", "")


def test_bad_spec_exits_1_with_located_diagnostics_and_a_caret(tmp_path):
    path = write(tmp_path, BAD, "bad.yaml")
    r = run("check", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    # one mistake, one diagnostic: the misspelt key, not also the key it misspells as missing
    assert lines[0] == "bad.yaml:5:22: error[AS101]: unknown key 'kernal'"
    i = 0
    source, caret = lines[i + 1], lines[i + 2]
    assert source.endswith("|   - conv2d: {out: 4, kernal: 3}")
    gutter = source.index("|") + 2
    assert caret.strip() == "^"
    assert caret.index("^") == gutter + 22 - 1  # under the k of kernal
    assert source[caret.index("^"):].startswith("kernal")
    assert "  hint: did you mean 'kernel'?" in lines
    assert "  at: network[0].conv2d.kernal" in lines
    assert lines[-1] == "0 of 1 specs ok, 1 error"
    assert path.exists()


def test_related_locations_are_printed_as_notes(tmp_path, capsys, monkeypatch):
    text = ("archspec: 1\nname: t\ninput: {x: [3, 8, 8]}\nblocks:\n  b:\n    body:\n"
            "      - conv2d: {out: 4, kernel: 30}\nnetwork:\n  - b\n")
    write(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    code, _, err = main(capsys, "check", "spec.yaml")
    assert code == 1
    assert "spec.yaml:7:34: error[AS202]:" in err
    assert "  note: in block 'b' invoked here (spec.yaml:9:5)" in err.splitlines()


def test_good_and_bad_together_exit_1(tmp_path, capsys):
    write(tmp_path, GOOD, "a_good.yaml")
    write(tmp_path, BAD, "b_bad.yaml")
    code, _, err = main(capsys, "check", tmp_path)
    assert code == 1
    assert err.splitlines()[-1] == "1 of 2 specs ok, 1 error"


def test_usage_error_exits_2():
    r = run("check")
    assert r.returncode == 2
    assert "the following arguments are required: PATH" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [
    (),  # no command
    ("check", "--format", "yaml", "specs/lenet.yaml"),
    ("summary",),
    ("check", "--max-params", "lots", "specs/lenet.yaml"),
    ("frobnicate",),
])
def test_usage_errors_exit_2(capsys, args):
    code, _, err = main(capsys, *args)
    assert code == 2
    assert "Traceback" not in err


def test_folder_without_specs_is_a_usage_error(tmp_path, capsys):
    code, _, err = main(capsys, "check", tmp_path)
    assert code == 2
    assert "no .yaml/.yml specs found" in err


@pytest.mark.parametrize("value", ["abc", "0,28,28"])
def test_malformed_input_override_exits_2(capsys, value):
    code, _, err = main(capsys, "summary", LENET, "--input", value)
    assert code == 2
    assert "--input" in err


@pytest.mark.parametrize("fmt", ["human", "github", "json"])
def test_missing_path_is_a_usage_error(tmp_path, capsys, fmt):
    """A path that does not exist is never read as YAML text (issue #15, item 3)."""
    for missing in (tmp_path / "nope.yaml", tmp_path / "specs" / "lenet", tmp_path / "folder/"):
        code, out, err = main(capsys, "check", missing, "--format", fmt)
        assert code == 2
        assert err == f"archspec: error: {missing}: no such file or folder\n"
        assert "<string>" not in out + err and out == ""


def test_format_json(tmp_path):
    write(tmp_path, GOOD, "a_good.yaml")
    write(tmp_path, BAD, "b_bad.yaml")
    r = run("check", "--format", "json", tmp_path)
    assert r.returncode == 1
    good, bad = json.loads(r.stdout)
    assert good["ok"] is True and good["errors"] == [] and good["name"] == "good"
    assert good["output_shape"] == [4, 6, 6]
    assert good["totals"] == archspec.check(tmp_path / "a_good.yaml").totals.as_dict()
    assert good["totals"]["params"] == 4 * 3 * 9 + 4 and good["totals"]["macs"] == 4 * 6 * 6 * 27
    assert bad["ok"] is False and bad["file"].endswith("b_bad.yaml")
    assert [(e["code"], e["line"], e["col"]) for e in bad["errors"]] == [("AS101", 5, 22)]
    e = bad["errors"][0]
    assert e["name"] == "unknown-key" and e["hint"] == "did you mean 'kernel'?"
    assert e["path"] == "network[0].conv2d.kernal" and e["file"].endswith("b_bad.yaml")
    assert e["related"] == []


def test_format_github(tmp_path):
    write(tmp_path, BAD, "bad.yaml")
    r = run("check", "--format", "github", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines == [
        "::error file=bad.yaml,line=5,col=22,title=archspec unknown-key::[AS101] unknown key 'kernal' "
        "(did you mean 'kernel'?)",
    ]


def test_summary_json_matches_the_api():
    r = run("summary", LENET, "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    report = archspec.check(LENET)
    assert data["name"] == "lenet"
    assert data["output_shape"] == [10]
    assert data["totals"] == {"params": 61_706, "macs": report.totals.macs, "flops": report.totals.flops,
                              "activation_bytes": report.totals.activation_bytes}
    layers = data["layers"]
    assert [(l["path"], l["kind"]) for l in layers][:3] == [("conv2d0", "conv2d"), ("sigmoid0", "sigmoid"),
                                                            ("avgpool2d0", "avgpool2d")]
    for layer in layers:
        assert {"path", "kind", "output_shape", "params", "macs"} <= set(layer)
        node = report.node(layer["path"])
        assert (layer["kind"], tuple(layer["output_shape"]), layer["params"], layer["macs"]) == (
            node.kind, node.output.shape, node.params, node.macs)
    assert sum(l["params"] for l in layers) == 61_706
    assert layers[0]["output_shape"] == [6, 28, 28] and layers[0]["params"] == 156


def test_summary_table(capsys):
    code, out, _ = main(capsys, "summary", LENET)
    assert code == 0
    assert out.startswith("lenet: input image 1x28x28 (float32)")
    assert "61,706" in out


BLOCK_READ = """archspec: 1
name: blockread
input: {x: [3, 8, 8]}
blocks:
  cbr:
    params: {out: int}
    body: [{conv2d: {out: out, kernel: 3, padding: 1}}, batchnorm, relu]
network:
  - {cbr: {out: 4}, name: bm}
  - {cbr: {out: 4}, name: second}
  - {concat, from: [bm, second]}
"""


def test_summary_reads_the_names_a_spec_can_write(tmp_path, capsys):
    """`from: bm` names block `bm`: the reads column says `bm`, not its last layer's path `bm.relu0`,
    which no reference can write (AS126); JSON says the same."""
    path = write(tmp_path, BLOCK_READ)
    code, out, _ = main(capsys, "summary", path)
    assert code == 0
    (row,) = [line for line in out.splitlines() if line.lstrip().startswith("concat0")]
    assert re.split(r"\s{3,}", row.strip()) == ["concat0", "concat", "8x8x8", "0", "0", "bm, second"]
    assert "bm.relu0" not in out
    data = json.loads(main(capsys, "summary", path, "--format", "json")[1])
    assert {l["path"]: l["reads"] for l in data["layers"] if l["leaf"]}["concat0"] == ["bm", "second"]
    bad = write(tmp_path, BLOCK_READ.replace("[bm, second]", "[bm.relu0, second]"), "bad.yaml")
    assert "error[AS126]: 'bm.relu0' reaches into the internals of 'bm'" in main(capsys, "check", bad)[2]


def table_rows(out: str) -> list[str]:
    """The body of a printed summary table: the lines from the header's rule to the blank line before `total`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() and set(line.strip()) <= {"─"}) + 1
    return lines[start:lines.index("", start)]


def test_summary_fits_100_columns_one_line_per_row(tmp_path, capsys, monkeypatch):
    """A concat of six long names: the reads column keeps the names that fit whole and says how many
    more (`+4`), so every row stays one line within 100 columns (with the weights column too)."""
    monkeypatch.setenv("COLUMNS", "80")  # not a terminal: archspec's least width, 100
    names = [f"long_branch_name_{k}" for k in range(6)]
    items = "".join(f"  - {{conv2d: {{out: 2, kernel: 1}}, from: x, name: {n}}}\n" for n in names)
    path = write(tmp_path, f"archspec: 1\nname: wide\ninput: {{x: [3, 8, 8]}}\nnetwork:\n{items}"
                           f"  - {{concat, from: [{', '.join(names)}], name: joined}}\n")
    for extra in ((), ("--paper-weights",), ("--depth", "1")):
        code, out, _ = main(capsys, "summary", path, *extra)
        assert code == 0
        assert max(len(line) for line in out.splitlines()) <= 100, out
        rows = table_rows(out)
        assert len(rows) == len(names) + 1
        assert rows[-1].split()[0] == "joined"
        shown, more = re.split(r"\s{3,}", rows[-1].strip())[-1].split(" +")
        shown = shown.split(", ")
        assert shown == names[:len(shown)] and int(more) == len(names) - len(shown), rows[-1]


def test_reads_fit_whole_names_then_a_count():
    from archspec.render import _fit

    names = ["stage1", "stage2", "stage3"]
    assert [_fit(names, room) for room in (22, 21, 17, 16, 9, 8)] == [
        "stage1, stage2, stage3", "stage1, stage2 +1", "stage1, stage2 +1", "stage1 +2", "stage1 +2", "stag… +2"]
    assert _fit(["a_very_long_block_name"], 10) == "a_very_lo…"


@pytest.mark.parametrize("spec", sorted([*(ROOT / "specs").glob("*.yaml"), *(ROOT / "examples").glob("*.yaml")]),
                         ids=lambda p: p.stem)
def test_every_summary_row_is_one_line_of_at_most_100(spec, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = main(capsys, "summary", spec)
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 100
    assert len(table_rows(out)) == len(archspec.check(spec).nodes) - 1


def test_input_override_changes_shapes():
    r = run("summary", LENET, "--format", "json", "--input", "1,32,32")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["input"]["shape"] == [1, 32, 32]
    shapes = {l["path"]: l["output_shape"] for l in data["layers"]}
    assert shapes["conv2d0"] == [6, 32, 32]
    assert shapes["conv2d1"] == [16, 12, 12]
    assert shapes["flatten0"] == [576]
    assert data["output_shape"] == [10]


def test_input_override_with_wrong_rank_is_located(tmp_path, capsys, monkeypatch):
    write(tmp_path, GOOD)
    monkeypatch.chdir(tmp_path)
    code, _, err = main(capsys, "summary", "spec.yaml", "--input", "32,32")
    assert code == 1
    assert "spec.yaml:3:12: error[AS203]: --input has 2 axes but input 'x' has 3" in err


def test_limit_flags(tmp_path, capsys, monkeypatch):
    write(tmp_path, GOOD)
    monkeypatch.chdir(tmp_path)
    code, _, err = main(capsys, "check", "spec.yaml", "--max-params", "100")
    assert code == 1
    assert "spec.yaml:5:5: error[AS002]: params 112 exceed the limit of 100" in err  # at the largest layer
    assert "hint: raise it with --max-params if this spec is trusted" in err
    assert main(capsys, "check", "spec.yaml", "--max-params", "1K")[0] == 0


def test_hostile_spec_exits_1_without_a_traceback(tmp_path, capsys, monkeypatch):
    write(tmp_path, "a: !!python/object/apply:os.system ['touch pwned']\nb: &x [*x]\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = main(capsys, "check", "spec.yaml")
    assert code == 1
    assert err.startswith("spec.yaml:1:4: error[AS011]")
    assert not (tmp_path / "pwned").exists()


NO_TORCH = textwrap.dedent("""\
    import contextlib, io, sys
    import archspec
    from archspec.cli import main
    report = archspec.check(sys.argv[1])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        codes = [main(["check", sys.argv[1]]), main(["summary", sys.argv[1]]),
                 main(["summary", sys.argv[1], "--format", "json"]), main(["check", sys.argv[2]])]
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "onnxruntime", "onnxscript"))
    print(codes, heavy)
    """)


def test_check_and_summary_never_import_torch_or_onnx(tmp_path):
    bad = write(tmp_path, BAD)
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(LENET), str(bad)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0, 0, 0, 1] []"


def test_github_format_escapes_the_file_name(tmp_path, capsys, monkeypatch):
    write(tmp_path, BAD, "a,b.yaml")
    monkeypatch.chdir(tmp_path)
    code, out, _ = main(capsys, "check", "--format", "github", "a,b.yaml")
    assert code == 1
    assert out.splitlines()[0].startswith("::error file=a%2Cb.yaml,line=5,col=22,")
