"""`mul` broadcasting across per-sample ranks: per-sample shapes align on the right, behind the
batch axis (never against it), in the PyTorch lowering and in the emitted ONNX graph alike. The
oracle is the product written out in numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import archspec
from archspec.exporter import example_input, export_model
from archspec.lower import build_module
from archspec.runtime import Session

SE = """archspec: 1
name: se_gate
input: {x: [4, 5, 6]}
network:
  - {adaptive_avgpool2d: {output: 1}, name: gate}
  - {global_avgpool, from: x, name: v}
  - {permute: {dims: [1, 2, 0]}, from: x, name: hwc}
  - {permute: {dims: [1, 2, 0]}, from: gate, name: gate_hwc}
  - {mul, from: [gate_hwc, hwc, v]}
"""

SEQUENCE = """archspec: 1
name: feature_gate
input: {x: [time=6, 3]}
network:
  - {gru: {hidden: 3, output: last}, name: h}
  - {mul, from: [x, h]}
"""


def _run_both(tmp_path: Path, text: str, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    report = archspec.check(spec)
    result = export_model(report, tmp_path / "m.onnx", seed=3)
    assert result.compared
    module = build_module(report, seed=3).eval()
    x = example_input(report, (batch, *[d.size + 2 if d.name else d.size for d in report.graph.input.dims]), seed=1)
    with torch.no_grad():
        torch_out = module(torch.from_numpy(x)).numpy()
    onnx_out = Session(result.path).run({"x": x})["output"]
    return x, torch_out, onnx_out, dict(module.state_dict())


def test_gate_and_vector_broadcast_behind_the_batch_axis(tmp_path: Path) -> None:
    """Channels last (H, W, C): a (N, C) vector meets C on the right, behind the batch axis."""
    x, torch_out, onnx_out, _ = _run_both(tmp_path, SE, batch=3)
    hwc = x.transpose(0, 2, 3, 1)  # (N, H, W, 4)
    gate = hwc.mean(axis=(1, 2), keepdims=True)  # (N, 1, 1, 4)
    v = x.mean(axis=(2, 3))[:, None, None, :]  # (N, 4) aligned on C: (N, 1, 1, 4)
    want = gate * hwc * v
    assert torch_out.shape == onnx_out.shape == (3, 5, 6, 4)
    np.testing.assert_allclose(torch_out, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(onnx_out, want, rtol=1e-5, atol=1e-6)


def test_state_vector_gates_every_time_step(tmp_path: Path) -> None:
    x, torch_out, onnx_out, state = _run_both(tmp_path, SEQUENCE, batch=2)
    assert torch_out.shape == onnx_out.shape == (2, 8, 3)  # time at another length than exported
    gru = torch.nn.GRU(3, 3, batch_first=True)
    gru.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()})
    with torch.no_grad():
        h = gru(torch.from_numpy(x))[1][-1].numpy()  # (N, hidden)
    want = x * h[:, None, :]
    np.testing.assert_allclose(torch_out, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(onnx_out, want, rtol=1e-5, atol=1e-6)
