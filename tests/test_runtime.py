"""onnxruntime inference: sessions built once and reused, inputs from files or random, strict
CUDA vs automatic fallback on this CPU-only machine, and the torch-vs-ORT benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import archspec
from archspec import runtime
from archspec.exporter import export_model
from archspec.runtime import DeviceError, RunError, Session, physical_cores, run_model, session_for

ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "specs" / "lenet.yaml"
TAGGER = """
archspec: 1
name: tiny_tagger
input: {tokens: {shape: [time=9], dtype: int64}}
network:
  - {embedding: {vocab: 30, dim: 8}, name: embed}
  - {gru: {hidden: 8, bidirectional: true, output: sequence}, name: gru}
  - {linear: {out: 4}, name: fc}
"""
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory) -> tuple[archspec.Report, Path]:
    report = archspec.check(LENET)
    path = tmp_path_factory.mktemp("lenet") / "lenet.onnx"
    export_model(report, path)
    return report, path


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> tuple[archspec.Report, Path]:
    folder = tmp_path_factory.mktemp("tagger")
    (folder / "tagger.yaml").write_text(textwrap.dedent(TAGGER))
    report = archspec.check(folder / "tagger.yaml")
    export_model(report, folder / "tagger.onnx")
    return report, folder / "tagger.onnx"


def cli(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archspec.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


# -- sessions ------------------------------------------------------------------------------------

def test_physical_cores() -> None:
    n = physical_cores()
    assert 1 <= n <= (os.cpu_count() or 1)


def test_session_defaults_and_reuse(lenet) -> None:
    _, path = lenet
    s = session_for(path)
    assert session_for(path) is s  # created once, reused
    assert s.providers == ("CPUExecutionProvider",) and s.device == "cpu" and s.notice == ""
    assert s.threads == physical_cores()
    assert s.inputs == (("image", ("batch", 1, 28, 28), "tensor(float)"),)
    assert s.outputs == ("output",)
    assert s.metadata["archspec.spec"] == "lenet"
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # the file changed: a new session
    assert session_for(path) is not s


@pytest.mark.parametrize("mode,spin,stop", [("during_run", "1", "1"), ("always", "1", None), ("never", "0", None)])
def test_spinning_modes(lenet, mode: str, spin: str, stop: str | None) -> None:
    _, path = lenet
    s = Session(path, spinning=mode)
    opts = s._session.get_session_options()

    def entry(key: str) -> str | None:
        try:
            return opts.get_session_config_entry(key)
        except RuntimeError:  # "does not have configuration with key"
            return None

    assert (entry("session.intra_op.allow_spinning"), entry("session.force_spinning_stop")) == (spin, stop)
    x = s.example_inputs(2)
    np.testing.assert_array_equal(s.run(x)["output"], Session(path).run(x)["output"])


def test_unknown_spinning_mode(lenet) -> None:
    with pytest.raises(RunError, match="unknown spinning mode 'yes'; choose one of during_run, always, never"):
        Session(lenet[1], spinning="yes")


def test_run_random_batch_matches_torch(lenet) -> None:
    report, path = lenet
    result = run_model(path, batch=3, seed=7)
    assert result.inputs == {"image": (3, 1, 28, 28)}
    y = result.outputs["output"]
    assert y.shape == (3, 10) and y.dtype == np.float32
    x = Session(path).example_inputs(3, seed=7)["image"]
    with torch.no_grad():
        want = archspec.build(report, seed=0).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    text = result.summary(top=3)
    assert "output 'output': 3x10 float32" in text and text.count("top 3 of 10 classes") == 1 and text.count("\n  [") == 3


def test_run_input_file_single_sample_and_errors(lenet, tmp_path: Path) -> None:
    _, path = lenet
    np.save(tmp_path / "one.npy", np.random.rand(1, 28, 28))  # float64, no batch axis
    result = run_model(path, tmp_path / "one.npy")
    assert result.inputs == {"image": (1, 1, 28, 28)} and result.outputs["output"].shape == (1, 10)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(RunError, match=r"axis 1 is 3, the model needs 1"):
        run_model(path, tmp_path / "bad.npy")
    with pytest.raises(RunError, match="cannot read input"):
        run_model(path, tmp_path / "absent.npy")
    with pytest.raises(RunError, match="no such model file"):
        run_model(tmp_path / "absent.onnx")


def test_run_token_model_uses_nominal_length_and_vocab(tagger) -> None:
    _, path = tagger
    feeds = Session(path).example_inputs(batch=2)
    assert feeds["tokens"].shape == (2, 9) and feeds["tokens"].dtype == np.int64
    assert feeds["tokens"].max() < 30
    result = run_model(path, {"tokens": np.arange(13) % 30})  # one sample of another length
    assert result.outputs["output"].shape == (1, 13, 4)
    assert "min " in result.summary()
    with pytest.raises(RunError, match="takes integer token ids"):
        run_model(path, np.zeros((1, 9), np.float32))


def test_run_spec_exports_first(tmp_path: Path) -> None:
    (tmp_path / "tagger.yaml").write_text(textwrap.dedent(TAGGER))
    result = run_model(tmp_path / "tagger.yaml", batch=2)
    assert result.outputs["output"].shape == (2, 9, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tagger.yaml"]


# -- devices -------------------------------------------------------------------------------------

@pytest.mark.skipif(HAS_CUDA, reason="needs an onnxruntime without CUDA")
def test_cuda_is_strict_and_auto_falls_back(lenet) -> None:
    _, path = lenet
    with pytest.raises(DeviceError, match="no CUDA execution provider.*onnxruntime-gpu"):
        run_model(path, device="cuda")
    result = run_model(path, device="auto")
    assert result.device == "cpu" and result.providers == ("CPUExecutionProvider",)
    assert result.notice.startswith("CUDA unavailable, running on the CPU")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        Session(path, device="tpu")


def test_silent_cuda_fallback_is_detected(lenet, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu on a machine where CUDA cannot start: ORT quietly runs on the CPU. Simulated
    by claiming the provider exists; the session's real providers give the fallback away."""
    _, path = lenet
    real = ort.get_available_providers()
    if "CUDAExecutionProvider" not in real:
        monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    s_auto = Session(path, device="auto")
    if s_auto.device == "cuda":
        pytest.skip("CUDA works here")
    assert "fell back to CPUExecutionProvider" in s_auto.notice
    with pytest.raises(DeviceError, match="could not start CUDA"):
        Session(path, device="cuda")


def test_cli_run(lenet) -> None:
    _, path = lenet
    r = cli("run", path, "--random", "--batch", "2", "--top", "3")
    assert r.returncode == 0, r.stderr
    assert "inputs: image 2x1x28x28" in r.stdout and r.stdout.count("top 3 of 10 classes") == 1 and r.stdout.count("\n  [") == 2
    if not HAS_CUDA:
        r = cli("run", path, "--device", "cuda")
        assert r.returncode == 1 and r.stdout == ""
        assert "archspec: error: device 'cuda' unavailable:" in r.stderr
        r = cli("run", path, "--device", "auto")
        assert r.returncode == 0 and "archspec: notice: CUDA unavailable" in r.stderr
        assert "ran on cpu" in r.stdout


def test_cli_run_spec_and_input(tmp_path: Path) -> None:
    (tmp_path / "tagger.yaml").write_text(textwrap.dedent(TAGGER))
    np.save(tmp_path / "tokens.npy", np.array([[1, 2, 3, 4, 5]]))
    r = cli("run", tmp_path / "tagger.yaml", "--input", tmp_path / "tokens.npy")
    assert r.returncode == 0, r.stderr
    assert "inputs: tokens 1x5" in r.stdout and "output 'output': 1x5x4 float32" in r.stdout
    r = cli("run", tmp_path / "tagger.yaml", "--batch", "0")
    assert r.returncode == 2


# -- bench ----------------------------------------------------------------------------------------

def test_time_interleaved_alternates_and_measures() -> None:
    order: list[str] = []

    def slow() -> None:
        order.append("a")
        time.sleep(0.002)

    def fast() -> None:
        order.append("b")

    a, b = runtime.time_interleaved([slow, fast], rounds=4, warmup=1, min_block=0.004)
    assert a.rounds == b.rounds == 4 and a.calls >= 1 and b.calls > a.calls
    assert a.median >= 0.0019 and b.median < a.median and a.min <= a.q1 <= a.median <= a.q3 <= a.max
    body = "".join(order[2:])  # after one warm-up call each: blocks of a, then b, per round
    assert body == ("a" * a.calls + "b" * b.calls) * 4


def test_bench_model_and_table(tmp_path: Path) -> None:
    rows = runtime.bench_model(LENET, batches=(1, 4), rounds=3, warmup=1, min_block=0.002)
    assert [r.batch for r in rows] == [1, 4]
    report = archspec.check(LENET)
    for r in rows:
        assert r.macs == report.totals.macs and r.exporter.startswith("emitted")
        assert r.torch.median > 0 and r.ort.median > 0
        assert r.gflops(r.ort) == pytest.approx(2 * r.macs * r.batch / r.ort.median / 1e9)
    table = runtime.bench_table(rows).splitlines()
    assert table[0].startswith("| spec |") and set(table[1]) == {"|", "-"}
    assert len(table) == 4 and table[2].startswith("| lenet | 1x28x28 | emitted, opset 17 | ")
    assert [cells.split(" | ")[4] for cells in table[2:]] == ["1", "4"]  # the batch column
    assert not list(tmp_path.iterdir())


def test_cli_bench_and_tool(tmp_path: Path) -> None:
    spec = tmp_path / "tagger.yaml"
    spec.write_text(textwrap.dedent(TAGGER))
    r = cli("bench", spec, "--batch", "1,2", "--rounds", "2", "--warmup", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("| spec |") and len(lines) == 4
    assert lines[3].startswith("| tiny_tagger | 9 | emitted, opset 17 | ") and lines[3].split(" | ")[4] == "2"
    r = cli("bench", spec, "--batch", "x")
    assert r.returncode == 2
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_inference.py"), str(spec), "--rounds", "2",
                        "--warmup", "1", "--profile", "tagger", "--json", "out.json"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "| tiny_tagger | 9 | emitted, opset 17 | " in r.stdout and "| tiny_tagger | 18 | emitted, opset 17 | " in r.stdout
    assert "GFLOP/s -- the reference" in r.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    assert [(row["spec"], row["batch"], row["input_shape"]) for row in data["rows"]] == [
        ("tiny_tagger", b, [n]) for n in (9, 18) for b in (1, 8)]
    assert data["gemm_gflops"] > 0 and data["markdown"].endswith(r.stdout.strip().splitlines()[-1])
    profile = data["profiles"]["tagger"]
    assert {o["op"] for o in profile["ort_ops"]} >= {"GRU", "Gather"}  # the embedding is a Gather
    assert any("gru" in o["op"] for o in profile["torch_ops"]) and profile["torch_self_us"] > 0


def test_bench_inference_merge_keeps_the_rows_of_specs_not_measured_again() -> None:
    """tools/bench_inference.py --merge: an earlier run's rows stay for the specs the new run did not
    measure, each row says its run and keeps that run's GEMM reference, the header names every run."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import bench_inference
    finally:
        sys.path.remove(str(ROOT / "tools"))

    def row(spec: str, torch_ms: float, ort_ms: float) -> dict:
        t = {"q1": 0.9, "median": 1.0, "q3": 1.1, "min": 0.8, "max": 1.2, "calls": 5, "rounds": 3}
        return {"spec": spec, "batch": 8, "macs": 10**6, "threads": 2, "device": "cpu", "exporter": "emitted, opset 17",
                "export_seconds": 0.1, "input_shape": [3, 8, 8],
                "torch": {k: v * torch_ms / 1e3 if isinstance(v, float) else v for k, v in t.items()},
                "ort": {k: v * ort_ms / 1e3 if isinstance(v, float) else v for k, v in t.items()}}

    def run(started: str, threads: int, gemm: float, rows: list) -> dict:
        return {"header": [f"archspec, {threads} threads (2 physical cores usable); rounds 3, warm-up 1",
                           "load average 0.50 before the run", f"dense float32 GEMM: {gemm} GFLOP/s"],
                "threads": threads, "gemm_gflops": gemm, "load_start": 0.5, "load_end": 0.7, "started": started,
                "seconds": 9.0, "profiles": {}, "rows": rows, "markdown": ""}

    old = run("2026-01-01 00:00:00 UTC", 2, 100.0, [row("lenet", 2.0, 1.0), row("resnet18", 40.0, 20.0)])
    new = run("2026-01-02 00:00:00 UTC", 1, 50.0, [row("resnet18", 60.0, 30.0), row("alexnet", 9.0, 3.0)])
    merged = bench_inference.merged(new, {"inference": old}, runtime.bench_table)
    assert [(r["spec"], r["run"], r["gemm_gflops"]) for r in merged["rows"]] == [  # the zoo's order
        ("lenet", old["started"], 100.0), ("alexnet", new["started"], 50.0), ("resnet18", new["started"], 50.0)]
    assert merged["rows"][2]["torch"]["median"] == pytest.approx(0.06)  # the new run's resnet18, not the old one
    assert any(h.startswith("Rows of lenet: the run started 2026-01-01") and "2 threads" in h for h in merged["header"])
    assert any(h.startswith("Rows of alexnet, resnet18: the run started 2026-01-02") and "1 threads" in h
               for h in merged["header"])
    table = merged["markdown"].split("| spec |", 1)[1]
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == ["| lenet", "| alexnet", "| resnet18"]
    again = bench_inference.merged(run("2026-01-03 00:00:00 UTC", 1, 60.0, [row("lenet", 2.0, 1.0)]), merged,
                                   runtime.bench_table)  # a merge of a merge keeps every run's provenance
    assert [r["run"] for r in again["rows"]] == ["2026-01-03 00:00:00 UTC", new["started"], new["started"]]


def test_gpu_check_says_why_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: run tools/gpu_check.py itself")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "torch sees no CUDA device" in r.stderr, r.stderr
