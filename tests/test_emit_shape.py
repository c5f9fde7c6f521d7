"""Emission of the shape kinds beyond the per-kind cases in test_emit.py: upsample against
torch.nn.functional.interpolate itself (not only the kind's lowering) where onnxruntime's Resize would
drift from torch, a dynamic H through Resize, the float16 export, and the zoo models whose kinds are
all emitted (ShuffleNet V2's channel shuffles and slices, FCN-ResNet50's bilinear upsampling)."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

import archspec
from archspec.exporter import export_model
from archspec.runtime import Session

SPECS = Path(__file__).parent.parent / "specs"


def spec(tmp_path: Path, inp: str, *layers: str) -> archspec.Report:
    path = tmp_path / "s.yaml"
    path.write_text(f"archspec: 1\nname: s\ninput: {{x: {inp}}}\nnetwork:\n" + "".join(f"  - {x}\n" for x in layers))
    return archspec.check(path)


def ops(path: Path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def interpolate(x: np.ndarray, **kwargs) -> np.ndarray:
    with torch.no_grad():
        return F.interpolate(torch.from_numpy(x), **kwargs).numpy()


def close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("size, align", [((451, 7), False), ((333, 5), False), ((451, 7), True)])
def test_upsample_at_uneven_ratios_of_large_images_equals_interpolate(tmp_path: Path, size, align) -> None:
    """300 -> 451 rows: Resize's coordinates x / (out/in) differ from torch's x * (in/out) in the last
    float bit, which moves the weights by ~1e-5 at these sizes (measured: 3.5e-5 relative for half_pixel,
    8.7e-5 at 1000 -> 333); torch's own taps, as constants, hold within rounding."""
    report = spec(tmp_path, "[2, 300, 5]", f"{{upsample: {{size: [{size[0]}, {size[1]}], mode: bilinear, "
                                           f"align_corners: {str(align).lower()}}}}}")
    result = export_model(report, tmp_path / "m.onnx")
    assert result.compared and result.max_rel_error <= 1e-6
    assert "Resize" not in ops(result.path)
    x = np.random.default_rng(0).standard_normal((3, 2, 300, 5), dtype=np.float32)
    close(Session(result.path).run({"x": x})["output"], interpolate(x, size=size, mode="bilinear", align_corners=align))


@pytest.mark.parametrize("layer, kwargs", [
    ("{upsample: {scale: 2, mode: bilinear}}", {"scale_factor": 2.0, "mode": "bilinear", "align_corners": False}),
    ("{upsample: {scale: [4, 2]}}", {"scale_factor": (4.0, 2.0), "mode": "nearest"}),
])
def test_upsample_by_a_power_of_two_is_one_resize_with_a_dynamic_h(tmp_path: Path, layer: str, kwargs) -> None:
    report = spec(tmp_path, "[3, time=9, 6]", layer)
    result = export_model(report, tmp_path / "m.onnx")
    assert result.compared and dict(result.dynamic_axes) == {"batch": 0, "time": 2}
    assert ops(result.path)["Resize"] == 1
    x = np.random.default_rng(1).standard_normal((2, 3, 23, 6), dtype=np.float32)  # a height the export did not check
    close(Session(result.path).run({"x": x})["output"], interpolate(x, **kwargs))


@pytest.mark.parametrize("layer, kwargs", [
    ("{upsample: {size: [13, 11]}}", {"size": (13, 11), "mode": "nearest"}),
    ("{upsample: {scale: 3, mode: bilinear}}", {"scale_factor": 3.0, "mode": "bilinear", "align_corners": False}),
    ("{upsample: {size: [31, 4], mode: bilinear, align_corners: true}}",
     {"size": (31, 4), "mode": "bilinear", "align_corners": True}),
])
def test_upsample_taps_computed_in_the_graph_for_a_dynamic_h(tmp_path: Path, layer: str, kwargs) -> None:
    report = spec(tmp_path, "[3, time=9, 6]", layer)
    result = export_model(report, tmp_path / "m.onnx")
    assert result.compared
    x = np.random.default_rng(2).standard_normal((2, 3, 41, 6), dtype=np.float32)
    close(Session(result.path).run({"x": x})["output"], interpolate(x, **kwargs))


def test_shape_kinds_export_in_float16(tmp_path: Path) -> None:
    report = spec(tmp_path, "[3, 9, 9]", "{conv2d: {out: 4, kernel: 1}}", "{pad: {padding: 1, channels: [1, 1], value: 0.5}}",
                  "{channel_shuffle: {groups: 2}}", "{upsample: {size: [16, 20], mode: bilinear}}",
                  "{upsample: {scale: 2}}", "{slice: {dim: 1, start: 1, step: 2}}", "{select: {dim: 0, index: -1}}")
    result = export_model(report, tmp_path / "half.onnx", dtype="float16")
    assert result.compared and result.max_rel_error <= 1e-2
    model = onnx.load(str(result.path))
    single = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT16, onnx.TensorProto.INT64,
                                                              onnx.TensorProto.FLOAT}
    # float32: only the bilinear weights, rounded to float16 as torch rounds them, for its sums in float32
    assert sorted(single) == [f"upsample0.w_{e}{axis}" for e in ("hi", "lo") for axis in (2, 3)]
    assert all(np.array_equal(w.astype(np.float16).astype(np.float32), w) for w in single.values())


def test_shufflenet_v2_exports_verified(tmp_path: Path) -> None:
    report = archspec.check(SPECS / "shufflenet_v2_x1_0.yaml")
    result = export_model(report, tmp_path / "m.onnx")
    assert result.compared and result.max_rel_error <= 1e-5
    assert len(result.checks) == 2
    count = ops(result.path)
    assert count["Gather"] == 16  # one per channel shuffle: 4 + 8 + 4 units
    assert "Transpose" not in count


@pytest.mark.slow
def test_fcn_resnet50_exports_verified(tmp_path: Path) -> None:
    """Its upsampling 65 -> 520 is x8, a power of two: one Resize, exact."""
    report = archspec.check(SPECS / "fcn_resnet50.yaml")
    result = export_model(report, tmp_path / "m.onnx")
    assert result.compared and result.max_rel_error <= 1e-5
    assert ops(result.path)["Resize"] == 1
