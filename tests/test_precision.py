"""The precision options over every layer kind, parametrized from the registry (test_emit's cases).

float16 (`--dtype float16`): each case exports, verified by the exporter against PyTorch in float16,
holds its weights and layer outputs in half precision, and onnxruntime's float16 output equals the
kind's own PyTorch lowering run in float16, at a size the export did not check, within the exporter's
float16 tolerance. Bilinear upsampling at a dynamic size computes its source indices in float32, as
PyTorch's float16 kernel does, checked against F.interpolate in float16 at sizes where float16 index
arithmetic would take other taps.

int8 (`--quantize int8`): each kind's example quantizes, and the quantized model passes the checks
the export makes of it (checker, shape inference, onnxruntime at every checked size, finite outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from test_emit import DEFAULT_INPUT, kind_cases, longer, one_layer_spec, random_state

import archspec
from archspec.exporter import TOLERANCE, example_input, export_model
from archspec.layers import REGISTRY
from archspec.lower import build_module
from archspec.runtime import Session

HALF, SINGLE = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT


def close(got: np.ndarray, want: np.ndarray) -> float:
    """Within the exporter's float16 criterion, max|got - want| <= 1e-2 * max(1, max|want|); the error."""
    assert got.dtype == np.float16 and got.shape == want.shape
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    assert err <= TOLERANCE["float16"] * max(1.0, float(np.abs(want.astype(np.float64)).max()))
    return err


def in_float16(module: torch.nn.Module, xs: list[np.ndarray]) -> np.ndarray:
    """The module in float16 on float16 inputs; where PyTorch lacks a float16 CPU kernel (LRN's
    avg_pool3d), the module in float32 on its float16-rounded weights and inputs."""
    module = module.half()
    with torch.no_grad():
        try:
            return module(*(torch.from_numpy(x) for x in xs)).numpy()
        except NotImplementedError:
            return module.float()(*(torch.from_numpy(x.astype(np.float32) if x.dtype == np.float16 else x)
                                    for x in xs)).numpy()


@pytest.mark.parametrize("kind, params, inp", list(kind_cases()))
def test_kind_exports_in_float16(tmp_path: Path, kind: str, params: dict, inp: str) -> None:
    report = archspec.check(one_layer_spec(tmp_path, kind, params, inp))
    state = random_state(report, 7)
    result = export_model(report, tmp_path / "half.onnx", weights=state, dtype="float16")
    assert result.compared and result.dtype == "float16" and result.max_rel_error <= TOLERANCE["float16"]
    model = onnx.load(str(result.path))
    floats = report.graph.input.dtype == "float32"
    assert model.graph.input[0].type.tensor_type.elem_type == (HALF if floats else onnx.TensorProto.INT64)
    assert model.graph.output[0].type.tensor_type.elem_type == HALF
    assert all(t.data_type == HALF for t in model.graph.initializer if t.name in state)  # every weight halved
    assert all(v.type.tensor_type.elem_type == HALF for v in model.graph.value_info  # every layer's output
               if v.type.tensor_type.elem_type in (HALF, SINGLE))
    # independent oracle: the kind's torch lowering in float16 on the same weights, at another size
    module = build_module(report)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    x = example_input(report, (2, *longer(report, 3)), seed=5)
    x = x.astype(np.float16) if floats else x
    close(Session(result.path).run({"x": x})["output"], in_float16(module.eval(), [x]))


def spec(tmp_path: Path, inputs: str, *layers: str) -> archspec.Report:
    path = tmp_path / "s.yaml"
    path.write_text(f"archspec: 1\nname: s\ninput: {inputs}\nnetwork:\n" + "".join(f"  - {x}\n" for x in layers))
    return archspec.check(path)


def index_arithmetic_types(path: Path) -> set[int]:
    """The element types of every Floor's input: the source coordinates that upsample's taps come from."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    return {types[n.input[0]] for n in model.graph.node if n.op_type == "Floor"}


@pytest.mark.parametrize("layer, kwargs", [
    ("{upsample: {size: [451, 7], mode: bilinear}}", {"size": (451, 7), "align_corners": False}),
    ("{upsample: {size: [451, 7], mode: bilinear, align_corners: true}}", {"size": (451, 7), "align_corners": True}),
    ("{upsample: {scale: 3, mode: bilinear}}", {"scale_factor": 3.0, "align_corners": False}),
])
def test_bilinear_upsample_at_a_dynamic_size_in_float16_is_interpolate(tmp_path: Path, layer: str, kwargs) -> None:
    """H = 300 -> 451: float16 has 2 bits below the point at 300, so coordinates computed in it would
    move the taps' weights by up to 1/8; the graph computes them in float32, as PyTorch does."""
    report = spec(tmp_path, "{x: [2, time=300, 5]}", layer)
    result = export_model(report, tmp_path / "half.onnx", dtype="float16")
    assert result.compared and dict(result.dynamic_axes) == {"batch": 0, "time": 2}
    assert index_arithmetic_types(result.path) == {SINGLE}
    x = np.random.default_rng(3).standard_normal((2, 2, 333, 5)).astype(np.float16)  # a height not checked
    with torch.no_grad():
        want = F.interpolate(torch.from_numpy(x), mode="bilinear", **kwargs).numpy()
    assert want.dtype == np.float16
    got = Session(result.path).run({"x": x})["output"]
    # torch's arithmetic, operation for operation (weights rounded to float16, sums in float32, one
    # rounding): equal but for the order of float32 roundings, within one float16 step of the output
    assert close(got, want) <= np.spacing(np.abs(want).max())


def test_bilinear_upsample_to_a_dynamic_reference_in_float16(tmp_path: Path) -> None:
    """`upsample: {to: image}` at dynamic sizes: a decoder's stride-2 conv brought back to the input's size."""
    report = spec(tmp_path, "{image: [3, h=64, w=64]}", "{conv2d: {out: 3, kernel: 3, stride: 2, padding: 1}, name: down}",
                  "{upsample: {to: image, mode: bilinear}, name: up}", "{add, from: [up, image]}")
    result = export_model(report, tmp_path / "half.onnx", dtype="float16")
    assert result.compared and set(result.dynamic_axes) == {"batch", "h", "w"}
    assert index_arithmetic_types(result.path) == {SINGLE}
    module = archspec.build(report, seed=0).eval().half()
    session = Session(result.path)
    for shape in [(2, 3, 50, 77), (1, 3, 33, 20)]:
        x = torch.randn(*shape).half()
        with torch.no_grad():  # by hand, F.interpolate to the input's size
            down = F.conv2d(x, module.down.weight, module.down.bias, stride=2, padding=1)
            want = F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False) + x
        close(session.run({"image": x.numpy()})["output"], want.numpy())


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_kind_quantizes_to_int8(tmp_path: Path, kind: str) -> None:
    params = REGISTRY[kind].example or {}
    report = archspec.check(one_layer_spec(tmp_path, kind, params, DEFAULT_INPUT[REGISTRY[kind].input_rank]))
    result = export_model(report, tmp_path / "int8.onnx", weights=random_state(report, 7), quantize="int8")
    q = result.quantization
    assert q is not None and q.samples == 32 and np.isfinite(q.max_abs_error) and result.bytes == q.int8_bytes
    assert len(result.checks) == 2 and all(c.compared for c in result.checks)  # the float32 model, vs PyTorch


def test_a_float16_model_runs_from_random_and_float32_inputs(tmp_path: Path) -> None:
    """`archspec run --random` and `--input x.npy` (float32, as numpy writes it) feed a float16 model
    float16 arrays; onnxruntime refuses float32 for a tensor(float16) input."""
    report = spec(tmp_path, "{x: [3, 8, 8]}", "{conv2d: {out: 4, kernel: 3}}", "relu")
    half = Session(export_model(report, tmp_path / "h.onnx", dtype="float16").path)
    full = Session(export_model(report, tmp_path / "f.onnx").path)
    feeds = half.example_inputs(batch=2)
    assert feeds["x"].dtype == np.float16
    x = example_input(report, (2, 3, 8, 8), seed=3)  # float32
    got, want = half.run(half.coerce(x))["output"], full.run(full.coerce(x))["output"]
    close(got, want)  # float16, within the exporter's float16 criterion of the float32 model
    assert half.run(feeds)["output"].shape == (2, 4, 6, 6)
