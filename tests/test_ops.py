"""Operator set v2, part A (issue #13): each new kind against an independent definition (hand-written
loops or closed formulas, not the module it lowers to), its MACs against FlopCounterMode, its ONNX
export against PyTorch, its mistakes as single diagnostics; and the zoo specs that need them against
hand-written PyTorch models of the papers."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_lower import _kind_spec, assert_same_function
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archspec
from archspec.errors import SpecError
from archspec.layers import REGISTRY

SPECS = Path(__file__).resolve().parent.parent / "specs"


def one_layer(tmp_path: Path, shape: str, layer: str) -> archspec.Report:
    path = tmp_path / "spec.yaml"
    path.write_text(f"archspec: 1\nname: one\ninput: {{x: {shape}}}\nnetwork:\n  - {layer}\n")
    return archspec.check(path)


def run(report: archspec.Report, x: torch.Tensor) -> torch.Tensor:
    module = archspec.build(report, seed=0).eval()
    with torch.no_grad():
        return module(x)


def macs_of(module: nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops() // 2


# --- element-wise and normalisation ---------------------------------------------------------------

ELEMENTWISE = {  # the published formulas, written out
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "hardswish": lambda x: x * torch.clamp(x + 3, 0, 6) / 6,
    "hardsigmoid": lambda x: torch.clamp(x + 3, 0, 6) / 6,
    "mish": lambda x: x * torch.tanh(torch.log1p(torch.exp(x))),
    "scale": lambda x: 0.17 * x,
}


@pytest.mark.parametrize("kind", sorted(ELEMENTWISE))
def test_elementwise_formula(kind: str, tmp_path: Path) -> None:
    layer = "{scale: {factor: 0.17}}" if kind == "scale" else kind
    report = one_layer(tmp_path, "[3, 5, 5]", layer)
    x = torch.linspace(-6, 6, 2 * 75).reshape(2, 3, 5, 5)
    torch.testing.assert_close(run(report, x), ELEMENTWISE[kind](x), rtol=1e-5, atol=1e-6)


def _normalise(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)  # biased, as the papers define it
    return (x - mean) / torch.sqrt(var + eps)


def test_layernorm_over_image_channels_is_convnext_layernorm2d(tmp_path: Path) -> None:
    report = one_layer(tmp_path, "[6, 4, 5]", "{layernorm: {eps: 1.0e-6}}")
    module = archspec.build(report, seed=0).eval()
    norm = next(m for m in module.modules() if isinstance(m, nn.LayerNorm))
    with torch.no_grad():
        norm.weight.copy_(torch.arange(6.0) + 1)
        norm.bias.copy_(torch.arange(6.0) / 10)
    x = torch.randn(2, 6, 4, 5) * 3 + 1
    expected = _normalise(x, (1,), 1e-6) * (torch.arange(6.0) + 1).view(1, 6, 1, 1) + (torch.arange(6.0) / 10).view(1, 6, 1, 1)
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert report.totals.params == 12 and report.totals.macs == 0


def test_layernorm_over_token_features(tmp_path: Path) -> None:
    report = one_layer(tmp_path, "[time=7, 8]", "{layernorm: {affine: false}}")
    x = torch.randn(3, 7, 8)
    torch.testing.assert_close(run(report, x), _normalise(x, (2,), 1e-5), rtol=1e-5, atol=1e-5)
    assert report.totals.params == 0


def test_groupnorm_and_instancenorm(tmp_path: Path) -> None:
    x = torch.randn(2, 6, 4, 4) * 2 + 3
    grouped = run(one_layer(tmp_path, "[6, 4, 4]", "{groupnorm: {groups: 3}}"), x)  # weight 1, bias 0 at init
    expected = _normalise(x.reshape(2, 3, 2, 4, 4), (2, 3, 4), 1e-5).reshape(2, 6, 4, 4)
    torch.testing.assert_close(grouped, expected, rtol=1e-5, atol=1e-5)
    instance = run(one_layer(tmp_path, "[6, 4, 4]", "instancenorm"), x)
    torch.testing.assert_close(instance, _normalise(x, (2, 3), 1e-5), rtol=1e-5, atol=1e-5)


# --- tensor shape ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, expected", [
    ("{permute: {dims: [1, 2, 0]}}", lambda x: x.numpy().transpose(0, 2, 3, 1)),
    ("{transpose: {dims: [0, -1]}}", lambda x: x.numpy().swapaxes(1, 3)),
    ("{reshape: {shape: [4, -1]}}", lambda x: x.numpy().reshape(2, 4, 30)),
    ("{flatten: {start: 1}}", lambda x: x.numpy().reshape(2, 4, 30)),
    ("{flatten: {start: 0, end: 1}}", lambda x: x.numpy().reshape(2, 20, 6)),
    ("{slice: {dim: 1, step: 2}}", lambda x: x.numpy()[:, :, ::2]),
    ("{slice: {dim: -1, start: -4, end: -1}}", lambda x: x.numpy()[..., -4:-1]),
    ("{select: {dim: 0, index: -1}}", lambda x: x.numpy()[:, -1]),
    ("{pad: {channels: [2, 1]}}", lambda x: np.concatenate([np.zeros((2, 2, 5, 6)), x.numpy(), np.zeros((2, 1, 5, 6))], 1)),
    ("{pad: {padding: [1, 0, 2, 1], mode: replicate}}", lambda x: np.pad(x.numpy(), ((0, 0), (0, 0), (1, 0), (2, 1)), "edge")),
    ("{pad: {padding: 2, mode: reflect}}", lambda x: np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), "reflect")),
    ("{pad: {padding: [1, 2], value: -1.5}}", lambda x: np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (2, 2)),
                                                              constant_values=-1.5)),
])
def test_shape_kinds_against_numpy(layer: str, expected, tmp_path: Path) -> None:
    report = one_layer(tmp_path, "[4, 5, 6]", layer)
    x = torch.randn(2, 4, 5, 6)
    want = expected(x)
    got = run(report, x)
    assert tuple(got.shape[1:]) == report.output.shape == want.shape[1:]
    np.testing.assert_array_equal(got.numpy(), want.astype(np.float32))


def test_channel_shuffle_is_zhang_et_al_interleaving(tmp_path: Path) -> None:
    """ShuffleNet §3.1: with g groups of n channels, output channel i*g + j is input channel j*n + i."""
    g, n = 3, 4
    x = torch.arange(g * n, dtype=torch.float32).view(1, g * n, 1, 1).expand(2, g * n, 2, 2).contiguous()
    out = run(one_layer(tmp_path, f"[{g * n}, 2, 2]", f"{{channel_shuffle: {{groups: {g}}}}}"), x)
    assert [int(out[0, c, 0, 0]) for c in range(g * n)] == [j * n + i for i in range(n) for j in range(g)]


def _bilinear(img: np.ndarray, oh: int, ow: int, align: bool) -> np.ndarray:
    """Separable linear interpolation from the coordinate maps PyTorch documents for interpolate()."""
    def coords(n_in: int, n_out: int) -> np.ndarray:
        d = np.arange(n_out, dtype=np.float64)
        if align:
            return d * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(1)
        return np.clip((d + 0.5) * n_in / n_out - 0.5, 0, None)

    def along(a: np.ndarray, axis: int, n_out: int) -> np.ndarray:
        axis %= a.ndim
        src = coords(a.shape[axis], n_out)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, a.shape[axis] - 1)
        w = (src - lo).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
        return np.take(a, lo, axis) * (1 - w) + np.take(a, hi, axis) * w

    return along(along(img, -2, oh), -1, ow)


@pytest.mark.parametrize("layer, size, align", [
    ("{upsample: {scale: 2, mode: bilinear}}", (8, 10), False),
    ("{upsample: {scale: [3, 2], mode: bilinear, align_corners: true}}", (12, 10), True),
    ("{upsample: {size: [7, 9], mode: bilinear}}", (7, 9), False),
])
def test_upsample_bilinear(layer: str, size: tuple[int, int], align: bool, tmp_path: Path) -> None:
    report = one_layer(tmp_path, "[3, 4, 5]", layer)
    x = torch.randn(2, 3, 4, 5)
    assert report.output.shape == (3, *size)
    np.testing.assert_allclose(run(report, x).numpy(), _bilinear(x.numpy().astype(np.float64), *size, align),
                               rtol=1e-5, atol=1e-5)


def test_upsample_nearest_repeats_pixels(tmp_path: Path) -> None:
    x = torch.randn(1, 2, 3, 3)
    out = run(one_layer(tmp_path, "[2, 3, 3]", "{upsample: {scale: 2}}"), x)
    np.testing.assert_array_equal(out.numpy(), x.numpy().repeat(2, 2).repeat(2, 3))


# --- convolutions and pooling ----------------------------------------------------------------------

def test_conv_transpose2d_is_the_scatter_of_the_kernel(tmp_path: Path) -> None:
    """Each input pixel adds weight * value into the output window at its position times the stride
    (d2l §14.10.1), then `padding` is cropped from every side; groups split the channels."""
    report = one_layer(tmp_path, "[4, 3, 3]", "{conv_transpose2d: {out: 6, kernel: 3, stride: 2, padding: 1, "
                                              "output_padding: 1, groups: 2, dilation: 1}}")
    module = archspec.build(report, seed=0).eval()
    conv = next(m for m in module.modules() if isinstance(m, nn.ConvTranspose2d))
    x = torch.randn(1, 4, 3, 3)
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()  # (Cin, out/groups, kh, kw)
    s, p, k = 2, 1, 3
    full = np.zeros((6, (3 - 1) * s + k + 1, (3 - 1) * s + k + 1))  # output_padding adds one row and column
    for c, i, j in itertools.product(range(4), range(3), range(3)):
        group = c // 2
        full[group * 3:(group + 1) * 3, i * s:i * s + k, j * s:j * s + k] += x[0, c, i, j].item() * w[c]
    expected = full[:, p:p + 6, p:p + 6] + b[:, None, None]
    assert report.output.shape == (6, 6, 6)
    np.testing.assert_allclose(module(x).detach().numpy()[0], expected, rtol=1e-5, atol=1e-5)
    assert report.totals.macs == macs_of(module, x) == 4 * 3 * 3 * 3 * 3 * 3  # H*W*Cin*(out/g)*k*k


def test_conv1d_slides_along_time(tmp_path: Path) -> None:
    report = one_layer(tmp_path, "[time=9, 4]", "{conv1d: {out: 6, kernel: 3, dilation: 2, groups: 2, padding: [2, 1]}}")
    module = archspec.build(report, seed=0).eval()
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv1d))
    x = torch.randn(2, 9, 4)
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()  # (out, F/groups, k)
    xp = np.pad(x.numpy(), ((0, 0), (2, 1), (0, 0)))
    steps = 9 + 3 - 2 * 2
    expected = np.zeros((2, steps, 6))
    for t, o in itertools.product(range(steps), range(6)):
        group = o // 3
        window = xp[:, t:t + 5:2, group * 2:(group + 1) * 2]  # (N, k, F/groups), dilation 2
        expected[:, t, o] = np.einsum("nkf,fk->n", window, w[o]) + b[o]
    assert report.output.shape == (steps, 6)
    np.testing.assert_allclose(module(x).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    assert report.totals.macs == macs_of(module, x[:1]) == steps * 6 * 2 * 3


@pytest.mark.parametrize("kind, reduce", [("maxpool1d", np.max), ("avgpool1d", np.mean)])
def test_pool1d_windows_along_time(kind: str, reduce, tmp_path: Path) -> None:
    report = one_layer(tmp_path, "[time=10, 3]", f"{{{kind}: {{kernel: 3, stride: 2}}}}")
    x = torch.randn(2, 10, 3)
    expected = np.stack([reduce(x.numpy()[:, t:t + 3], axis=1) for t in range(0, 8, 2)], axis=1)
    np.testing.assert_allclose(run(report, x).numpy(), expected, rtol=1e-6, atol=1e-6)


SMALL_NETWORKS = {
    "decoder": ("[3, 8, 8]", """
      - {conv2d: {out: 8, kernel: 3, stride: 2, padding: 1, dilation: 1}}
      - {groupnorm: {groups: 4}}
      - hardswish
      - {conv2d: {out: 8, kernel: 3, padding: 2, dilation: 2, groups: 4}}
      - {conv_transpose2d: {out: 4, kernel: 4, stride: 2, padding: 1, groups: 2}}
      - {upsample: {size: [10, 12], mode: bilinear}}
      - {pad: {padding: 1, channels: [2, 2]}}
      - {channel_shuffle: {groups: 4}}
      - {layernorm}
      - {permute: {dims: [1, 2, 0]}}
      - {linear: {out: 5}}
      - {flatten: {start: 0, end: 1}}
      - mish
    """),
    "sequence": ("[time=12, 6]", """
      - {conv1d: {out: 8, kernel: 5, padding: same, groups: 2}}
      - silu
      - {maxpool1d: {kernel: 2}}
      - {conv1d: {out: 8, kernel: 3, stride: 2, dilation: 2}}
      - {layernorm}
      - {avgpool1d: {kernel: 2, stride: 1, padding: 1, count_include_pad: false}}
      - {transpose: {dims: [0, 1]}}
      - {select: {dim: -1, index: 0}}
      - {linear: {out: 3}}
    """),
}


@pytest.mark.parametrize("name", sorted(SMALL_NETWORKS))
def test_small_networks_agree_with_torch_and_export(name: str, tmp_path: Path) -> None:
    from test_properties import assert_torch_agrees

    shape, items = SMALL_NETWORKS[name]
    path = tmp_path / f"{name}.yaml"
    network = textwrap.indent(textwrap.dedent(items).strip("\n"), "  ")
    path.write_text(f"archspec: 1\nname: {name}\ninput: {{x: {shape}}}\nnetwork:\n{network}\n")
    report = archspec.check(path)
    assert_torch_agrees(report)
    result = archspec.export(report, tmp_path / f"{name}.onnx", dynamic="batch")
    assert result.max_abs_error < 1e-4


# --- every registered kind exports, verified --------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_kind_exports_verified(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(_kind_spec(kind).replace("'", '"'))
    result = archspec.export(path, tmp_path / "kind.onnx")  # raises unless onnxruntime agrees with PyTorch
    assert result.checks


# --- mistakes: one diagnostic each, at the parameter ------------------------------------------------

@pytest.mark.parametrize("shape, layer, code, where, words", [
    ("[4, 5, 6]", "{reshape: {shape: [7, -1]}}", "AS201", ":5:", "not a multiple of 7"),
    ("[4, 5, 6]", "{reshape: {shape: [-1, -1]}}", "AS201", ":5:", "at most one -1"),
    ("[4, 5, 6]", "{permute: {dims: [0, 0, 1]}}", "AS201", ":5:", "not a permutation"),
    ("[4, 5, 6]", "{slice: {dim: 1, start: 9}}", "AS202", ":5:", "is empty"),
    ("[4, 5, 6]", "{select: {dim: 3, index: 0}}", "AS201", ":5:", "axis 3 does not exist; the 4x5x6 input has axes 0..2"),
    ("[4, 5, 6]", "{pad: {padding: 5, mode: reflect}}", "AS201", ":5:", "smaller than the input"),
    ("[4, 5, 6]", "{pad: {channels: [1, 1], mode: reflect}}", "AS107", ":5:", "needs mode 'constant'"),
    ("[4, 5, 6]", "{upsample: {scale: 2, size: [4, 4]}}", "AS107", ":5:", "exactly one of"),
    ("[4, 5, 6]", "{upsample: {scale: 2, align_corners: true}}", "AS107", ":5:", "'bilinear' only"),
    ("[4, 5, 6]", "{groupnorm: {groups: 3}}", "AS201", ":5:", "must divide the 4 channels"),
    ("[4, 5, 6]", "{conv_transpose2d: {out: 2, kernel: 3, output_padding: 1}}", "AS201", ":5:", "output_padding"),
    ("[time=5, 4]", "{conv1d: {out: 2, kernel: 9}}", "AS202", ":5:", "longer than the padded sequence"),
    ("[4, 5, 6]", "{conv1d: {out: 2, kernel: 3}}", "AS203", ":5:", "expects a (T, F) input"),
    ("[4, 5, 6]", "{flatten: {start: 2, end: 1}}", "AS201", ":5:", "comes after"),
])
def test_mistakes_are_one_diagnostic(shape: str, layer: str, code: str, where: str, words: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        one_layer(tmp_path, shape, layer)
    diagnostics = info.value.diagnostics
    assert len(diagnostics) == 1, [str(d) for d in diagnostics]
    text = str(info.value)
    assert code in text and words in text and f"spec.yaml{where}" in text


# --- zoo specs against hand-written PyTorch models ---------------------------------------------------

class OptionA(nn.Module):
    """He et al. 2016 §4.2 option A, as the common CIFAR code writes it: subsample, zero-pad channels."""

    def __init__(self, planes: int):
        super().__init__()
        self.planes = planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        zeros = x.new_zeros(x.shape[0], self.planes // 4, *x.shape[2:])
        return torch.cat([zeros, x, zeros], 1)


class CifarBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = OptionA(planes) if stride != 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


def resnet20_reference() -> nn.Module:
    blocks, cin = [], 16
    for planes, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            blocks.append(CifarBlock(cin, planes, stride if i == 0 else 1))
            cin = planes
    return nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), *blocks,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def test_resnet20_cifar_option_a() -> None:
    report = archspec.check(SPECS / "resnet20_cifar.yaml")
    assert report.totals.params == 269_722
    assert_same_function(archspec.build(report, seed=0), resnet20_reference(), torch.randn(2, 3, 32, 32))


class TwoTowerConv(nn.Module):
    """One AlexNet layer on two GPUs: each tower convolves only its own half of the input channels."""

    def __init__(self, cin: int, cout: int, k: int, padding: int):
        super().__init__()
        self.towers = nn.ModuleList(nn.Conv2d(cin // 2, cout // 2, k, padding=padding) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halves = x.chunk(2, dim=1)
        return torch.cat([tower(half) for tower, half in zip(self.towers, halves)], 1)


def test_alexnet_paper_is_two_towers() -> None:
    report = archspec.check(SPECS / "alexnet_paper.yaml")
    ours = archspec.build(report, seed=0).eval()
    lrn = lambda: nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)  # noqa: E731  (paper: alpha 1e-4 per n)
    towers = [TwoTowerConv(96, 256, 5, 2), TwoTowerConv(384, 384, 3, 1), TwoTowerConv(384, 256, 3, 1)]
    reference = nn.Sequential(
        nn.Conv2d(3, 96, 11, 4), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        towers[0], nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), towers[1], nn.ReLU(), towers[2], nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 1000)).eval()
    assert sum(p.numel() for p in reference.parameters()) == report.totals.params == 60_965_224
    # a grouped convolution's weight is the towers' weights stacked: copy them over by layer
    ours_convs = [m for m in ours.modules() if isinstance(m, nn.Conv2d)]
    ref_convs = [reference[0], towers[0], reference[8], towers[1], towers[2]]
    with torch.no_grad():
        for mine, theirs in zip(ours_convs, ref_convs):
            if isinstance(theirs, TwoTowerConv):
                for t, tower in enumerate(theirs.towers):
                    half = mine.out_channels // 2
                    tower.weight.copy_(mine.weight[t * half:(t + 1) * half])
                    tower.bias.copy_(mine.bias[t * half:(t + 1) * half])
            else:
                theirs.load_state_dict(mine.state_dict())
        for mine, theirs in zip([m for m in ours.modules() if isinstance(m, nn.Linear)],
                                [m for m in reference if isinstance(m, nn.Linear)]):
            theirs.load_state_dict(mine.state_dict())
        x = torch.randn(2, 3, 227, 227)
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


class Flavour(nn.Module):
    """He et al. 2016 ("Identity mappings"), Figure 4 (a)-(e), written out one by one."""

    def __init__(self, flavour: str, c: int = 16):
        super().__init__()
        self.flavour = flavour
        # registered in the order they run, as the spec's tensors are
        order = "bn_a conv1 bn_b conv2" if flavour == "e" else "conv1 bn_a conv2 bn_b"
        for name in order.split():
            self.add_module(name, nn.BatchNorm2d(c) if name.startswith("bn") else nn.Conv2d(c, c, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, relu = self.flavour, F.relu
        if f == "a":
            return relu(x + self.bn_b(self.conv2(relu(self.bn_a(self.conv1(x))))))
        if f == "b":
            return relu(self.bn_b(x + self.conv2(relu(self.bn_a(self.conv1(x))))))
        if f == "c":
            return x + relu(self.bn_b(self.conv2(relu(self.bn_a(self.conv1(x))))))
        if f == "d":
            return x + self.bn_b(self.conv2(relu(self.bn_a(self.conv1(relu(x))))))
        return x + self.conv2(relu(self.bn_b(self.conv1(relu(self.bn_a(x))))))


def test_resnet_flavours_are_figure_4() -> None:
    report = archspec.check(SPECS / "resnet_flavours.yaml")
    reference = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                              *[Flavour(f) for f in "abcde"], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    assert sum(p.numel() for p in reference.parameters()) == report.totals.params
    assert_same_function(archspec.build(report, seed=0), reference, torch.randn(2, 3, 32, 32))


class BNConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class BNInception(nn.Module):
    """A module of Ioffe & Szegedy 2015, Figure 5, from its row; proj 0 = the stride-2 kind (3c, 4e)."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, d3r: int, d3: int, pool: str, proj: int):
        super().__init__()
        stride = 2 if proj == 0 else 1
        self.branches = nn.ModuleList(([BNConv(cin, c1)] if proj else []) + [
            nn.Sequential(BNConv(cin, c3r), BNConv(c3r, c3, 3, stride)),
            nn.Sequential(BNConv(cin, d3r), BNConv(d3r, d3, 3), BNConv(d3, d3, 3, stride)),
            nn.Sequential(nn.AvgPool2d(3, 1, 1) if pool == "avg" else nn.MaxPool2d(3, stride, 1),
                          *([BNConv(cin, proj)] if proj else []))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


def test_inception_v2_is_figure_5() -> None:
    from test_zoo import BN_INCEPTION

    report = archspec.check(SPECS / "inception_v2.yaml")
    pools = ["avg", "avg", "max", "avg", "avg", "avg", "avg", "max", "avg", "max"]
    layers, cin = [BNConv(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1), BNConv(64, 64), BNConv(64, 192, 3), nn.MaxPool2d(3, 2, 1)], 192
    for (c1, c3r, c3, d3r, d3, proj, _), pool in zip(BN_INCEPTION, pools):
        layers.append(BNInception(cin, c1, c3r, c3, d3r, d3, pool, proj))
        cin = c1 + c3 + d3 + (proj or cin)
    reference = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000))
    assert sum(p.numel() for p in reference.parameters()) == report.totals.params
    ours = archspec.build(report, seed=0)
    assert macs_of(reference.eval(), torch.randn(1, 3, 224, 224)) == report.totals.macs
    assert_same_function(ours, reference, torch.randn(2, 3, 224, 224))


def test_resnet20_cifar_exports_and_runs_in_onnxruntime(tmp_path: Path) -> None:
    """Option A's slices and channel padding survive export; onnxruntime gives the module's logits."""
    from archspec.runtime import Session

    report = archspec.check(SPECS / "resnet20_cifar.yaml")
    result = archspec.export(report, tmp_path / "resnet20.onnx")
    assert result.max_rel_error < 1e-4
    module = archspec.build(report, seed=0).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = module(x).numpy()
    (got,) = Session(tmp_path / "resnet20.onnx").run({"image": x.numpy()}).values()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# --- mul, the broadcasting N-ary kind (graph IR) -----------------------------------------

def test_mul_broadcasts_an_se_gate(tmp_path: Path) -> None:
    path = tmp_path / "se.yaml"
    path.write_text(textwrap.dedent("""\
        archspec: 1
        name: se
        input: {x: [6, 5, 4]}
        network:
          - {identity, name: x0}
          - {adaptive_avgpool2d: {output: 1}, name: pooled}
          - {sigmoid, name: gate}
          - {mul, from: [x0, gate], name: gated}
          - {add, from: [gated, x0]}
        """))
    report = archspec.check(path)
    assert report.output.shape == (6, 5, 4)
    x = torch.randn(2, 6, 5, 4)
    gate = torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(run(report, x), x * gate + x, rtol=1e-5, atol=1e-6)
    assert report.totals.flops == 2 * 6 * 5 * 4 + 6 * 5 * 4 + 6  # mul, add, pooling's adds, the sigmoid's 6 gates


def test_mul_of_shapes_that_do_not_broadcast_is_one_diagnostic(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        archspec: 1
        name: bad
        input: {x: [6, 5, 4]}
        network:
          - {identity, name: x0}
          - {conv2d: {out: 3, kernel: 1}, name: narrow}
          - {mul, from: [x0, narrow]}
        """))
    with pytest.raises(SpecError) as info:
        archspec.check(path)
    assert len(info.value.diagnostics) == 1
    assert "cannot broadcast 6x5x4 and 3x5x4" in str(info.value)
