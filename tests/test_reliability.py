"""Reliability (issue #17): nothing written or removed that the user did not name, every path read
as a path, bounded work and memory, no traceback from any command.

The sweep runs every command with every kind of bad path (missing, a folder, a FIFO, a device, a
path through a file, an unwritable place, the input spec as the output) in-process, and checks
the exit code, that no traceback was printed, that nothing hung, and that the sandbox folder is
byte-for-byte what it was (the special files still special)."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import archspec
from archspec import PathError, SpecError, memory
from archspec.cli import main as cli_main
from archspec.exporter import export_model, verify, write
from archspec.files import commit
from archspec.limits import CEILINGS, Limits
from archspec.runtime import RunError, run_model
from archspec.weights import WeightsError

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "archspec.cli"]
SPEC = "archspec: 1\nname: tiny\ninput: {x: [3, 8, 8]}\nnetwork:\n  - conv2d: {out: 4, kernel: 3}\n  - relu\n" \
       "  - flatten\n  - linear: {out: 5}\n"
CHECKER_SECONDS = 2.0  # the bound on the checker path; torch-side commands get the alarm only
HANG_SECONDS = 120


def run_cli(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str, float]:
    def hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"archspec {' '.join(map(str, args))} hung")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_SECONDS)
    t0 = time.perf_counter()
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    return code, out, err, seconds


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry below `folder`: kind, size and content hash of regular files, mtime."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            content = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else b""
            seen[os.path.relpath(path, folder)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, hash(content))
    return seen


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one good file of each kind, and the bad paths: a folder, a FIFO, a device."""
    root = tmp_path_factory.mktemp("sandbox")
    (root / "spec.yaml").write_text(SPEC)
    report = archspec.check(root / "spec.yaml")
    export_model(report, root / "model.onnx")
    archspec.build(report, seed=0)
    torch.save(archspec.build(report, seed=0).state_dict(), root / "w.pt")
    np.save(root / "in.npy", np.zeros((3, 8, 8), np.float32))
    (root / "adir").mkdir()
    (root / "adir" / "inner.txt").write_text("keep me")
    (root / "afile").write_text("a plain file")
    os.mkfifo(root / "fifo.yaml")
    os.mkfifo(root / "fifo.onnx")
    try:  # a character device like /dev/null, inside the sandbox: replacing it would only hurt here
        os.mknod(root / "device.onnx", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, AttributeError):
        pass
    return root


BAD_INPUTS = {
    "missing": lambda s: s / "nope.yaml",
    "folder": lambda s: s / "adir",
    "fifo": lambda s: s / "fifo.yaml",
    "device": lambda s: Path("/dev/zero"),
    "through_a_file": lambda s: s / "afile" / "x.yaml",
}
INPUT_COMMANDS = {  # PATH is the bad path
    "check": ["check", "PATH"],
    "check-github": ["check", "PATH", "--format", "github"],
    "summary": ["summary", "PATH"],
    "compare": ["compare", "PATH", "SANDBOX/spec.yaml"],
    "graph": ["graph", "PATH", "-o", "SANDBOX/new.dot"],
    "build": ["build", "PATH", "-o", "SANDBOX/new.pt"],
    "export": ["export", "PATH", "-o", "SANDBOX/new.onnx"],
    "export-weights": ["export", "SANDBOX/spec.yaml", "-o", "SANDBOX/new.onnx", "--weights", "PATH"],
    "run": ["run", "PATH"],
    "run-input": ["run", "SANDBOX/model.onnx", "--input", "PATH"],
    "bench": ["bench", "PATH", "--rounds", "1", "--warmup", "0"],
}
BAD_OUTPUTS = {
    "missing_folder": lambda s: s / "nowhere" / "out.x",
    "folder": lambda s: s / "adir",
    "fifo": lambda s: s / "fifo.onnx",
    "device": lambda s: s / "device.onnx",
    "through_a_file": lambda s: s / "afile" / "out.x",
    "unwritable": lambda s: Path("/proc/archspec-test-output.x"),
    "the_input": lambda s: s / "spec.yaml",
}
OUTPUT_COMMANDS = {
    "graph": ["graph", "SANDBOX/spec.yaml", "-o", "PATH"],
    "init": ["init", "PATH", "--force"],
    "schema": ["schema", "-o", "PATH"],
    "build": ["build", "SANDBOX/spec.yaml", "-o", "PATH"],
    "export": ["export", "SANDBOX/spec.yaml", "-o", "PATH"],
}
CHECKER_PATH = {"check", "check-github", "summary", "compare", "graph", "init", "schema"}


def _sweep(capsys, sandbox: Path, template: list[str], bad: Path, command: str) -> None:
    if not os.path.lexists(bad) and bad.name in ("device.onnx",):
        pytest.skip("cannot create a device node here (needs CAP_MKNOD)")
    args = [a.replace("SANDBOX", str(sandbox)).replace("PATH", str(bad)) for a in template]
    before = snapshot(sandbox)
    code, out, err, seconds = run_cli(capsys, *args)
    assert code in (1, 2), (code, out, err)
    assert "Traceback" not in out + err and "<string>" not in out + err
    assert str(bad) in out + err or bad.name in out + err, err
    assert snapshot(sandbox) == before, "a file was written or removed that nobody named"
    if command in CHECKER_PATH:
        assert seconds < CHECKER_SECONDS, f"{seconds:.2f}s"


@pytest.mark.parametrize("kind", BAD_INPUTS)
@pytest.mark.parametrize("command", INPUT_COMMANDS)
def test_every_command_with_a_bad_input_path(capsys, sandbox, command, kind):
    _sweep(capsys, sandbox, INPUT_COMMANDS[command], BAD_INPUTS[kind](sandbox), command)


@pytest.mark.parametrize("command, kind", [(c, k) for c in OUTPUT_COMMANDS for k in BAD_OUTPUTS
                                            if not (k == "the_input" and c in ("init", "schema"))])  # no input
def test_every_command_with_a_bad_output_path(capsys, sandbox, command, kind):
    _sweep(capsys, sandbox, OUTPUT_COMMANDS[command], BAD_OUTPUTS[kind](sandbox), command)


def test_special_files_stay_special(sandbox):
    assert stat.S_ISFIFO(os.lstat(sandbox / "fifo.onnx").st_mode)
    if os.path.lexists(sandbox / "device.onnx"):
        assert stat.S_ISCHR(os.lstat(sandbox / "device.onnx").st_mode)


@pytest.mark.parametrize("args, message", [
    (["bench", "SANDBOX/spec.yaml", "--rounds", "0"], "--rounds: expected an integer of at least 1, got 0"),
    (["run", "SANDBOX/model.onnx", "--batch", "0"], "--batch: expected an integer of at least 1"),
    (["run", "SANDBOX/model.onnx", "--seed", "-1"], "--seed: expected an integer from 0 to"),
    (["check", "SANDBOX/spec.yaml", "--max-nesting", "1000"], "--max-nesting 1,000 is over 48"),
    (["check", "SANDBOX/spec.yaml", "--max-depth", "0"], "--max-depth must be a positive integer"),
    (["init", "SANDBOX/spec.yaml"], "exists; use --force to overwrite it"),
])
def test_bad_options_are_usage_errors(capsys, sandbox, args, message):
    before = snapshot(sandbox)
    code, out, err, _ = run_cli(capsys, *[a.replace("SANDBOX", str(sandbox)) for a in args])
    assert code == 2 and message in err and "Traceback" not in err
    assert snapshot(sandbox) == before


# -- reading: a path is a path ---------------------------------------------------------------------

def test_a_file_named_like_yaml_is_read_not_parsed(tmp_path, capsys):
    """The old loader parsed an argument that was not an existing .yaml path as YAML text."""
    name = "{archspec: 1, name: x, input: {x: [4]}, network: [relu]}"
    (tmp_path / name).write_text("archspec: 1\nname: x\ninput: {x: [4]}\nnetwork: [{linear: {out: 0}}]\n")
    code, _, err, _ = run_cli(capsys, "check", tmp_path / name)
    assert code == 1 and "must be greater than 0" in err
    with pytest.raises(PathError, match="no such file or folder"):
        archspec.check("archspec: 1\nname: x\ninput: {x: [4]}\nnetwork: [relu]\n")


def test_dash_reads_standard_input():
    done = subprocess.run([*CLI, "summary", "-"], input=SPEC, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "tiny" in done.stdout
    bad = subprocess.run([*CLI, "check", "-"], input="archspec: 1\nname: x\nnetwrok: []\n", capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "<stdin>:3:1: error[AS101]: unknown key 'netwrok'" in bad.stderr
    assert "   3 | netwrok: []" in bad.stderr  # the source line, from the text read once


def test_diagnostics_never_read_the_file_again(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("archspec: 1\nname: x\nnetwrok: []\n")
    real_open = os.open
    opened = []
    monkeypatch.setattr(os, "open", lambda p, *a, **k: (opened.append(os.fspath(p)), real_open(p, *a, **k))[1])
    code, _, err, _ = run_cli(capsys, "check", path)
    assert code == 1 and "   3 | netwrok: []" in err
    assert opened.count(str(path)) == 1


def test_special_spec_files_are_refused_quickly(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.yaml")
    for path, what in ((tmp_path / "pipe.yaml", "a FIFO (named pipe)"), (Path("/dev/zero"), "a device")):
        code, _, err, seconds = run_cli(capsys, "check", path)
        assert code == 1 and f"{path}: error[AS001]: cannot read spec: is {what}, not a regular file" in err
        assert seconds < CHECKER_SECONDS


# -- writing: only what the user named -------------------------------------------------------------

def test_output_name_is_never_a_pattern(tmp_path, capsys):
    """`-o 'D/?'` used to sweep `.?.<pid>.*.tmp` folders, which matched an unrelated hidden folder."""
    other = tmp_path / ".a.99999999.abcdefgh.tmp"  # looks like an abandoned staging folder of 'a'
    other.mkdir()
    (other / "precious.txt").write_text("not archspec's")
    (tmp_path / "spec.yaml").write_text(SPEC)
    code, _, err, _ = run_cli(capsys, "export", tmp_path / "spec.yaml", "-o", tmp_path / "?")
    assert code == 0, err
    assert (other / "precious.txt").read_text() == "not archspec's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.99999999.abcdefgh.tmp", "?", "spec.yaml"]


def test_export_onto_the_spec_is_refused(tmp_path, capsys):
    spec = tmp_path / "x.yaml"
    spec.write_text(SPEC)
    code, _, err, _ = run_cli(capsys, "export", spec, "-o", spec)
    assert code == 2 and "is an input of this command" in err
    assert spec.read_text() == SPEC and sorted(os.listdir(tmp_path)) == ["x.yaml"]
    (tmp_path / "link.yaml").symlink_to(spec)  # the same file under another name
    code, _, err, _ = run_cli(capsys, "build", tmp_path / "link.yaml", "-o", spec)
    assert code == 2 and "is an input of this command" in err and spec.read_text() == SPEC


_CONCURRENT = """
import sys
from archspec import check
from archspec.exporter import export_model, write
write.EXTERNAL_DATA_THRESHOLD = 0  # every export writes model + external data
report = check(sys.argv[1])
for seed in range(int(sys.argv[3])):
    export_model(report, sys.argv[2], seed=seed)
"""


def test_concurrent_exports_with_external_data_leave_a_complete_pair(tmp_path):
    """Two writers to one path: whichever commits last, its model names a data file that exists,
    and the data files of replaced models are gone (commits are serialised by a folder lock)."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    out = tmp_path / "m.onnx"
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(tmp_path / "spec.yaml"), str(out), "4"],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()
    onnx.checker.check_model(str(out), full_check=True)  # loads the external data it names
    names = write.external_data_files(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.onnx", "spec.yaml", *names])


def test_commit_removes_only_what_the_replaced_model_named(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    for name in ("m.onnx.0123abcd.data", "m.onnx.data", "shared.data"):
        (tmp_path / name).write_bytes(b"data")
    staged = tmp_path / "staged"
    staged.write_bytes(b"new")
    commit(staged, out, data_of=lambda p: ["m.onnx.0123abcd.data", "shared.data", "../escape.data"])
    assert out.read_bytes() == b"new"
    # its own old data file went; a file shared by other models and anything outside stay
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data", "shared.data"]


# -- nesting: a limit the implementation is proven to take --------------------------------------------

def deep_spec(nesting: int, per_block: int = 20) -> str:
    """`add`s nested `nesting` items deep (two modules per level, the worst case), split over blocks
    so that each stays within the YAML depth limit."""
    lines, remaining, k = ["archspec: 1", "name: deep", "input: {x: [4]}", "blocks:"], nesting - 1, 0
    while remaining > 0:
        adds = min(per_block, remaining - 1) if remaining > per_block else remaining
        remaining -= adds
        body = f"b{k + 1}" if remaining > 0 else "relu"
        remaining -= 1 if remaining > 0 else 0  # the next block's invocation is an item too
        for _ in range(adds):
            body = "{add: {a: [" + body + "], b: [relu]}}"
        lines += [f"  b{k}:", f"    body: [{body}]"]
        k += 1
    return "\n".join(lines + ["network: [b0, {linear: {out: 2}}]"]) + "\n"


def test_nesting_at_the_ceiling_builds_and_exports(tmp_path):
    limits = Limits(**CEILINGS)
    path = tmp_path / "deep.yaml"
    path.write_text(deep_spec(CEILINGS["max_nesting"] - 1))
    report = archspec.check(path, limits=limits)
    result = export_model(report, tmp_path / "deep.onnx", dynamic="none")
    assert result.max_rel_error <= verify.TOLERANCE["float32"]
    path.write_text(deep_spec(CEILINGS["max_nesting"] + 1))
    with pytest.raises(SpecError) as info:
        archspec.check(path, limits=limits)
    assert info.value.diagnostics[0].code == "AS002" and "nested more than 48 deep" in info.value.diagnostics[0].message
    with pytest.raises(ValueError, match="over 48"):
        Limits(max_nesting=49)


# -- memory: refused from the estimate, before allocating ---------------------------------------------

def test_memory_estimate_is_exact_arithmetic_over_the_report():
    vgg16 = archspec.check(ROOT / "specs" / "vgg16.yaml")
    assert vgg16.totals.params == 138_357_544  # torchvision
    assert memory.needed(vgg16, "build") == 2 * 4 * 138_357_544
    assert memory.needed(vgg16, "export") == 4 * 4 * 138_357_544 + 6 * vgg16.totals.activation_bytes
    assert memory.needed(vgg16, "run", batch=8) == 4 * 138_357_544 + 8 * vgg16.totals.activation_bytes


def test_build_export_and_run_refuse_what_does_not_fit(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available", lambda: 200 * 10**6)  # a 200 MB machine
    spec = ROOT / "specs" / "vgg16.yaml"  # 553 MB of weights
    code, _, err, _ = run_cli(capsys, "build", spec)
    assert code == 1 and "archspec: error: building 'vgg16' needs ~1.1 GB of memory, and 200.0 MB are available" in err
    code, _, err, _ = run_cli(capsys, "export", spec, "-o", tmp_path / "v.onnx")
    assert code == 1 and "exporting 'vgg16' needs ~" in err and not os.listdir(tmp_path)
    big_input = tmp_path / "wide.yaml"  # check accepts it: 400 MB of activations per sample, no weights
    big_input.write_text("archspec: 1\nname: wide\ninput: {x: [100000000]}\nnetwork: [relu]\n")
    code, _, err, _ = run_cli(capsys, "run", big_input)
    assert code == 1 and "needs ~" in err and "Traceback" not in err


def test_run_batch_is_sized_before_allocating(tmp_path, capsys, sandbox):
    code, _, err, _ = run_cli(capsys, "run", sandbox / "model.onnx", "--batch", "100000000")
    assert code == 1 and "a random input 'x' of shape (100000000, 3, 8, 8) needs ~76.8 GB" in err


def test_out_of_memory_in_build_is_reported_as_a_size(monkeypatch):
    report = archspec.check(ROOT / "specs" / "lenet.yaml")
    from archspec.layers.dense import Linear

    def no_memory(*args, **kwargs):  # what the CPU allocator raises when the machine runs out
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(Linear, "lower", classmethod(no_memory))
    with pytest.raises(memory.MemoryLimitError, match=r"building linear '.*' \(.*\) ran out of memory; its "
                       r"parameters alone need"):
        archspec.build(report)


def test_npy_header_claims_are_checked_against_the_file(tmp_path):
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**11, 3, 8, 8)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    (tmp_path / "liar.npy").write_bytes(buf.getvalue() + b"\0" * 16)  # 193 bytes claiming 76.8 TB
    model = tmp_path / "m.onnx"
    export_model(archspec.check(archspec.load_text(SPEC)), model)
    with pytest.raises(RunError, match=r"claims shape \(100000000000, 3, 8, 8\) of float32 \(76800.0 GB\), but "
                       r"holds 16 bytes after its header"):
        run_model(model, tmp_path / "liar.npy")
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(RunError, match="cannot read input .* as a .npy array"):
        run_model(model, tmp_path / "text.npy")


@pytest.mark.parametrize("meta", ["{not json", json.dumps({"dims": "many"}),
                                  json.dumps({"dims": [{"size": 3}, {"nominal": 10**20}]}),
                                  json.dumps({"dims": [], "vocab": -1})])
def test_malformed_archspec_metadata_is_an_error_not_a_crash(tmp_path, sandbox, meta):
    model = onnx.load(str(sandbox / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == "archspec.input":
            prop.value = meta
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "c"  # needs the metadata's nominal size
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(RunError, match="archspec.input metadata is malformed"):
        run_model(tmp_path / "m.onnx")


# -- weights files --------------------------------------------------------------------------------------

def _state(tmp_path: Path) -> tuple[archspec.Report, dict]:
    (tmp_path / "spec.yaml").write_text(SPEC)
    report = archspec.check(tmp_path / "spec.yaml")
    return report, archspec.build(report, seed=0).state_dict()


@pytest.mark.parametrize("change, message", [
    (lambda v: v.to(torch.complex64), r"wrong type: linear0.weight \(complex64, spec float32\)"),
    (lambda v: v.to(torch.int64), r"wrong type: linear0.weight \(int64, spec float32\)"),
    (lambda v: v.to(torch.float64) * 1e300, r"beyond float32's range .* in: linear0.weight"),
])
def test_weights_of_the_wrong_type_are_named(tmp_path, change, message):
    report, state = _state(tmp_path)
    state["linear0.weight"] = change(state["linear0.weight"])
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=message):
        export_model(report, tmp_path / "m.onnx", weights=tmp_path / "w.pt")
    assert not (tmp_path / "m.onnx").exists()


def test_weights_file_sizes_are_checked_before_reading(tmp_path):
    report, state = _state(tmp_path)
    bomb = tmp_path / "bomb.pt"  # 256 MB of zeros deflated into 256 KB: a zip bomb
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as fh:
            chunk = b"\0" * (1 << 24)
            for _ in range(16):
                fh.write(chunk)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(WeightsError, match="unpacks to 268,435,456 bytes, more than the spec's state dict "
                       "can take"):
        export_model(report, tmp_path / "m.onnx", weights=bomb)
    big = tmp_path / "big.pt"
    big.write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(WeightsError, match="holds 2,097,152 bytes, more than the spec.s state dict"):
        export_model(report, tmp_path / "m.onnx", weights=big)


# -- agreement ------------------------------------------------------------------------------------------

def test_example_tokens_fit_the_smallest_vocabulary(tmp_path):
    (tmp_path / "vocab.yaml").write_text(
        "archspec: 1\nname: vocab\ninput: {tokens: {shape: [time=12], dtype: int64}}\nnetwork:\n"
        "  - concat:\n      big: [{embedding: {vocab: 1000, dim: 4}}]\n      small: [{embedding: {vocab: 3, dim: 4}}]\n"
        "  - lstm: {hidden: 8}\n")
    result = export_model(archspec.check(tmp_path / "vocab.yaml"), tmp_path / "v.onnx")
    assert result.max_rel_error <= verify.TOLERANCE["float32"]
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "v.onnx")).metadata_props}
    assert json.loads(meta["archspec.input"])["vocab"] == 3
    assert run_model(tmp_path / "v.onnx", batch=2).outputs["output"].shape == (2, 12, 8)


# -- onnxruntime's files under the home folder -------------------------------------------------------------

def test_onnxruntime_writes_nothing_under_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "spec.yaml").write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "ORT_DISABLE_TELEMETRY")}
    env["HOME"] = str(home)
    done = subprocess.run([*CLI, "run", str(tmp_path / "spec.yaml")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(home.rglob("*")) == []
    # the opt-in: onnxruntime's own setting, respected (onnxruntime itself writes nothing when CI is set)
    control = {k: v for k, v in env.items() if k != "CI"}
    done = subprocess.run([sys.executable, "-c", "import archspec.runtime, onnxruntime"],
                          env={**control, "ORT_DISABLE_TELEMETRY": "0"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and (home / ".cache" / "Microsoft" / "DeveloperTools").is_dir()
