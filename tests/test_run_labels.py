"""`archspec run` names its top-k (a spec's labels, carried in the exported model, or --labels),
says when it shows all classes, checks token ids itself, and prints archspec's error alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import archspec
from archspec.errors import ArchspecError

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "archspec.cli"]
FIVE = """\
archspec: 1
name: five
input: {image: [3, 8, 8]}
meta: {labels: classes.txt}
network: [flatten, {linear: {out: 5}, name: fc}]
"""
NAMES = ["cat", "dog", "bird", "fish", "frog"]


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def five(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("five")
    (folder / "five.yaml").write_text(FIVE)
    (folder / "classes.txt").write_text("\n".join(NAMES) + "\n\n")
    assert cli("export", "five.yaml", "-o", "five.onnx", cwd=folder).returncode == 0
    return folder


def test_run_names_every_class_from_the_spec(five: Path) -> None:
    done = cli("run", "five.onnx", "--batch", "2", cwd=five)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[3] == "  all 5 classes by output value, per sample (class label: value)"
    # the oracle: the same seeded weights and input in PyTorch, ranked by hand
    module = archspec.build(five / "five.yaml", seed=0).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        y = module(torch.from_numpy(x)).numpy()
    for i in range(2):
        ranked = [f"{j} {NAMES[j]}" for j in np.argsort(-y[i], kind="stable")]
        shown = [cell.rsplit(":", 1)[0] for cell in lines[4 + i].split("] ", 1)[1].split("  ")]
        assert shown == ranked


def test_labels_file_overrides_and_must_match(five: Path) -> None:
    (five / "other.txt").write_text("a\nb\nc\nd\ne\n")
    done = cli("run", "five.onnx", "--top", "2", "--labels", "other.txt", cwd=five)
    assert done.returncode == 0 and "top 2 of 5 classes" in done.stdout
    assert all(cell.split(":")[0].split()[1] in "abcde" for cell in done.stdout.splitlines()[4].split("] ")[1].split("  "))
    (five / "short.txt").write_text("a\nb\n")
    bad = cli("run", "five.onnx", "--labels", "short.txt", cwd=five)
    assert bad.returncode == 1 and bad.stderr == "archspec: error: labels file short.txt names 2 classes but its output has 5\n"


def test_spec_labels_must_match_the_output(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(FIVE.replace("labels: classes.txt", "labels: [a, b]"))
    with pytest.raises(ArchspecError, match="spec 'five' names 2 classes but its output has 5"):
        archspec.export(path, tmp_path / "s.onnx")


TAGGER = """\
archspec: 1
name: tagger
input: {tokens: {shape: [time=6], dtype: int64}}
network: [{embedding: {vocab: 30, dim: 4}}, {linear: {out: 3}}]
"""


def test_out_of_range_token_is_archspecs_one_line(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TAGGER)
    assert cli("export", "t.yaml", "-o", "t.onnx", cwd=tmp_path).returncode == 0
    np.save(tmp_path / "ids.npy", np.array([1, 2, 30, 4, -1, 5], dtype=np.int64))
    done = cli("run", "t.onnx", "--input", "ids.npy", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == ("archspec: error: input 'tokens' has token id 30 at (0, 2), outside the vocabulary "
                           "0..29 (2 such ids)\n")
    # without archspec's metadata, onnxruntime finds it: still one line, no coloured log line before it
    model = onnx.load(tmp_path / "t.onnx")
    del model.metadata_props[:]
    onnx.save(model, tmp_path / "bare.onnx")
    done = cli("run", "bare.onnx", "--input", "ids.npy", cwd=tmp_path)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("archspec: error: onnxruntime failed:") and "\x1b[" not in done.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_seeded_build_on_cuda_equals_the_cpu_build() -> None:
    """The same seed gives the same weights whatever the device: they are drawn on the CPU and moved."""
    spec = ROOT / "specs" / "lenet.yaml"
    cpu = archspec.build(spec, seed=3).state_dict()
    gpu = archspec.build(spec, seed=3, device="cuda").state_dict()
    assert all(v.device.type == "cuda" and torch.equal(cpu[k], v.cpu()) for k, v in gpu.items())
