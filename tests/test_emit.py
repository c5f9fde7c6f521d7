"""Per-kind ONNX emission, parametrized from the registry: every kind (and the variants of its
parameters that change the emitted graph) emits a model that passes onnx.checker in full mode,
whose ONNX shape inference equals archspec's types, and which onnxruntime runs to the output of the
kind's own PyTorch lowering with the same (random) weights. The oracle is the torch module and
onnxruntime, never the exporter's own verification alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import archspec
from archspec.exporter import example_input, expected_tensors, export_model, initial_state, report_at
from archspec.layers import REGISTRY
from archspec.lower import build_module
from archspec.runtime import Session

IMAGE, SEQ, TOKENS, FLAT = "[3, 9, 9]", "[time=6, 4]", "{shape: [time=6], dtype: int64}", "[12]"
DEFAULT_INPUT = {(3,): IMAGE, (2,): SEQ, (1,): TOKENS, (1, 3): IMAGE, None: IMAGE}
DEFAULT_INPUT[(2, 3)] = "[4, 9, 9]"  # groupnorm: channels its example's 2 groups divide
DEFAULT_INPUT[(1, 2, 3)] = IMAGE  # batchnorm; its sequence and vector forms are VARIANTS

# variants beyond each kind's `example` whose emitted graph differs
VARIANTS = [
    ("conv2d", {"out": 4, "kernel": 2, "padding": "same", "stride": 2}, IMAGE),  # asymmetric pads
    ("conv2d", {"out": 6, "kernel": 3, "groups": 3, "dilation": 2, "bias": False}, IMAGE),
    ("conv2d", {"out": 4, "kernel": [1, 3], "padding": [0, 0, 1, 2]}, IMAGE),
    ("maxpool2d", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}, IMAGE),
    ("avgpool2d", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}, IMAGE),
    ("avgpool2d", {"kernel": 2, "stride": 2, "padding": 1}, IMAGE),
    ("adaptive_avgpool2d", {"output": [2, 4]}, IMAGE),  # uneven, windows of one size evenly spaced: strided
    ("adaptive_avgpool2d", {"output": [6, 5]}, IMAGE),  # 9 -> 6: one size, uneven starts (Gather); 9 -> 5: sizes 2, 3
    ("adaptive_avgpool2d", {"output": 3}, IMAGE),  # even: one AveragePool
    ("lrn", {"size": 4}, IMAGE),  # even window: torch's and ONNX's windows differ
    ("lrn", {"size": 5, "alpha": 0.01, "beta": 0.5, "k": 2.0}, IMAGE),
    ("batchnorm", {}, FLAT),
    ("batchnorm", {"eps": 1e-3}, SEQ),  # a sequence's features: Transpose, BatchNormalization, Transpose
    ("linear", {"out": 5}, SEQ),  # per time step: MatMul + Add
    ("linear", {"out": 5, "bias": False}, FLAT),
    ("softmax", {"dim": 0}, SEQ),
    ("log_softmax", {"dim": -1}, SEQ),
    ("leaky_relu", {"slope": 0.2}, IMAGE),
    ("global_maxpool", {}, IMAGE),
] + [(kind, {"hidden": 5, "layers": layers, "bidirectional": bi, "output": out, "bias": bias}, SEQ)
     for kind in ("rnn", "gru", "lstm") for out in ("sequence", "last", "state")
     for layers, bi, bias in ((1, False, True), (2, True, True), (3, True, False))] + [
    ("rnn", {"hidden": 5, "nonlinearity": "relu", "bidirectional": True}, SEQ),
] + [
    # layernorm, groupnorm, instancenorm, mul, scale, stochastic_depth, conv1d, maxpool1d, avgpool1d,
    # conv_transpose2d
    ("layernorm", {}, SEQ),  # the last axis: LayerNormalization as it is (opset 17), time dynamic
    ("layernorm", {"bias": False}, SEQ),
    ("layernorm", {"affine": False}, SEQ),
    ("layernorm", {}, FLAT),
    ("layernorm", {"dim": -1, "eps": 1e-3}, IMAGE),
    ("layernorm", {"dim": 1, "affine": False}, IMAGE),  # a middle axis: moved last and back
    ("layernorm", {"bias": False}, IMAGE),  # channels, weight only
    ("groupnorm", {"groups": 3, "affine": False}, "[time=7, 6]"),  # (T, F): the features are the channels
    ("groupnorm", {"groups": 1, "eps": 1e-3}, "[4, 9, 9]"),  # one group: LayerNorm over (C, H, W)
    ("groupnorm", {"groups": 4}, "[4, 9, 9]"),  # one channel a group: InstanceNorm
    ("instancenorm", {}, IMAGE),  # no affine: unit scale, zero shift
    ("mul", {}, SEQ),
    ("scale", {"factor": -2.5}, SEQ),
    ("stochastic_depth", {"p": 0.5, "mode": "batch"}, SEQ),
    ("conv1d", {"out": 4, "kernel": 2, "padding": "same"}, SEQ),  # asymmetric pads
    ("conv1d", {"out": 6, "kernel": 3, "stride": 2, "dilation": 2, "groups": 2, "bias": False}, SEQ),
    ("conv1d", {"out": 3, "kernel": 3, "padding": [2, 0]}, SEQ),  # causal
    ("conv1d", {"out": 4, "kernel": 4, "stride": 2, "padding": "same"}, SEQ),  # pads vary with the length
    ("conv1d", {"out": 4, "kernel": 3, "stride": 2, "dilation": 2, "padding": "same"}, SEQ),  # pads in the graph
    ("maxpool1d", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}, SEQ),
    ("maxpool1d", {"kernel": 3, "stride": 1, "padding": 1}, SEQ),
    ("avgpool1d", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}, SEQ),
    ("avgpool1d", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}, SEQ),
    ("avgpool1d", {"kernel": 2, "stride": 2, "padding": 1}, SEQ),
    # a last window starting in the right padding, which PyTorch drops, at 5 and 8 steps but not at 12
    ("maxpool1d", {"kernel": 3, "stride": 3, "padding": 1, "ceil_mode": True}, "[time=5, 4]"),
    ("avgpool1d", {"kernel": 3, "stride": 3, "padding": 1, "ceil_mode": True}, "[time=5, 4]"),
    ("avgpool1d", {"kernel": 3, "stride": 3, "padding": 1, "ceil_mode": True, "count_include_pad": False},
     "[time=5, 4]"),
    ("conv_transpose2d", {"out": 6, "kernel": [3, 2], "stride": [2, 3], "padding": [1, 0],
                          "output_padding": [1, 2], "groups": 3, "bias": False}, IMAGE),
    ("conv_transpose2d", {"out": 2, "kernel": 3, "dilation": 2, "stride": 2, "output_padding": 1}, IMAGE),
    ("conv_transpose2d", {"out": 5, "kernel": 2, "stride": 2}, IMAGE),
]

# shape kinds: permute, transpose, reshape, slice, select, pad, channel_shuffle, upsample. On SEQ the time
# axis is dynamic, so bounds and indices counted from the end are checked at a second length.
CHW_DYN = "[4, time=5, 7]"  # an image with a dynamic H
VARIANTS += [
    ("permute", {"dims": [1, 0]}, SEQ),
    ("permute", {"dims": [2, 0, 1]}, IMAGE),
    ("transpose", {"dims": [0, -1]}, SEQ),
    ("reshape", {"shape": [-1, 2, 2]}, SEQ),
    ("reshape", {"shape": [27, 9]}, IMAGE),
    ("slice", {"dim": 0, "start": -4}, SEQ),
    ("slice", {"dim": 0, "end": 3}, SEQ),
    ("slice", {"dim": -1, "start": -5, "end": -1, "step": 3}, IMAGE),
    ("slice", {"dim": 1, "start": 2, "end": 100}, IMAGE),
    ("select", {"dim": 0, "index": -1}, SEQ),
    ("select", {"dim": -1, "index": 2}, IMAGE),
    ("pad", {"padding": 1, "channels": [2, 1], "value": 0.5}, IMAGE),
    ("pad", {"padding": [1, 0, 2, 1], "mode": "replicate"}, IMAGE),
    ("pad", {"padding": [0, 2]}, IMAGE),
    ("pad", {"channels": [1, 2]}, CHW_DYN),
    ("channel_shuffle", {"groups": 3}, "[6, 5, 4]"),
    ("channel_shuffle", {"groups": 2}, CHW_DYN),
    ("upsample", {"scale": 2}, IMAGE),  # Resize: a power-of-two scale is exact
    ("upsample", {"scale": [2, 4], "mode": "bilinear"}, IMAGE),
    ("upsample", {"size": [18, 36]}, IMAGE),
    ("upsample", {"size": [17, 17], "mode": "bilinear", "align_corners": True}, IMAGE),  # (9-1)/(17-1) = 1/2
    ("upsample", {"scale": 3}, IMAGE),  # torch's indices and weights as constants
    ("upsample", {"size": [16, 7]}, IMAGE),
    ("upsample", {"size": [16, 20], "mode": "bilinear"}, IMAGE),
    ("upsample", {"size": [4, 5], "mode": "bilinear"}, IMAGE),
    ("upsample", {"scale": 3, "mode": "bilinear"}, IMAGE),
    ("upsample", {"scale": 2, "mode": "bilinear", "align_corners": True}, IMAGE),
    ("upsample", {"size": [1, 9], "mode": "bilinear", "align_corners": True}, IMAGE),  # one row: torch's scale 0
    ("upsample", {"size": [3, 9], "mode": "bilinear"}, "[2, 12, 9]"),  # (12/3 = 4) downsampling: Resize
    ("upsample", {"size": [13, 4]}, CHW_DYN),  # computed in the graph from the dynamic H
    ("upsample", {"size": [16, 11], "mode": "bilinear"}, CHW_DYN),
    ("upsample", {"size": [9, 12], "mode": "bilinear", "align_corners": True}, CHW_DYN),
]
VARIANTS += [
    # attention, parameter, class_token, layer_scale, flatten (start, end), peephole lstm
    ("attention", {"heads": 2}, SEQ),
    ("attention", {"heads": 4, "bias": False}, SEQ),
    ("attention", {"heads": 2, "fused": True, "dropout": 0.1}, SEQ),
    ("attention", {"heads": 3}, "[time=5, 12]"),
    ("parameter", {"shape": [5], "init": "normal"}, SEQ),  # any input: only its batch size is read
    ("parameter", {"shape": [2, 3, 4]}, FLAT),
    ("class_token", {"init": "trunc_normal", "std": 0.5}, "[time=6, 3]"),
    ("layer_scale", {"value": 0.1}, SEQ),  # (D,) on the last axis
    ("layer_scale", {}, FLAT),
    ("flatten", {"start": 1}, IMAGE),  # ViT's (C, H*W): Reshape [0, 0, -1]
    ("flatten", {"start": 0, "end": 1}, "[2, 3, time=5]"),  # the axis after the merged ones dynamic
] + [("lstm", {"hidden": 5, "layers": layers, "bidirectional": bi, "output": out, "bias": bias, "peephole": True}, SEQ)
     for out in ("sequence", "last", "state")
     for layers, bi, bias in ((1, False, True), (2, True, True), (3, True, False))]


def kind_cases():
    for name, kind in sorted(REGISTRY.items()):
        yield pytest.param(name, kind.example or {}, DEFAULT_INPUT[kind.input_rank], id=f"{name}-example")
    for i, (name, params, inp) in enumerate(VARIANTS):
        yield pytest.param(name, params, inp, id=f"{name}-{i}")


def one_layer_spec(tmp_path: Path, kind: str, params: dict, inp: str) -> Path:
    layer = json.dumps({kind: params}) if params else kind
    lead = "- {embedding: {vocab: 11, dim: 4}}\n  " if "int64" in inp and kind != "embedding" else ""
    if REGISTRY[kind].arity is None:  # N-ary: two values to merge, both from the input
        lead, layer = "- {relu, name: a}\n  - {tanh, name: b, from: x}\n  ", f"{{{kind}, from: [a, b, x]}}"
    pieces = REGISTRY[kind].output_names(REGISTRY[kind].Params.model_validate(params)) if params else ()
    if pieces:  # several outputs: every piece reaches the output, multiplied (mul broadcasts)
        layer += f"\n  - {{mul, from: [{', '.join(pieces)}]}}"
    path = tmp_path / f"{kind}.yaml"
    path.write_text(f"archspec: 1\nname: one_{kind}\ninput: {{x: {inp}}}\nnetwork:\n  {lead}- {layer}\n")
    return path


def longer(report: archspec.Report, by: int = 7) -> tuple[int, ...]:
    """The input with its symbolic axis (if any) `by` steps longer."""
    return tuple(d.size + by if d.name else d.size for d in report.graph.input.dims)


def random_state(report: archspec.Report, seed: int) -> dict[str, np.ndarray]:
    """Every tensor random (running variances positive), so no emitted tensor goes unexercised; matrices
    scaled by 1/sqrt(fan-in) as trained ones are (unscaled, a 3-layer tanh RNN is chaotic and float32
    rounding alone grows past the tolerance)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, (shape, dtype) in expected_tensors(report).items():
        if dtype == "int64":
            state[name] = np.zeros(shape, np.int64)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 4
            state[name] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    return state


def test_every_kind_emits() -> None:
    for name, kind in REGISTRY.items():
        assert {"emit", "emit_n"} & {k for c in kind.__mro__ if c.__name__ != "LayerKind" for k in vars(c)}, name


@pytest.mark.parametrize("kind, params, inp", list(kind_cases()))
def test_kind_emission(tmp_path: Path, kind: str, params: dict, inp: str) -> None:
    report = archspec.check(one_layer_spec(tmp_path, kind, params, inp))
    state = random_state(report, 7)
    opset = max(REGISTRY[kind].min_opset, 13)
    for o in sorted({opset, 17}):
        result = export_model(report, tmp_path / "m.onnx", weights=state, opset=o)
        assert result.compared and result.opset == o
        model = onnx.load(str(result.path))
        onnx.checker.check_model(model, full_check=True)
        # ONNX shape inference of every layer output equals archspec's type (dynamic axes symbolic)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        out = inferred.graph.output[0].type.tensor_type
        dims = [d.dim_param or d.dim_value for d in out.shape.dim]
        other = report_at(report, longer(report))  # the checker at another length: which axes vary
        # an axis that follows the input's symbolic axis takes its name; one derived from it (a strided
        # window along time) is the output's own
        follows = {(a, b): "time" for a, b in zip(report.graph.input.shape, longer(report)) if a != b}
        want = ["batch"] + [a if a == b else follows.get((a, b), f"output_dim{j}")
                            for j, (a, b) in enumerate(zip(report.output.shape, other.output.shape), 1)]
        assert dims == want
        assert out.elem_type == onnx.TensorProto.FLOAT
    # independent oracle: the kind's torch lowering holding the same weights vs onnxruntime, at a size
    # the export did not check
    module = build_module(report)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    module.eval()
    x = example_input(report, (2, *longer(report, 3)), seed=5)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = Session(tmp_path / "m.onnx").run({"x": x})["output"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("name", ["resnet18", "lenet", "googlenet", "bilstm_tagger", "vgg11_bn"])
def test_tensors_are_the_modules_state_dict(name: str) -> None:
    """What the kinds declare is what `lower` builds: names, shapes and dtypes of the state dict."""
    report = archspec.check(Path(__file__).parent.parent / "specs" / f"{name}.yaml")
    module = build_module(report, device="meta")
    declared = expected_tensors(report)
    assert {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()} \
        == {k: (tuple(s), d) for k, (s, d) in declared.items()}
    init = initial_state(report, seed=0)
    assert {k: (v.shape, str(v.dtype)) for k, v in init.items()} == {k: (tuple(s), d) for k, (s, d) in declared.items()}
