"""The axis a kind normalises, scales or joins comes from the tensor's layout, never from its rank:
group norm after a conv1d normalises the sequence's features (nn.GroupNorm on (N, F, T)), layer norm
and layer scale default to an image's channels or a sequence's features, and permute/transpose move
the layout's letters, so a kind that needs (C, H, W) refuses a permuted (H, W, C) instead of reading
axis 0. Oracles: hand-written PyTorch and onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archspec
from archspec.errors import SpecError
from archspec.exporter import export_model
from archspec.layers.base import REGISTRY
from archspec.runtime import Session


def spec(tmp_path: Path, inp: str, body: str, name: str = "lay") -> archspec.Report:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"archspec: 1\nname: {name}\ninput: {{x: {inp}}}\nnetwork:\n{body}")
    return archspec.check(path)


def refused(tmp_path: Path, inp: str, body: str) -> str:
    with pytest.raises(SpecError) as exc:
        spec(tmp_path, inp, body)
    (d,) = exc.value.diagnostics
    return f"{d.code} {d.message} | {d.hint}"


def randomise(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    return model.state_dict()


GROUPNORM_AFTER_CONV1D = ("  - {conv1d: {out: 8, kernel: 3}, name: conv}\n"
                          "  - {groupnorm: {groups: 2, eps: 0.001}, name: gn}\n")


def groupnorm_oracle(t: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """conv1d and GroupNorm as PyTorch writes them, on (N, F, T); the result back to (N, T, F)."""
    h = F.conv1d(x.transpose(1, 2), t["conv.weight"], t["conv.bias"])
    return F.group_norm(h, 2, t["gn.weight"], t["gn.bias"], eps=1e-3).transpose(1, 2)


def test_groupnorm_after_conv1d_normalises_the_features(tmp_path: Path) -> None:
    report = spec(tmp_path, "[time=10, 3]", GROUPNORM_AFTER_CONV1D)
    assert report.totals.params == (8 * 3 * 3 + 8) + 2 * 8  # one scale and shift per feature, not per step
    model = archspec.build(report).eval()
    t = randomise(model)
    x = torch.randn(4, 10, 3)
    torch.testing.assert_close(model(x), groupnorm_oracle(t, x))
    # the statistics are per (sample, group of 4 features) over time, not per group of time steps
    with torch.no_grad():
        model.gn.weight.fill_(1), model.gn.bias.zero_()
    y = model(x).reshape(4, 8, 2, 4)  # (N, T, groups, features per group)
    torch.testing.assert_close(y.mean((1, 3)), torch.zeros(4, 2), atol=1e-5, rtol=0)
    assert y.mean((1, 2)).abs().max() > 0.1  # over a feature's own steps the mean is not 0


def test_groupnorm_on_a_sequence_exports_as_pytorch_computes(tmp_path: Path) -> None:
    report = spec(tmp_path, "[time=10, 3]", GROUPNORM_AFTER_CONV1D)
    model = archspec.build(report)
    state = {k: v.numpy() for k, v in randomise(model).items()}
    result = export_model(report, tmp_path / "gn.onnx", weights=state)
    assert result.compared and dict(result.dynamic_axes) == {"batch": 0, "time": 1}
    x = torch.randn(2, 13, 3)
    want = groupnorm_oracle({k: torch.from_numpy(v) for k, v in state.items()}, x)
    got = Session(result.path).run({"x": x.numpy()})["output"]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv", ["{out: 8, kernel: 3}", "{out: 8, kernel: 3, padding: [2, 0]}",
                                  "{out: 8, kernel: 3, stride: 2, padding: same}"])
def test_groupnorm_on_a_sequence_ejects_to_the_same_computation(tmp_path: Path, conv: str) -> None:
    from test_eject import eject

    report = spec(tmp_path, "[time=10, 3]", f"  - {{conv1d: {conv}, name: conv}}\n"
                                            "  - {groupnorm: {groups: 2, eps: 0.001}, name: gn}\n")
    path, ejected = eject(tmp_path / "lay.yaml", tmp_path)
    assert "class AxisGroupNorm(nn.GroupNorm)" in path.read_text()
    built = archspec.build(report).eval()
    t = randomise(built)
    theirs = ejected.build().eval()
    theirs.load_state_dict(built.state_dict(), strict=True)
    for steps in (10, 7):
        x = torch.randn(2, steps, 3)
        # (N, F, T), padded as the spec says; 'same' at stride 2 pads (ceil(n/2) - 1) * 2 + 3 - n in all,
        # the larger half first (ONNX SAME_LOWER): 1 -> (1, 0) at 10 steps, 2 -> (1, 1) at 7
        same = (1, 0) if steps == 10 else (1, 1)
        h = F.pad(x.transpose(1, 2), (2, 0) if "[2, 0]" in conv else same if "same" in conv else (0, 0))
        h = F.conv1d(h, t["conv.weight"], t["conv.bias"], stride=2 if "stride" in conv else 1)
        gn = nn.GroupNorm(2, 8, eps=1e-3).eval()
        gn.load_state_dict({"weight": t["gn.weight"], "bias": t["gn.bias"]})
        want = gn(h).transpose(1, 2)
        torch.testing.assert_close(built(x), want)
        torch.testing.assert_close(theirs(x), want)


@pytest.mark.parametrize("inp, body, move", [
    ("[8, 5, 5]", "  - layernorm\n", (1, -1)),  # an image: its channels, ConvNeXt's LayerNorm2d
    ("[6, 8]", "  - layernorm\n", (-1, -1)),  # a sequence (T, F): its features
    ("[8, 5, 5]", "  - {flatten: {start: 1}}\n  - layernorm\n", (1, -1)),  # (F, T), as ViT's patches: features
    ("[8, 5, 5]", "  - {permute: {dims: [1, 2, 0]}}\n  - layernorm\n", (3, -1)),  # (H, W, C): still the channels
])
def test_layernorm_defaults_to_the_layouts_channels_or_features(tmp_path: Path, inp: str, body: str,
                                                                move: tuple[int, int]) -> None:
    report = spec(tmp_path, inp, body)
    model = archspec.build(report).eval()
    t = randomise(model)
    (weight,) = [v for k, v in t.items() if k.endswith("weight")]
    assert report.totals.params == 2 * 8 and weight.shape == (8,)
    x = torch.randn(2, *(int(s) for s in inp.strip("[]").split(",")))
    h = x.flatten(2) if "flatten" in body else x.permute(0, 2, 3, 1) if "permute" in body else x
    bias = [v for k, v in t.items() if k.endswith("bias")][0]
    want = F.layer_norm(h.movedim(*move), (8,), weight, bias).movedim(move[1], move[0])
    torch.testing.assert_close(model(x), want)


@pytest.mark.parametrize("inp, body, scale_shape", [
    ("[8, 5, 5]", "", (8, 1, 1)),  # torchvision ConvNeXt's (C, 1, 1)
    ("[6, 8]", "", (8,)),  # a sequence's features
    ("[8]", "", (8,)),
    ("[6, 8]", "  - {transpose: {dims: [0, 1]}}\n", (8, 1)),  # (F, T): the features, not the time steps
    ("[8, 5, 5]", "  - {permute: {dims: [1, 2, 0]}}\n", (8,)),  # (H, W, C): the channels, last
])
def test_layer_scale_scales_the_layouts_channels_or_features(tmp_path: Path, inp: str, body: str,
                                                             scale_shape: tuple[int, ...]) -> None:
    report = spec(tmp_path, inp, body + "  - {layer_scale: {value: 0.5}, name: ls}\n")
    model = archspec.build(report)
    scale = model.state_dict()["ls.scale"]
    assert tuple(scale.shape) == scale_shape and report.totals.params == 8
    per_feature = torch.arange(8, dtype=torch.float32)
    with torch.no_grad():
        scale.copy_(per_feature.reshape(scale_shape))
    x = torch.randn(2, *(int(s) for s in inp.strip("[]").split(",")))
    if "transpose" in body:  # (N, F, T): feature f scaled by f at every step
        want = x.transpose(1, 2) * per_feature[:, None]
    elif "permute" in body:  # (N, H, W, C)
        want = x.permute(0, 2, 3, 1) * per_feature
    else:  # channels at axis 1 of an image, features last in a sequence or vector
        want = x * (per_feature[:, None, None] if x.dim() == 4 else per_feature)
    torch.testing.assert_close(model(x), want)


def test_permute_moves_the_layout_and_a_conv_refuses_channels_last(tmp_path: Path) -> None:
    message = refused(tmp_path, "[3, 8, 8]", "  - {permute: {dims: [1, 2, 0]}, name: to_hwc}\n"
                                             "  - {conv2d: {out: 4, kernel: 3}, name: conv}\n")
    assert message == ("AS203 conv2d expects a (C, H, W) input (layout CHW), got 8x8x3 in layout HWC "
                       "| permute its axes back to CHW first: insert `- permute: {dims: [2, 0, 1]}` before it")
    # permuted back, the letters are CHW again and the conv reads the 3 channels
    report = spec(tmp_path, "[3, 8, 8]", "  - {permute: {dims: [1, 2, 0]}}\n  - {permute: {dims: [2, 0, 1]}}\n"
                                         "  - {conv2d: {out: 4, kernel: 3}}\n")
    assert report.totals.params == 4 * 3 * 9 + 4


def test_transpose_moves_the_layout_and_sequence_kinds_refuse_it(tmp_path: Path) -> None:
    for layer in ("{lstm: {hidden: 4}}", "{conv1d: {out: 4, kernel: 3}}", "{attention: {heads: 2}}"):
        message = refused(tmp_path, "[6, 8]", f"  - {{transpose: {{dims: [0, 1]}}}}\n  - {layer}\n")
        kind = layer[1:layer.index(":")]
        assert f"AS203 {kind} expects a (T, " in message and "got 8x6 in layout FT" in message, message


def test_norms_on_channels_last_are_refused_or_read_the_channels(tmp_path: Path) -> None:
    hwc = "  - {permute: {dims: [1, 2, 0]}}\n"
    assert refused(tmp_path, "[4, 6, 6]", hwc + "  - instancenorm\n").startswith(
        "AS203 instancenorm expects a (C, H, W) input (layout CHW), got 6x6x4 in layout HWC")
    assert "batchnorm normalises a (C, H, W), (T, F) or (F) input; a 6x6x4 input in layout HWC is neither" in \
        refused(tmp_path, "[4, 6, 6]", hwc + "  - batchnorm\n")
    # group norm reads the channels wherever the layout puts them: nn.GroupNorm on the moved axis
    report = spec(tmp_path, "[4, 6, 6]", hwc + "  - {groupnorm: {groups: 2}, name: gn}\n")
    assert report.totals.params == 2 * 4
    model = archspec.build(report).eval()
    t = randomise(model)
    x = torch.randn(2, 4, 6, 6)
    want = F.group_norm(x, 2, t["gn.weight"], t["gn.bias"]).permute(0, 2, 3, 1)
    torch.testing.assert_close(model(x), want)


def test_concat_joins_the_channels_of_a_permuted_image(tmp_path: Path) -> None:
    report = spec(tmp_path, "[4, 6, 6]", "  - {permute: {dims: [1, 2, 0]}, name: a}\n"
                                         "  - {concat, from: [a, a]}\n")
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(archspec.build(report)(x), torch.cat([x, x], 1).permute(0, 2, 3, 1))


@pytest.mark.parametrize("name", sorted(k for k, v in REGISTRY.items()
                                        if v.input_layouts and v.example is not None))
def test_every_kind_that_needs_a_layout_refuses_a_permuted_one(tmp_path: Path, name: str) -> None:
    kind = REGISTRY[name]
    wanted = kind.input_layouts[0]
    inp, move = (("[4, 8, 8]", "{permute: {dims: [1, 2, 0]}}") if len(wanted) == 3 else
                 ("[6, 4]", "{transpose: {dims: [0, 1]}}"))
    message = refused(tmp_path, inp, f"  - {move}\n  - {{{name}: {json.dumps(kind.example)}}}\n")
    assert message.startswith(f"AS203 {name} expects a {kind.input_desc} input (layout {wanted}") and \
        f"permute its axes back to {wanted} first" in message, message
