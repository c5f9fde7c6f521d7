"""The hostile corpus (tests/hostile/): a table of adversarial specs, each rejected by `archspec check`
with exit code 1 and one clear, located first error (code, line, column, message) listed in
tests/hostile/MANIFEST.tsv, quickly (a blow-up guard, not a benchmark), without importing torch or onnx and without
writing any file. Files too big to commit (100,000 levels of nesting, 50 MB) are generated into a
temporary folder next to a copy of the committed ones, and the whole corpus goes through ONE run of
the real command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import archspec
from archspec import SpecError
from archspec.cli import main
from archspec.errors import CODES

HOSTILE = Path(__file__).resolve().parent / "hostile"
MANIFEST = HOSTILE / "MANIFEST.tsv"
HEAVY = ("torch", "onnx", "onnxruntime", "onnxscript")
# A guard against blow-ups (an exponential expansion or a quadratic lookup takes minutes), not a
# benchmark: a loaded runner must not fail it (most files take 0.1-0.2 s here, the deepest about 1 s).
BLOWUP_SECONDS = 10.0
WHOLE_CORPUS_TIMEOUT = 60  # a safety net against hangs, not a benchmark


@dataclass(frozen=True)
class Expected:
    file: str
    code: str
    line: int
    col: int
    message: str  # a substring of the first diagnostic's message
    what: str


def read_manifest() -> list[Expected]:
    rows = []
    for raw in MANIFEST.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        file, code, line, col, message, what = raw.split("\t")
        rows.append(Expected(file, code, int(line), int(col), message, what))
    return rows


ROWS = read_manifest()
BY_NAME = {r.file: r for r in ROWS}
WARNING_CODES = {code for code in CODES if code >= "AS400"}  # a valid spec, reported with a warning


# --- the files too big to commit ----------------------------------------------------------------

def _deep_flow(path: Path) -> None:
    n = 100_000
    path.write_text("archspec: 1\nname: deep\nnetwork: " + "[" * n + "]" * n + "\n", encoding="utf-8")


def _deep_block(path: Path) -> None:
    path.write_text("archspec: 1\nname: deep\nnetwork:\n" + "- " * 100_000 + "relu\n", encoding="utf-8")


def _fifty_megabytes(path: Path) -> None:
    head = b"archspec: 1\nname: big\ninput: {image: [3, 32, 32]}\nnetwork:\n"
    line = b"  - relu   # padding padding padding padding padding padding padding padding padding\n"
    with open(path, "wb") as fh:
        fh.write(head)
        fh.write(line * ((50 * 2**20 - len(head)) // len(line) + 1))


GENERATED: dict[str, Callable[[Path], None]] = {
    "generated_deep_nesting_100000_flow.yaml": _deep_flow,
    "generated_deep_nesting_100000_block.yaml": _deep_block,
    "generated_50_megabytes.yaml": _fifty_megabytes,
}
# Where the first error has no source line to show under it (so no caret is printed): the
# text was never decoded.
NO_SOURCE_LINE = {"empty.yaml", "generated_50_megabytes.yaml", "utf16_bom.yaml"}  # UTF-16 shown as UTF-8 is noise


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the committed corpus plus the generated files, in a fresh folder."""
    folder = tmp_path_factory.mktemp("hostile")
    for row in ROWS:
        if row.file in GENERATED:
            GENERATED[row.file](folder / row.file)
        else:
            shutil.copy2(HOSTILE / row.file, folder / row.file)
    return folder


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below `folders`: name -> (size, mtime_ns)."""
    seen = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                st = os.stat(os.path.join(dirpath, name))
                seen[os.path.join(dirpath, name)] = (st.st_size if name in filenames else -1, st.st_mtime_ns)
    return seen


# --- the table itself ---------------------------------------------------------------------------

def test_manifest_lists_every_committed_file_exactly_once():
    names = [r.file for r in ROWS]
    assert len(names) == len(set(names)), "a file is listed twice"
    committed = {p.name for p in HOSTILE.glob("*.yaml")}
    assert committed == set(names) - set(GENERATED), committed ^ (set(names) - set(GENERATED))
    assert set(GENERATED) <= set(names)
    assert len(ROWS) >= 40
    for r in ROWS:
        assert r.code in CODES, r
        assert r.line >= 1 and r.col >= 1, r
        assert r.message, r


def test_committed_files_are_small():
    """Big inputs are generated at test time, never committed."""
    for p in HOSTILE.iterdir():
        assert p.stat().st_size < 64 * 1024, p


@pytest.mark.parametrize("needle", [
    "tag_python_object", "alias_billion_laughs", "alias_self_reference", "duplicate_key_top",
    "duplicate_key_nested", "merge_key", "yaml11_yes", "yaml11_off_for_number", "yaml11_octal_010",
    "yaml11_sexagesimal", "huge_integer_5000_digits", "nan", "inf", "deep_nesting_100000", "50_megabytes",
    "several_documents", "empty", "non_utf8", "utf16_bom", "utf8_bom_then", "tab_indentation",
    "unknown_layer_kind", "near_miss_key", "wrong_type", "zero_kernel", "negative_stride", "zero_channels",
    "kernel_larger_than_padded_input", "groups_not_dividing_channels", "concat_spatial_mismatch",
    "add_shape_mismatch", "block_self_recursion", "block_mutual_recursion", "repeat_one_billion",
    "nested_repeats_explode", "params_10_to_12", "expr_power_tower", "expr_division_by_zero",
    "expr_unknown_variable", "expr_string_arithmetic", "duplicate_layer_name", "empty_network",
    "reference_unknown_name", "reference_forward", "reference_self", "reference_into_block_internals",
    "unused_input", "duplicate_output_name",
])
def test_corpus_covers_the_issue(needle):
    assert any(needle in r.file for r in ROWS), f"no corpus file for {needle}"


def test_byte_level_files_are_what_they_claim():
    assert (HOSTILE / "empty.yaml").read_bytes() == b""
    assert (HOSTILE / "utf16_bom.yaml").read_bytes().startswith((b"\xff\xfe", b"\xfe\xff"))
    assert (HOSTILE / "utf8_bom_then_unknown_key.yaml").read_bytes().startswith(b"\xef\xbb\xbf")
    with pytest.raises(UnicodeDecodeError):
        (HOSTILE / "non_utf8_latin1.yaml").read_bytes().decode("utf-8")
    assert b"\t" in (HOSTILE / "tab_indentation.yaml").read_bytes()
    assert len((HOSTILE / "huge_integer_5000_digits.yaml").read_text().split("out: ")[1].rstrip("}\n")) == 5000


# --- (a, b, d) the whole corpus through one run of the real command line ------------------------

def _imported_modules(importtime_log: str) -> set[str]:
    """Module names from `python -X importtime`'s stderr lines (`import time: self | cumulative | name`)."""
    mods = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip())
    return mods


def test_whole_corpus_in_one_cli_run(corpus: Path):
    names = [r.file for r in ROWS]
    before = snapshot(corpus, HOSTILE)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "archspec.cli", "check", "--format", "json", *names],
                       cwd=corpus, capture_output=True, text=True, timeout=WHOLE_CORPUS_TIMEOUT, env=env)
    elapsed = time.perf_counter() - started
    assert snapshot(corpus, HOSTILE) == before, "archspec check wrote, changed or deleted a file"
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]

    modules = _imported_modules(r.stderr)
    assert "archspec.load" in modules and "yaml" in modules, "-X importtime logged nothing: the check is blind"
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"checking imported {heavy[:5]}"

    results = json.loads(r.stdout)
    assert [e["file"] for e in results] == names
    wrong = []
    for entry in results:
        want = BY_NAME[entry["file"]]
        if want.code in WARNING_CODES:
            assert entry["ok"] and entry["warnings"], f"{want.file}: a valid spec with a warning"
            first = entry["warnings"][0]
        else:
            assert not entry["ok"], f"{want.file} was accepted"
            assert entry["errors"], want.file
            first = entry["errors"][0]
        got = (first["code"], first["line"], first["col"])
        if got != (want.code, want.line, want.col) or want.message not in first["message"]:
            wrong.append(f"{want.file}: expected {want.code} {want.line}:{want.col} '{want.message}', "
                         f"got {got[0]} {got[1]}:{got[2]} '{first['message']}'")
        assert first["file"] == want.file
    assert not wrong, "\n".join(wrong)
    print(f"{len(names)} hostile specs rejected in {elapsed:.2f}s (one process)")


# --- (c) per file: in-process time, and the human format's location and caret -------------------

def _first_diagnostic_quickly(path: Path, warning: bool = False) -> tuple[archspec.Diagnostic, float]:
    """The first diagnostic (error, or warning of a valid spec) and the best of up to three timings
    (one slow run on a busy CI runner is noise; three are a regression)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        if warning:
            first = archspec.check(path).graph.warnings[0]
        else:
            with pytest.raises(SpecError) as info:
                archspec.check(path)
            first = info.value.diagnostics[0]
        best = min(best, time.perf_counter() - started)
        if best < BLOWUP_SECONDS:
            break
    return first, best


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.file.removesuffix(".yaml"))
def test_each_file_is_rejected_quickly_with_a_located_caret(row: Expected, corpus: Path, capsys, monkeypatch):
    path = corpus / row.file
    before = snapshot(corpus)
    warning = row.code in WARNING_CODES
    first, seconds = _first_diagnostic_quickly(path, warning)
    assert (first.code, first.loc.line, first.loc.col) == (row.code, row.line, row.col), first
    assert row.message in first.message
    assert first.loc.file == str(path)
    assert seconds < BLOWUP_SECONDS, f"{row.file} took {seconds:.2f}s"

    monkeypatch.chdir(corpus)
    capsys.readouterr()
    code = main(["check", row.file])
    out, err = capsys.readouterr()
    assert code == (0 if warning else 1)
    lines = err.splitlines()
    severity = "warning" if warning else "error"
    assert lines[0].startswith(f"{row.file}:{row.line}:{row.col}: {severity}[{row.code}]: "), lines[0]
    assert "Traceback" not in err
    if warning:
        assert out.startswith("1 of 1 specs ok")
    else:
        assert out == ""
        assert lines[-1].startswith("0 of 1 specs ok")
    if row.file in NO_SOURCE_LINE:
        assert not lines[1].endswith("^")
    else:
        gutter = f"{row.line:>4} | "
        assert lines[1].startswith(gutter), lines[:3]
        caret = lines[2].index("^")
        assert set(lines[2][:caret]) <= {" ", "\t"} and lines[2].endswith("^")
        if path.stat().st_size and not row.file.startswith(("utf16", "non_utf8")):
            source = path.read_text(encoding="utf-8-sig").splitlines()[row.line - 1].rstrip()
            shown = lines[1][len(gutter):]
            if len(source) <= 120:
                assert shown == source and caret == len(gutter) + row.col - 1, lines[:3]
            else:  # a long line is clipped around the column, and the caret still points at it
                assert len(shown) <= 126 and shown.strip(".") in source, lines[:3]
                assert lines[1][caret] == source[row.col - 1], lines[:3]
    assert snapshot(corpus) == before


# --- hostile inputs the checker does not yet survive (reported bugs) ------------------------------

def run_bounded(args: list[str], cwd: Path, seconds: float, max_bytes: int,
                memory: int | None = None) -> tuple[int | None, bytes, float]:
    """Runs the command line with a deadline and a cap on the output it may produce (a flood of
    diagnostics can be gigabytes) and optionally on its address space; kills it past either.
    Returns (exit code or None if killed, the first max_bytes of output, seconds)."""
    import select

    def limit_memory() -> None:  # pragma: no cover (runs in the child)
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                            preexec_fn=limit_memory if memory else None)
    out = bytearray()
    try:
        while True:
            left = seconds - (time.perf_counter() - started)
            if left <= 0 or len(out) > max_bytes:
                proc.kill()
                proc.wait()
                return None, bytes(out[:max_bytes]), time.perf_counter() - started
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    return proc.wait(), bytes(out), time.perf_counter() - started
                out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


@pytest.mark.skipif(sys.platform == "win32", reason="uses select() on a pipe")
def test_recurrent_stack_of_a_billion_layers_is_rejected_quickly(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        "archspec: 1\nname: t\ninput: {x: [5, 3]}\nnetwork:\n  - lstm: {hidden: 4, layers: 1000000000}\n")
    code, out, seconds = run_bounded([sys.executable, "-m", "archspec.cli", "check", "spec.yaml"], tmp_path,
                                     seconds=10, max_bytes=1 << 20)
    assert code == 1, f"still running after {seconds:.1f}s"
    assert out.startswith(b"spec.yaml:"), out[:300]
    assert seconds < BLOWUP_SECONDS  # interpreter start-up included


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_AS and select() on a pipe")
def test_adaptive_pool_with_a_huge_output_is_checked_in_constant_time(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        "archspec: 1\nname: t\ninput: {x: [1, 4, 4]}\nnetwork:\n  - adaptive_avgpool2d: {output: [1, 100000000]}\n")
    code, out, seconds = run_bounded([sys.executable, "-m", "archspec.cli", "check", "spec.yaml"], tmp_path,
                                     seconds=10, max_bytes=1 << 20, memory=1 << 30)
    assert code in (0, 1) and b"Traceback" not in out, out[-500:]
    assert seconds < BLOWUP_SECONDS


@pytest.mark.skipif(sys.platform == "win32", reason="uses select() on a pipe")
def test_a_flood_of_errors_on_one_line_prints_a_bounded_report(tmp_path):
    (tmp_path / "spec.yaml").write_text("archspec: 1\nname: t\ndescription: [" + "yes, " * 2000 + "yes]\n")
    code, out, seconds = run_bounded([sys.executable, "-m", "archspec.cli", "check", "spec.yaml"], tmp_path,
                                     seconds=20, max_bytes=1 << 20)
    assert code == 1, f"killed after {seconds:.1f}s and {len(out):,} bytes of output"
    assert out.startswith(b"spec.yaml:3:15: error[AS015]")
    assert len(out) < 1 << 20
