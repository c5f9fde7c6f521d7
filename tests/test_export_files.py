"""Exports never leave a truncated model or a temporary file behind: not when killed half-way,
not when several run at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "archspec.cli"]


def start_export(spec: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "export", str(ROOT / "specs" / f"{spec}.yaml"), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_staging(folder: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(folder.glob(".*.tmp/*.onnx")):  # the model is written and being verified
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the export never reached its staging step")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_export_leaves_nothing(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "model.onnx"
    proc = start_export("resnet18", out)
    wait_for_staging(tmp_path, proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) != 0
    assert list(tmp_path.iterdir()) == []  # neither the model nor the staging folder


def test_killed_export_leaves_no_model_and_the_next_export_sweeps_its_staging(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    proc = start_export("resnet18", out)
    wait_for_staging(tmp_path, proc)
    proc.kill()  # SIGKILL: no cleanup is possible in the process itself
    proc.wait(timeout=60)
    assert not out.exists()
    assert [p.name.startswith(".model.onnx.") for p in tmp_path.iterdir()] == [True]
    done = subprocess.run([*CLI, "export", str(ROOT / "specs" / "lenet.yaml"), "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    onnx.checker.check_model(str(out), full_check=True)


def test_concurrent_exports_never_mix_outputs(tmp_path: Path) -> None:
    specs = ["lenet", "rnn_classifier", "nin"]
    procs = {s: start_export(s, tmp_path / f"{s}.onnx") for s in specs}
    shared = [start_export(s, tmp_path / "shared.onnx") for s in ("lenet", "rnn_classifier")]
    for s, proc in procs.items():
        assert proc.wait(timeout=600) == 0, proc.communicate()
    for proc in shared:
        assert proc.wait(timeout=600) == 0, proc.communicate()
    for s in specs:
        meta = {p.key: p.value for p in onnx.load(str(tmp_path / f"{s}.onnx")).metadata_props}
        assert meta["archspec.spec"] == s
    shared_model = onnx.load(str(tmp_path / "shared.onnx"))  # whichever finished last, complete and valid
    onnx.checker.check_model(shared_model, full_check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{s}.onnx" for s in specs] + ["shared.onnx"])
