"""ONNX export by emission: every export is checked (onnx checker, symbolic dynamic axes, shape
inference vs archspec check) and onnxruntime is compared with PyTorch at two sizes of each dynamic
axis; the write is atomic; trained weights round trip; bad weights are named; the CLI works as a
user runs it; without torch the export still works and says what it could not verify."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import archspec
from archspec import PathError
from archspec.exporter import (
    DEFAULT_OPSET,
    ExportError,
    ExportResult,
    export_model,
    initial_state,
    report_at,
    verify,
    vocab_size,
    write,
)
from archspec.runtime import Session
from archspec.weights import WeightsError

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
TOL = verify.TOLERANCE["float32"]

TINY_INCEPTION = """
archspec: 1
name: tiny_inception
input: {image: [3, 32, 32]}
blocks:
  inception:
    params: {c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int}
    body:
      - concat:
          branch1: [{conv2d: {out: c1, kernel: 1}}, relu]
          branch2: [{conv2d: {out: c3r, kernel: 1}}, relu, {conv2d: {out: c3, kernel: 3, padding: 1}}, relu]
          branch3: [{conv2d: {out: c5r, kernel: 1}}, relu, {conv2d: {out: c5, kernel: 5, padding: 2}}, relu]
          branch4: [{maxpool2d: {kernel: 3, stride: 1, padding: 1}}, {conv2d: {out: pool_proj, kernel: 1}}, relu]
network:
  - {conv2d: {out: 16, kernel: 3, padding: 1}, name: stem}
  - relu
  - lrn: {size: 5}
  - {inception: {c1: 8, c3r: 8, c3: 16, c5r: 4, c5: 8, pool_proj: 8}, name: inception3a}
  - maxpool2d: {kernel: 3, stride: 2, ceil_mode: true}
  - {inception: {c1: 16, c3r: 8, c3: 16, c5r: 4, c5: 8, pool_proj: 8}, name: inception3b}
  - adaptive_avgpool2d: {output: 2}
  - flatten
  - dropout: {p: 0.4}
  - {linear: {out: 10}, name: fc}
"""

TINY_RESNET = """
archspec: 1
name: tiny_resnet
input: {image: [3, 32, 32]}
blocks:
  basic:
    params: {out: int, stride: {type: int, default: 1}}
    body:
      - residual:
          body:
            - {conv2d: {out: out, kernel: 3, stride: stride, padding: 1, bias: false}, name: conv1}
            - {batchnorm, name: bn1}
            - {relu, name: relu1}
            - {conv2d: {out: out, kernel: 3, padding: 1, bias: false}, name: conv2}
            - {batchnorm, name: bn2}
          shortcut:
            - {conv2d: {out: out, kernel: 1, stride: stride, bias: false}, name: conv}
            - {batchnorm, name: bn}
      - relu
network:
  - {conv2d: {out: 16, kernel: 3, padding: 1, bias: false}, name: stem}
  - {batchnorm, name: bn}
  - relu
  - {basic: {out: 16}, name: block0}
  - {basic: {out: 32, stride: 2}, name: block1}
  - global_avgpool
  - {linear: {out: 10}, name: fc}
"""

SMALL_RECURRENT = """
archspec: 1
name: small_{kind}
input: {{x: [time=12, 8]}}
network:
  - {{{kind}: {{hidden: 16, layers: 2, output: {output}}}, name: rnn}}
  - {{linear: {{out: 5}}, name: fc}}
"""


def spec_file(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def zoo(name: str, tmp_path: Path | None = None, fallback: str | None = None) -> Path:
    """A zoo spec, or (while the zoo is being written) an equivalent written here."""
    path = SPECS / f"{name}.yaml"
    if path.exists():
        return path
    if fallback is None or tmp_path is None:
        pytest.skip(f"specs/{name}.yaml does not exist yet")
    return spec_file(tmp_path, fallback, f"{name}.yaml")


def leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def assert_verified(result: ExportResult, report: archspec.Report, dynamic: dict[str, int]) -> onnx.ModelProto:
    """What every successful export promises, re-checked from the file itself."""
    assert result.path.exists() and result.external_data is None
    assert dict(result.dynamic_axes) == dynamic
    assert len(result.checks) == 2
    for axis in dynamic.values():  # two different sizes of every dynamic axis were checked
        assert len({c.input_shape[axis] for c in result.checks}) == 2
    assert result.max_rel_error <= TOL
    for c in result.checks:
        assert c.max_rel_error == pytest.approx(c.max_abs_error / max(1.0, c.reference_max))
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for name, axis in dynamic.items():
        assert dims[axis].dim_param == name
    for axis, d in enumerate(report.graph.input.dims, start=1):
        if axis not in dynamic.values():
            assert dims[axis].dim_value == d.size
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["archspec.spec"] == report.graph.name
    assert meta["archspec.spec_sha256"] == report.graph.sha256
    assert meta["archspec.version"] == archspec.__version__
    assert int(meta["archspec.params"]) == report.totals.params
    assert int(meta["archspec.macs"]) == report.totals.macs
    assert [i.name for i in model.graph.input] == [report.graph.input.name]
    assert [o.name for o in model.graph.output] == ["output"]
    assert not [p for p in result.path.parent.iterdir() if p.name.endswith(".tmp")]
    return model


# -- exports of each family, verified at two sizes ------------------------------------------------

def test_lenet(tmp_path: Path) -> None:
    report = archspec.check(zoo("lenet"))
    result = archspec.export(report, tmp_path / "lenet.onnx")
    assert result.opset == DEFAULT_OPSET and result.compared
    model = assert_verified(result, report, {"batch": 0})
    assert [c.input_shape for c in result.checks] == [(1, 1, 28, 28), (3, 1, 28, 28)]
    # every node points back to the spec layer it came from
    docs = [n.doc_string for n in model.graph.node]
    assert all(docs), [n.name for n in model.graph.node if not n.doc_string]
    assert any("conv2d0: conv2d at " in d and "lenet.yaml:" in d for d in docs)
    assert leftovers(tmp_path) == ["lenet.onnx"]


@pytest.mark.parametrize("name", ["rnn_classifier", "gru_classifier", "lstm_classifier", "lstm_peephole_classifier"])
def test_recurrent_classifiers_two_lengths(tmp_path: Path, name: str) -> None:
    kind = name.split("_")[0]
    fallback = SMALL_RECURRENT.format(kind=kind, output="last").replace(f"small_{kind}", name)
    report = archspec.check(zoo(name, tmp_path, fallback))
    result = export_model(report, tmp_path / f"{name}.onnx")
    assert_verified(result, report, {"batch": 0, "time": 1})
    nominal = report.graph.input.shape[0]
    assert [c.input_shape[:2] for c in result.checks] == [(1, nominal), (3, nominal + 7)]
    # a lean graph: the classifier reads the top layer's final state rather than transposing the whole
    # output sequence; GRU/LSTM build no initial states (zero by the operator's definition)
    graph = onnx.load(str(result.path)).graph
    ops = [n.op_type for n in graph.node]
    if kind == "rnn":  # the Scan form (RNN.emit): one (N, H) zero state, then per layer the projection of
        # every step as one MatMul + Add and a Scan of MatMul, Add, Tanh; the lower layer's body also
        # emits its output sequence; no Transpose (the first Scan reads the batch-first input's axis 1)
        assert ops == ["Shape", "Concat", "Expand"] + ["MatMul", "Add", "Scan"] * 2 + ["Gemm"], ops
        bodies = [[b.op_type for b in n.attribute[0].g.node] for n in graph.node if n.op_type == "Scan"]
        assert bodies == [["MatMul", "Add", "Tanh", "Identity"], ["MatMul", "Add", "Tanh"]]
    else:
        assert ops.count(kind.upper()) == 2 and ops.count("Transpose") == 1  # the batch-first input only
        assert not {"Shape", "ConstantOfShape", "Slice"} & set(ops), ops
        # X, W, R, B; the peephole LSTM's P after the three optional inputs it leaves out (lens, initial states)
        extra = [["", "", "", f"lstm.P_l{k}"] for k in (0, 1)] if "peephole" in name else [[], []]
        assert [list(n.input)[4:] for n in graph.node if n.op_type == kind.upper()] == extra
    # and the file really runs at a third length, never checked by the export, with the default
    # (seeded numpy) weights in the spec's own module
    session = Session(result.path)
    module = archspec.build(report).eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in initial_state(report, seed=0).items()})
    x = torch.randn(2, nominal + 20, report.graph.input.shape[1])
    with torch.no_grad():
        np.testing.assert_allclose(session.run(x.numpy())["output"], module(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("text, in_name, out_name", [
    (TINY_INCEPTION, "image", "logits"),
    (TINY_INCEPTION, "relu", "concat"),  # names that are also op types
    (SMALL_RECURRENT.format(kind="gru", output="sequence"), "x", "logits"),
    (SMALL_RECURRENT.format(kind="lstm", output="last"), "linear", "onnx"),
], ids=["cnn", "cnn-op-names", "recurrent", "recurrent-op-names"])
def test_input_and_output_named_by_the_spec(tmp_path: Path, text: str, in_name: str, out_name: str) -> None:
    text = textwrap.dedent(text).replace("input: {image:", f"input: {{{in_name}:").replace(
        "input: {x:", f"input: {{{in_name}:")
    report = archspec.check(spec_file(tmp_path, text + f"output: {out_name}\n"))
    result = export_model(report, tmp_path / "named.onnx")  # verified: ORT output by that name = torch
    model = onnx.load(str(result.path))
    assert [o.name for o in model.graph.output] == [out_name]
    assert [i.name for i in model.graph.input] == [in_name]
    assert Session(result.path).outputs == (out_name,)


@pytest.mark.parametrize("output", ["sequence", "last", "state"])
def test_bidirectional_rnn_scan_at_one_step_and_many(tmp_path: Path, output: str) -> None:
    """The RNN's Scan form (both directions in one Scan, the backward one reversed) against the PyTorch
    module at lengths the export never verified: one step (the backward direction's first output is
    its last) and 40."""
    text = BIDIRECTIONAL_LAST.replace("output: last", f"output: {output}")
    report = archspec.check(spec_file(tmp_path, text))
    session = Session(export_model(report, tmp_path / "birnn.onnx").path)
    module = archspec.build(report).eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in initial_state(report, seed=0).items()})
    for steps in (1, 40):
        x = torch.randn(3, steps, 4)
        with torch.no_grad():
            np.testing.assert_allclose(session.run(x.numpy())["output"], module(x).numpy(), rtol=1e-5, atol=1e-5)


def test_recurrent_sequence_output_has_dynamic_time_axis(tmp_path: Path) -> None:
    report = archspec.check(spec_file(tmp_path, SMALL_RECURRENT.format(kind="gru", output="sequence")))
    result = export_model(report, tmp_path / "seq.onnx")
    model = assert_verified(result, report, {"batch": 0, "time": 1})
    out = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out == ["batch", "time", 5]
    assert [c.output_shape for c in result.checks] == [(1, 12, 5), (3, 19, 5)]


def test_bidirectional_token_tagger(tmp_path: Path) -> None:
    fallback = """
    archspec: 1
    name: bilstm_tagger
    input: {tokens: {shape: [time=20], dtype: int64}}
    network:
      - {embedding: {vocab: 500, dim: 16}, name: embed}
      - {lstm: {hidden: 16, layers: 2, bidirectional: true, output: sequence}, name: lstm}
      - {linear: {out: 17}, name: fc}
    """
    report = archspec.check(zoo("bilstm_tagger", tmp_path, fallback))
    result = export_model(report, tmp_path / "tagger.onnx")
    model = assert_verified(result, report, {"batch": 0, "time": 1})
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    meta = json.loads({p.key: p.value for p in model.metadata_props}["archspec.input"])
    assert meta["dtype"] == "int64" and meta["vocab"] == vocab_size(report)
    n = report.graph.input.shape[0]
    assert [c.output_shape for c in result.checks] == [(1, n, 17), (3, n + 7, 17)]


def test_small_inception_block(tmp_path: Path) -> None:
    report = archspec.check(spec_file(tmp_path, TINY_INCEPTION))
    result = export_model(report, tmp_path / "inception.onnx")
    model = assert_verified(result, report, {"batch": 0})
    concat_docs = [n.doc_string for n in model.graph.node if n.op_type == "Concat"]
    assert len(concat_docs) == 2 and concat_docs[0].startswith("inception3a.merge: concat at ")
    assert "in block 'inception' invoked here" in concat_docs[0]


def test_small_residual_stage_bn_folded_by_onnxruntime(tmp_path: Path) -> None:
    report = archspec.check(spec_file(tmp_path, TINY_RESNET))
    # "train" a little, so batch norm carries real running statistics
    module = archspec.build(report, seed=1).train()
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    for _ in range(3):
        loss = module(torch.randn(8, 3, 32, 32)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    result = export_model(report, tmp_path / "resnet.onnx", weights=module.state_dict())
    model = assert_verified(result, report, {"batch": 0})
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 7 and ops.count("Add") == 2  # emitted as the spec says
    assert result.checks[0].reference_max > 0.1  # a non-trivial output was compared
    # onnxruntime folds BN into the convolutions and fuses Conv+Relu -> FusedConv
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(result.path), opts, providers=["CPUExecutionProvider"])
    optimized = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "BatchNormalization" not in optimized and "FusedConv" in optimized


# -- weights ----------------------------------------------------------------------------------------

def test_trained_weights_round_trip(tmp_path: Path) -> None:
    report = archspec.check(zoo("lenet"))
    module = archspec.build(report, seed=3)
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = tmp_path / "state.pt"
    torch.save(module.state_dict(), weights)
    fresh = archspec.build(report, seed=3)
    assert not torch.equal(fresh.state_dict()["linear2.weight"], module.state_dict()["linear2.weight"])

    result = archspec.export(report, tmp_path / "trained.onnx", weights=weights)
    assert_verified(result, report, {"batch": 0})
    module.eval()
    xs = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        want = module(xs).numpy()
    got = Session(result.path).run(xs.numpy())["output"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(got - want).max() <= TOL * max(1, np.abs(want).max())
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert meta["archspec.weights"].startswith("state.pt sha256:")


def test_weights_saved_by_archspec_build_cli(tmp_path: Path) -> None:
    """`archspec build -o` writes the state dict (and a .json with the spec hash) export accepts."""
    from archspec.lower import build_module, save_state

    report = archspec.check(spec_file(tmp_path, SMALL_RECURRENT.format(kind="lstm", output="state")))
    save_state(build_module(report, seed=5), report, tmp_path / "init.pt")
    result = export_model(report, tmp_path / "m.onnx", weights=tmp_path / "init.pt")
    assert result.notes == () and result.max_rel_error <= TOL
    # weights saved for another version of the spec, with the same tensors: used, and said so
    meta = json.loads((tmp_path / "init.pt.json").read_text())
    (tmp_path / "init.pt.json").write_text(json.dumps({**meta, "spec_sha256": "0" * 64}))
    result = export_model(report, tmp_path / "m.onnx", weights=tmp_path / "init.pt")
    assert len(result.notes) == 1 and "different sha256" in result.notes[0]
    assert "note: init.pt was saved for spec" in result.summary()


def test_opset_is_honoured_or_refused(tmp_path: Path) -> None:
    report = rnn_report(tmp_path)
    for opset in (13, 18, 21):
        assert export_model(report, tmp_path / "m.onnx", opset=opset).opset == opset
        assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == opset
    report = archspec.check(spec_file(tmp_path, TINY_RESNET))
    with pytest.raises(ExportError, match=r"opset 12 is not supported; choose 13\.\.23 \(default 17\)"):
        export_model(report, tmp_path / "r.onnx", opset=12)
    assert not (tmp_path / "r.onnx").exists()


@pytest.fixture()
def lenet_state(tmp_path: Path) -> tuple[archspec.Report, dict]:
    report = archspec.check(zoo("lenet"))
    return report, archspec.build(report, seed=0).state_dict()


def test_weights_missing_key_named(tmp_path: Path, lenet_state) -> None:
    report, state = lenet_state
    del state["linear1.bias"], state["conv2d0.weight"]
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"missing 2: conv2d0\.weight, linear1\.bias") as info:
        export_model(report, tmp_path / "m.onnx", weights=tmp_path / "w.pt")
    assert isinstance(info.value, archspec.ArchspecError)
    assert leftovers(tmp_path) == ["w.pt"]


def test_weights_extra_key_named(tmp_path: Path, lenet_state) -> None:
    report, state = lenet_state
    state["head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"unexpected 1: head\.weight"):
        export_model(report, tmp_path / "m.onnx", weights=tmp_path / "w.pt")


def test_weights_wrong_shape_named(tmp_path: Path, lenet_state) -> None:
    report, state = lenet_state
    state["linear2.weight"] = torch.zeros(12, 84)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"wrong shape 1: linear2\.weight \(file \(12, 84\), spec \(10, 84\)\)"):
        export_model(report, tmp_path / "m.onnx", weights=tmp_path / "w.pt")


def test_weights_not_a_state_dict(tmp_path: Path, lenet_state) -> None:
    report, _ = lenet_state
    torch.save(archspec.build(report), tmp_path / "module.pt")  # a pickled module: refused by weights_only
    with pytest.raises(WeightsError, match=r"refused .*module.pt: it is a pickle that would run code \(Unsupported "
                                           r"global: archspec.nn.Network\)"):
        export_model(report, tmp_path / "m.onnx", weights=tmp_path / "module.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        export_model(report, tmp_path / "m.onnx", weights=tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        export_model(report, tmp_path / "m.onnx", weights=tmp_path / "absent.pt")
    assert not (tmp_path / "m.onnx").exists()


# -- failures leave nothing behind; atomic replacement -------------------------------------------

def rnn_report(tmp_path: Path) -> archspec.Report:
    return archspec.check(spec_file(tmp_path, SMALL_RECURRENT.format(kind="rnn", output="last"), "rnn.yaml"))


def test_failed_verification_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = rnn_report(tmp_path)

    def broken(*args, **kwargs):
        raise ExportError("simulated verification failure")

    monkeypatch.setattr(verify, "check_numerics", broken)
    with pytest.raises(ExportError, match="simulated"):
        export_model(report, tmp_path / "m.onnx")
    assert leftovers(tmp_path) == ["rnn.yaml"]


def test_failed_export_keeps_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = rnn_report(tmp_path)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous model")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "check_structure", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(report, out)
    assert out.read_bytes() == b"previous model"
    assert leftovers(tmp_path) == ["m.onnx", "rnn.yaml"]


def test_parity_check_catches_a_wrong_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Corrupt one weight in the ONNX graph: the comparison with PyTorch must refuse it."""
    report = rnn_report(tmp_path)
    save = write.save

    def corrupt(model, tensors, *args):
        name = next(k for k, a in tensors.items() if a.dtype == np.float32 and a.ndim == 2)
        arr = tensors[name].copy()  # the file's copy only: PyTorch keeps the original
        arr.flat[0] += 0.5
        return save(model, {**tensors, name: arr}, *args)

    monkeypatch.setattr(write, "save", corrupt)
    with pytest.raises(ExportError, match="onnxruntime differs from PyTorch at input 1x12x8"):
        export_model(report, tmp_path / "m.onnx")
    assert leftovers(tmp_path) == ["rnn.yaml"]


def test_replaces_existing_model_atomically(tmp_path: Path) -> None:
    report = rnn_report(tmp_path)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    (tmp_path / "m.onnx.data").write_bytes(b"old external data")
    export_model(report, out)
    onnx.checker.check_model(str(out), full_check=True)
    # m.onnx.data is no file the replaced model named, so it is not archspec's to remove
    assert leftovers(tmp_path) == ["m.onnx", "m.onnx.data", "rnn.yaml"]


def test_external_data_pair_is_replaced_as_a_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new data file gets a new name, so until the model's atomic rename the old model still reads
    its own data; a commit that fails there leaves the old pair exactly as it was."""
    monkeypatch.setattr(write, "EXTERNAL_DATA_THRESHOLD", 0)
    report = rnn_report(tmp_path)
    out = tmp_path / "big.onnx"
    old = export_model(report, out).external_data
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_replace = os.replace

    def fail_on_the_model(src, dst):
        if Path(dst) == out:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(write.os, "replace", fail_on_the_model)
    with pytest.raises(OSError, match="No space left"):
        export_model(report, out, seed=1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    onnx.checker.check_model(str(out), full_check=True)  # loads the old pair's external data
    monkeypatch.setattr(write.os, "replace", real_replace)
    new = export_model(report, out, seed=1).external_data
    assert new != old and not old.exists() and leftovers(tmp_path) == ["big.onnx", new.name, "rnn.yaml"]


def test_external_data_over_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Models over 2 GB are written as graph + one external data file; forced here on a small one."""
    monkeypatch.setattr(write, "EXTERNAL_DATA_THRESHOLD", 0)
    report = rnn_report(tmp_path)
    result = export_model(report, tmp_path / "big.onnx")
    data = result.external_data
    assert data.parent == tmp_path and re.fullmatch(r"big\.onnx\.[0-9a-f]{8}\.data", data.name)
    assert leftovers(tmp_path) == ["big.onnx", data.name, "rnn.yaml"]
    header = onnx.load(str(result.path), load_external_data=False)
    locations = {e.value for t in header.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {data.name}  # relative, so the pair can be moved together
    assert result.bytes == result.path.stat().st_size + result.external_data.stat().st_size
    assert result.max_rel_error <= TOL
    # a later small export replaces the pair with one self-contained file
    monkeypatch.setattr(write, "EXTERNAL_DATA_THRESHOLD", 1 << 40)
    export_model(report, tmp_path / "big.onnx")
    assert leftovers(tmp_path) == ["big.onnx", "rnn.yaml"]


def test_output_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(PathError, match="does not exist"):
        export_model(rnn_report(tmp_path), tmp_path / "nowhere" / "m.onnx")


# -- dynamic axes --------------------------------------------------------------------------------

def test_dynamic_axes_options(tmp_path: Path) -> None:
    report = rnn_report(tmp_path)
    static_time = export_model(report, tmp_path / "a.onnx", dynamic="batch")
    assert dict(static_time.dynamic_axes) == {"batch": 0}
    assert [c.input_shape for c in static_time.checks] == [(1, 12, 8), (3, 12, 8)]
    seq_only = export_model(report, tmp_path / "b.onnx", dynamic=["seq"])  # alias of the one symbolic axis
    assert dict(seq_only.dynamic_axes) == {"time": 1}
    assert [c.input_shape for c in seq_only.checks] == [(1, 12, 8), (1, 19, 8)]
    static = export_model(report, tmp_path / "c.onnx", dynamic="none")
    assert dict(static.dynamic_axes) == {} and len(static.checks) == 1
    dims = onnx.load(str(tmp_path / "c.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 12, 8]
    with pytest.raises(ExportError, match="unknown dynamic axis 'height'.*batch, time"):
        export_model(report, tmp_path / "d.onnx", dynamic="batch,height")


def test_symbolic_axis_the_network_cannot_vary_is_an_error(tmp_path: Path) -> None:
    report = archspec.check(spec_file(tmp_path, """
    archspec: 1
    name: fixed_width
    input: {x: [time=6, 4]}
    network:
      - flatten
      - linear: {out: 3}
    """))
    with pytest.raises(ExportError, match="only accepts time=6"):
        export_model(report, tmp_path / "m.onnx")
    result = export_model(report, tmp_path / "m.onnx", dynamic="batch")
    assert result.max_rel_error <= TOL


def test_report_at_ignores_the_spec_budget(tmp_path: Path) -> None:
    text = SMALL_RECURRENT.format(kind="gru", output="last") + "budget: {macs: 0}\n"
    path = spec_file(tmp_path, text)
    with pytest.raises(archspec.SpecError):
        archspec.check(path)
    report = archspec.check(spec_file(tmp_path, SMALL_RECURRENT.format(kind="gru", output="last"), "ok.yaml"))
    assert report_at(report, (19, 8)).graph.input.shape == (19, 8)


# -- the CLI -------------------------------------------------------------------------------------

def cli(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archspec.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_export_quiet_and_verified(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, SMALL_RECURRENT.format(kind="lstm", output="last"))
    r = cli("export", spec, "-o", tmp_path / "m.onnx", "--dynamic", "batch,time", "--opset", "17")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "float32, opset 17, dynamic axes: batch, time" in r.stdout
    assert "1x12x8 -> 1x5" in r.stdout and "3x19x8 -> 3x5" in r.stdout
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 17


def test_cli_export_weights_error(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, SMALL_RECURRENT.format(kind="gru", output="last"))
    state = archspec.build(archspec.check(spec)).state_dict()
    state.pop("fc.bias")
    torch.save(state, tmp_path / "w.pt")
    r = cli("export", spec, "-o", tmp_path / "m.onnx", "--weights", tmp_path / "w.pt")
    assert r.returncode == 1
    assert "archspec: error: weights" in r.stderr and "missing 1: fc.bias" in r.stderr
    assert not (tmp_path / "m.onnx").exists()


# -- the large zoo models --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet", "inception_v3", "resnet50", "convnext_tiny",
                                  "vit_b_16"])
def test_large_zoo_models(tmp_path: Path, name: str) -> None:
    report = archspec.check(zoo(name))
    t0 = time.perf_counter()
    result = export_model(report, tmp_path / f"{name}.onnx")
    seconds = time.perf_counter() - t0
    assert_verified(result, report, {"batch": 0})
    print(f"{name}: {seconds:.1f}s (export {result.export_seconds:.1f}s, "
          f"verify {result.verify_seconds:.1f}s, {result.bytes / 1e6:.0f} MB, max rel err {result.max_rel_error:.1e})")


# -- without torch ----------------------------------------------------------------------------------

NO_TORCH = """
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError, as on an install without torch
from archspec.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None)
print("torch modules:", heavy)
sys.exit(code)
"""


def run_without_torch(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("name", ["lenet", "lstm_classifier"])
def test_export_without_torch(tmp_path: Path, name: str) -> None:
    out = tmp_path / f"{name}.onnx"
    r = run_without_torch("export", SPECS / f"{name}.yaml", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "numeric verification against PyTorch SKIPPED (torch is not installed)" in r.stdout
    assert "onnxruntime ran, outputs finite (no PyTorch reference)" in r.stdout
    assert "torch modules: []" in r.stdout
    # the file is the one an export with torch writes (same seeded numpy weights), and that one is
    # verified against PyTorch
    report = archspec.check(SPECS / f"{name}.yaml")
    with_torch = export_model(report, tmp_path / "with_torch.onnx")
    assert with_torch.compared
    a, b = onnx.load(str(out)), onnx.load(str(with_torch.path))
    assert {t.name: t.raw_data for t in a.graph.initializer} == {t.name: t.raw_data for t in b.graph.initializer}
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]


def test_weights_without_torch(tmp_path: Path, lenet_state) -> None:
    report, state = lenet_state
    np.savez(tmp_path / "w.npz", **{k: v.numpy() for k, v in state.items()})
    torch.save(state, tmp_path / "w.pt")
    r = run_without_torch("export", SPECS / "lenet.yaml", "-o", tmp_path / "m.onnx", "--weights", tmp_path / "w.npz")
    assert r.returncode == 0, r.stderr
    module = archspec.build(report).eval()
    module.load_state_dict(state)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(Session(tmp_path / "m.onnx").run(x.numpy())["output"], module(x).numpy(),
                                   rtol=1e-5, atol=1e-5)
    r = run_without_torch("export", SPECS / "lenet.yaml", "-o", tmp_path / "n.onnx", "--weights", tmp_path / "w.pt")
    assert r.returncode == 1 and "is a PyTorch checkpoint; reading it needs torch" in r.stderr
    assert not (tmp_path / "n.onnx").exists()


# -- precision options -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [TINY_RESNET, TINY_INCEPTION, SMALL_RECURRENT.format(kind="gru", output="sequence"),
                                  SMALL_RECURRENT.format(kind="rnn", output="sequence").replace(
                                      "layers: 2", "layers: 2, bidirectional: true")],
                         ids=["resnet", "inception", "gru", "birnn"])  # birnn: Scan bodies, a MatMul after them
def test_float16_verified_against_torch_in_float16(tmp_path: Path, text: str) -> None:
    report = archspec.check(spec_file(tmp_path, text))
    result = export_model(report, tmp_path / "half.onnx", dtype="float16")
    assert result.compared and result.tolerance == verify.TOLERANCE["float16"] == 1e-2
    model = onnx.load(str(result.path))
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert {t.data_type for t in model.graph.initializer} <= {half, onnx.TensorProto.INT64}
    assert model.graph.input[0].type.tensor_type.elem_type == half
    bodies = [a.g for n in model.graph.node for a in n.attribute if a.HasField("g")]
    assert len(bodies) == (2 if "small_rnn" in text else 0)  # a Scan per layer, its body in float16 too
    assert {v.type.tensor_type.elem_type for b in bodies for v in (*b.input, *b.output)} <= {half}
    full = onnx.load(str(export_model(report, tmp_path / "full.onnx").path))
    assert 2 * sum(len(t.raw_data) for t in model.graph.initializer if t.data_type == half) == \
        sum(len(t.raw_data) for t in full.graph.initializer if t.data_type == single)  # every weight in half
    # independently: onnxruntime in float16 vs the float32 module on the same (rounded) weights
    module = archspec.build(report).eval()
    module.load_state_dict({k: torch.from_numpy(v.astype(np.float16).astype(v.dtype))
                            for k, v in initial_state(report, 0).items()})
    x = torch.randn(2, *report.graph.input.shape).half()
    with torch.no_grad():
        want = module(x.float()).numpy()
    got = Session(result.path).run({report.graph.input.name: x.numpy()})["output"]
    assert got.dtype == np.float16
    assert np.abs(got.astype(np.float64) - want).max() <= 1e-2 * max(1.0, np.abs(want).max())


NO_PARAMETERS = """
archspec: 1
name: no_parameters
input: {image: [3, 12, 12]}
network:
  - maxpool2d: {kernel: 2}
  - relu
  - {kind}
  - global_avgpool
"""


@pytest.mark.parametrize("kind", ["sigmoid", "lrn: {size: 3}"], ids=["half-kernels", "falls-back-to-float32"])
def test_float16_export_of_a_model_without_parameters(tmp_path: Path, kind: str) -> None:
    """No parameters to read a dtype from (it raised StopIteration); LRN's avg_pool3d lacks a float16
    CPU kernel, so PyTorch runs it in float32 at both sizes. Checked against torch.nn.functional."""
    report = archspec.check(spec_file(tmp_path, NO_PARAMETERS.replace("{kind}", kind)))
    result = export_model(report, tmp_path / "half.onnx", dtype="float16")
    assert result.compared and len(result.checks) == 2
    x = torch.randn(2, 3, 12, 12).half()
    y = torch.relu(torch.nn.functional.max_pool2d(x.float(), 2))
    y = torch.sigmoid(y) if kind == "sigmoid" else torch.nn.functional.local_response_norm(y, 3)
    want = y.mean((2, 3)).numpy()
    got = Session(result.path).run({"image": x.numpy()})["output"]
    assert got.dtype == np.float16
    assert np.abs(got.astype(np.float64) - want).max() <= 1e-2 * max(1.0, np.abs(want).max())


def test_int8_quantization_keeps_lenet_accuracy_on_digits(tmp_path: Path) -> None:
    """LeNet trained on scikit-learn's digits (as in test_train), exported as int8 calibrated on
    training images: accuracy on held-out digits within 1 point of the float32 model's."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8)
    images = torch.nn.functional.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(y)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    report = archspec.check(zoo("lenet"))
    torch.manual_seed(0)
    model = archspec.build(report, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(8):
        for i in range(0, len(train), 50):
            loss = torch.nn.functional.cross_entropy(model(images[train[i:i + 50]]), labels[train[i:i + 50]])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    np.save(tmp_path / "calib.npy", images[train[:64]].numpy())
    fp32 = export_model(report, tmp_path / "fp32.onnx", weights=model.state_dict())
    int8 = export_model(report, tmp_path / "int8.onnx", weights=model.state_dict(), quantize="int8",
                        calibration=[tmp_path / "calib.npy"])
    q = int8.quantization
    assert q.samples == 64 and q.int8_bytes < 0.4 * q.float_bytes and int8.bytes == q.int8_bytes
    assert "quantized: int8" in int8.summary()

    def accuracy(path: Path) -> float:
        out = Session(path).run({"image": images[test].numpy()})["output"]
        return float((out.argmax(1) == labels[test].numpy()).mean())

    a32, a8 = accuracy(fp32.path), accuracy(int8.path)
    print(f"LeNet digits: float32 {a32:.4f}, int8 {a8:.4f}, {q}")
    assert a32 >= 0.95 and abs(a32 - a8) <= 0.01
    ops = {n.op_type for n in onnx.load(str(int8.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


DYNAMIC_BILINEAR = """
archspec: 1
name: dynamic_bilinear
input: {x: [3, time=9, 6]}
network:
  - {upsample: {size: [16, 11], mode: bilinear, align_corners: ALIGN}}
"""


@pytest.mark.parametrize("align", ["false", "true"])
def test_int8_leaves_upsample_coordinates_unquantized(tmp_path: Path, align: str) -> None:
    """At a dynamic H, upsample computes its source coordinates in the graph from sizes; quantizing
    them as activations (the quantizer takes every Add and Mul) moved the taps: 0.24 and 0.76 x
    max(1, |output|) from float32. Nodes that do not read the data are left out of quantization."""
    report = archspec.check(spec_file(tmp_path, DYNAMIC_BILINEAR.replace("ALIGN", align)))
    result = export_model(report, tmp_path / "int8.onnx", quantize="int8")
    nodes = onnx.load(str(result.path)).graph.node
    producer = {o: n for n in nodes for o in n.output}

    def upstream(value: str) -> set[str]:
        """The op types that compute `value`."""
        n = producer.get(value)
        return set() if n is None else {n.op_type}.union(*(upstream(i) for i in n.input if i))

    floors = [n for n in nodes if n.op_type == "Floor"]  # one per axis: floor(source coordinate)
    assert len(floors) == 2 and all("Shape" in upstream(f.input[0]) for f in floors)
    assert not any("DequantizeLinear" in upstream(f.input[0]) for f in floors)
    assert "DequantizeLinear" in upstream("output")  # the data is quantized
    # int8's own rounding: a few steps of range/255 on the data and the weights, not moved taps
    assert result.quantization.max_rel_error <= 0.05


def test_quantize_calibration_errors(tmp_path: Path) -> None:
    report = archspec.check(zoo("lenet"))
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ExportError, match=r"calibration input .*bad.npy has shape \(2, 3, 28, 28\); expected \(1, 28, 28\)"):
        export_model(report, tmp_path / "m.onnx", quantize="int8", calibration=[tmp_path / "bad.npy"])
    with pytest.raises(ExportError, match="leave --dtype at float32"):
        export_model(report, tmp_path / "m.onnx", quantize="int8", dtype="float16")
    assert not (tmp_path / "m.onnx").exists()


# -- the streamed file and its weight-free reading, against onnx's own serializer and parser ----

BIDIRECTIONAL_LAST = """
archspec: 1
name: birnn
input: {x: [time=6, 4]}
network:
  - {rnn: {hidden: 5, layers: 2, bidirectional: true, output: last}}
"""


@pytest.mark.parametrize("spec", ["lenet", "bilstm_tagger", "birnn"])  # int64 constants; a 0-d index
def test_streamed_file_is_what_onnx_save_writes(spec: str, tmp_path: Path) -> None:
    from archspec.exporter.emit import emit_graph
    from archspec.exporter.plan import plan_export

    path = spec_file(tmp_path, BIDIRECTIONAL_LAST) if spec == "birnn" else SPECS / f"{spec}.yaml"
    report = archspec.check(path)
    state = initial_state(report, 0)
    model, tensors = emit_graph(report, state, plan_export(report, None), DEFAULT_OPSET)
    write.save(model, tensors, tmp_path / "streamed.onnx")
    model.graph.initializer.extend(onnx.numpy_helper.from_array(a, k) for k, a in tensors.items())
    onnx.save(model, str(tmp_path / "onnx.onnx"))
    streamed, reference = (onnx.load(str(tmp_path / n)) for n in ("streamed.onnx", "onnx.onnx"))
    assert streamed == reference  # the parsed messages, every initializer's bytes included
    assert [t.name for t in streamed.graph.initializer] == list(tensors)
    assert [tuple(t.dims) for t in streamed.graph.initializer] == [a.shape for a in tensors.values()]
    assert any(a.ndim == 0 for a in tensors.values()) == (spec == "birnn")
    onnx.checker.check_model(str(tmp_path / "streamed.onnx"), full_check=True)


@pytest.mark.parametrize("spec", ["lenet", "bilstm_tagger"])
def test_reading_without_float_values_equals_onnx_load_stripped(spec: str, tmp_path: Path) -> None:
    out = export_model(archspec.check(SPECS / f"{spec}.yaml"), tmp_path / "m.onnx").path
    expected = onnx.load(str(out))
    kept = 0
    for t in expected.graph.initializer:
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            t.ClearField("raw_data")
        else:
            kept += len(t.raw_data)
    assert verify._without_float_data(out) == expected
    assert (kept > 0) == (spec == "bilstm_tagger")  # integer initializers keep their values
