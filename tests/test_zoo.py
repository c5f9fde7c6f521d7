"""The model zoo in specs/: every spec checks, and the static checker reproduces the published
parameter and MAC counts exactly (torchvision's model cards, the VGG and GoogLeNet papers, d2l).

MACs are conv + linear + recurrent multiply-accumulates, bias excluded, batch 1 (the convention
behind torchvision's GFLOPS). The checker is static, so the whole file runs in well under a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import archspec

SPECS = Path(__file__).resolve().parent.parent / "specs"

# name: (params, MACs), from the published sources named in each spec's header.
PUBLISHED = {
    "lenet": (61_706, 416_520),
    "alexnet": (61_100_840, 714_188_480),
    "vgg11": (132_863_336, 7_609_090_048),
    "vgg11_lrn": (132_863_336, 7_609_090_048),
    "vgg13": (133_047_848, 11_308_466_176),
    "vgg16_c": (133_638_952, 11_770_888_192),
    "vgg16": (138_357_544, 15_470_264_320),
    "vgg19": (143_667_240, 19_632_062_464),
    "vgg11_bn": (132_868_840, 7_609_090_048),
    "vgg16_bn": (138_365_992, 15_470_264_320),
    "nin": (1_992_166, 762_297_352),
    "googlenet": (6_624_904, 1_498_376_192),
    "googlenet_paper": (6_998_552, 1_582_671_872),
    "inception_v3": (23_834_568, 5_713_216_096),
    "resnet18": (11_689_512, 1_814_073_344),
    "resnet34": (21_797_672, 3_663_761_408),
    "resnet50": (25_557_032, 4_089_184_256),
    "resnet101": (44_549_160, 7_801_405_440),
    "resnet152": (60_192_808, 11_513_626_624),
    "rnn_classifier": (232_970, 11_471_360),
    "gru_classifier": (693_770, 34_408_960),
    "lstm_classifier": (924_170, 45_877_760),
    # operator set v2 (issue #13), torchvision 0.29 / timm, MACs = FlopCounterMode / 2 at batch 1
    "squeezenet1_1": (1_235_496, 349_151_936),
    "mobilenet_v2": (3_504_872, 300_774_272),
    "resnext50_32x4d": (25_028_904, 4_230_479_872),
    "densenet121": (7_978_856, 2_834_161_664),
    "shufflenet_v2_x1_0": (2_278_604, 144_907_992),
    "efficientnet_b0": (5_288_548, 385_814_752),
    "mobilenet_v3_large": (5_483_032, 216_589_760),
    "regnet_y_400mf": (4_344_144, 401_842_848),
    "fcn_resnet50": (32_957_013, 142_725_772_800),
    "inception_v4": (42_679_816, 12_253_974_624),  # timm
    "inception_resnet_v2": (55_843_464, 13_155_794_016),  # timm
    # torchvision's model builders; MACs = FlopCounterMode/2 (convnext_tiny), and for vit_b_16 with the
    # attention matmuls counted: torchvision's published 17.56 GFLOPS (docs/oracle_transformers.md)
    "convnext_tiny": (28_589_128, 4_455_531_264),
    "vit_b_16": (86_567_656, 17_563_828_224),
}


# --- Independent counts for the models without a published figure ------------------------------
# Written from the papers' architectures, layer by layer, without the checker's rules.

def conv(cin: int, cout: int, k: int, out_hw: int, bias: bool = False) -> tuple[int, int]:
    weights = cin * cout * k * k
    return weights + (cout if bias else 0), weights * out_hw * out_hw


def bn(c: int) -> tuple[int, int]:
    return 2 * c, 0  # gamma and beta; running statistics are buffers


def linear(fin: int, fout: int, positions: int = 1) -> tuple[int, int]:
    return fin * fout + fout, positions * fin * fout


def lstm_layer(inputs: int, hidden: int, steps: int, directions: int) -> tuple[int, int]:
    # Four gates, each with W_ih (H x I), W_hh (H x H), b_ih and b_hh (PyTorch's nn.LSTM).
    weights = 4 * hidden * (inputs + hidden)
    return directions * (weights + 8 * hidden), directions * steps * weights


def total(parts: list[tuple[int, int]]) -> tuple[int, int]:
    return sum(p for p, _ in parts), sum(m for _, m in parts)


def preact_resnet18(classes: int = 1000) -> tuple[int, int]:
    """He et al. 2016b, pre-activation units, 2-2-2-2, shortcut type B (1x1 conv, no BN)."""
    parts = [conv(3, 64, 7, 112), bn(64)]  # stem conv1 + BN (+ ReLU, max pool to 56x56)
    cin, hw = 64, 56
    for stage, channels in enumerate((64, 128, 256, 512)):
        for unit in range(2):
            first = unit == 0
            stride = 2 if first and stage > 0 else 1
            hw //= stride
            if not (first and stage == 0):  # the very first unit uses conv1's BN-ReLU
                parts.append(bn(cin))
            parts += [conv(cin, channels, 3, hw), bn(channels), conv(channels, channels, 3, hw)]
            if cin != channels:
                parts.append(conv(cin, channels, 1, hw))  # projection shortcut
            cin = channels
    parts += [bn(512), linear(512, classes)]  # final BN-ReLU, global average pool, fc
    return total(parts)


def bilstm_tagger(vocab: int = 10_000, dim: int = 128, hidden: int = 128, tags: int = 17,
                  steps: int = 50) -> tuple[int, int]:
    parts = [(vocab * dim, 0), lstm_layer(dim, hidden, steps, 2), lstm_layer(2 * hidden, hidden, steps, 2),
             linear(2 * hidden, tags, positions=steps)]
    return total(parts)


def googlenet_aux(classes: int = 1000) -> tuple[int, int]:
    """torchvision googlenet(aux_logits=True): the main network plus two InceptionAux heads on
    inception4a (512 channels) and inception4d (528), each pooled to 4x4: BasicConv2d 1x1 -> 128
    (conv without bias + BN), fc 2048 -> 1024, fc 1024 -> classes."""
    def aux(cin: int) -> list[tuple[int, int]]:
        return [conv(cin, 128, 1, 4), bn(128), linear(128 * 4 * 4, 1024), linear(1024, classes)]

    return total([PUBLISHED["googlenet"], *aux(512), *aux(528)])


def grouped_conv(cin: int, cout: int, k: int, out_hw: int, groups: int, bias: bool = True) -> tuple[int, int]:
    weights = cout * (cin // groups) * k * k  # each filter sees its own group's input channels
    return weights + (cout if bias else 0), weights * out_hw * out_hw


def alexnet_paper() -> tuple[int, int]:
    """Krizhevsky et al. 2012, Figure 2: two towers; conv2, conv4 and conv5 see only their own tower."""
    parts = [grouped_conv(3, 96, 11, 55, 1), grouped_conv(96, 256, 5, 27, 2), grouped_conv(256, 384, 3, 13, 1),
             grouped_conv(384, 384, 3, 13, 2), grouped_conv(384, 256, 3, 13, 2),
             linear(256 * 6 * 6, 4096), linear(4096, 4096), linear(4096, 1000)]
    return total(parts)


def resnet20_cifar() -> tuple[int, int]:
    """He et al. 2016, section 4.2: 6n + 2 layers, n = 3, option-A shortcuts (no parameters)."""
    parts = [conv(3, 16, 3, 32), bn(16)]
    cin = 16
    for channels, hw in ((16, 32), (32, 16), (64, 8)):
        for _ in range(3):
            parts += [conv(cin, channels, 3, hw), bn(channels), conv(channels, channels, 3, hw), bn(channels)]
            cin = channels
    return total(parts + [linear(64, 10)])


def resnet_flavours() -> tuple[int, int]:
    """Five units of two 3x3 convolutions and two batch norms each (Fig. 4 a-e), on 16x32x32."""
    return total([conv(3, 16, 3, 32), bn(16)] + [conv(16, 16, 3, 32), bn(16), conv(16, 16, 3, 32), bn(16)] * 5
                 + [linear(16, 10)])


# BN-Inception (Ioffe & Szegedy 2015, Figure 5): #1x1, #3x3 reduce, #3x3, double #3x3 reduce,
# double #3x3, pool projection (0: a stride-2 module, max pool passed through), output size.
BN_INCEPTION = [(64, 64, 64, 64, 96, 32, 28), (64, 64, 96, 64, 96, 64, 28), (0, 128, 160, 64, 96, 0, 14),
                (224, 64, 96, 96, 128, 128, 14), (192, 96, 128, 96, 128, 128, 14), (160, 128, 160, 128, 160, 128, 14),
                (96, 128, 192, 160, 192, 128, 14), (0, 128, 192, 192, 256, 0, 7), (352, 192, 320, 160, 224, 128, 7),
                (352, 192, 320, 192, 224, 128, 7)]


def inception_v2() -> tuple[int, int]:
    def unit(cin: int, cout: int, k: int, hw: int) -> list[tuple[int, int]]:
        return [conv(cin, cout, k, hw), bn(cout)]

    parts = unit(3, 64, 7, 112) + unit(64, 64, 1, 56) + unit(64, 192, 3, 56)
    cin = 192
    for c1, c3r, c3, d3r, d3, proj, hw in BN_INCEPTION:
        before = hw * 2 if proj == 0 else hw  # a reducing module reads the larger grid
        parts += unit(cin, c3r, 1, before) + unit(c3r, c3, 3, hw)
        parts += unit(cin, d3r, 1, before) + unit(d3r, d3, 3, before) + unit(d3, d3, 3, hw)
        if proj:
            parts += unit(cin, c1, 1, hw) + unit(cin, proj, 1, hw)
        cin = c1 + c3 + d3 + (proj or cin)
    return total(parts + [linear(cin, 1000)])


def lstm_peephole_classifier(hidden: int = 256, steps: int = 50) -> tuple[int, int]:
    """lstm_classifier plus the diagonal peephole weights p_i, p_f, p_o of each layer (Gers & Schmidhuber 2000):
    3 * hidden parameters, element-wise products (no MACs)."""
    parts = [lstm_layer(128, hidden, steps, 1), lstm_layer(hidden, hidden, steps, 1), linear(hidden, 10)]
    return total(parts + [(3 * hidden, 0), (3 * hidden, 0)])


INDEPENDENT = {
    "resnet18_preact": preact_resnet18(),
    "bilstm_tagger": bilstm_tagger(),
    "googlenet_aux": googlenet_aux(),
    "alexnet_paper": alexnet_paper(),
    "resnet20_cifar": resnet20_cifar(),
    "resnet_flavours": resnet_flavours(),
    "inception_v2": inception_v2(),
    "lstm_peephole_classifier": lstm_peephole_classifier(),
}
EXPECTED = {**PUBLISHED, **INDEPENDENT}


def resnet18() -> tuple[int, int]:
    """torchvision ResNet-18 with the same helpers: post-activation units, shortcut conv + BN."""
    parts = [conv(3, 64, 7, 112), bn(64)]
    cin, hw = 64, 56
    for stage, channels in enumerate((64, 128, 256, 512)):
        for unit in range(2):
            hw //= 2 if unit == 0 and stage > 0 else 1
            parts += [conv(cin, channels, 3, hw), bn(channels), conv(channels, channels, 3, hw), bn(channels)]
            if cin != channels:
                parts += [conv(cin, channels, 1, hw), bn(channels)]
            cin = channels
    parts.append(linear(512, 1000))
    return total(parts)


def test_independent_formulas_reproduce_published_counts():
    """The helpers behind INDEPENDENT reproduce published neighbours of those models."""
    assert resnet18() == PUBLISHED["resnet18"]
    assert googlenet_aux()[0] == 13_004_888  # sum(p.numel()) of torchvision's googlenet(aux_logits=True)
    assert total([lstm_layer(128, 256, 50, 1), lstm_layer(256, 256, 50, 1), linear(256, 10)]) \
        == PUBLISHED["lstm_classifier"]
    assert alexnet_paper()[0] == 60_965_224  # issue #13's figure for the two-tower original
    assert resnet20_cifar()[0] == 269_722  # He et al. 2016 Table 6: 0.27M


# --- The zoo ------------------------------------------------------------------------------------

def spec_path(name: str) -> Path:
    return SPECS / f"{name}.yaml"


def test_every_spec_has_expected_counts():
    """A spec added to specs/ must be added to the table here too (and vice versa)."""
    assert {p.stem for p in SPECS.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_spec_checks(path: Path):
    report = archspec.check(path)
    assert report.graph.name == path.stem
    assert report.totals.params > 0 and report.totals.macs > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts(name: str):
    totals = archspec.check(spec_path(name)).totals
    assert (totals.params, totals.macs) == EXPECTED[name]


def archspec_cli() -> list[str]:
    script = Path(sys.executable).with_name("archspec")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from archspec.cli import main; sys.exit(main())"]


@pytest.mark.parametrize("name", ["lenet", "googlenet_paper", "resnet50", "lstm_classifier"])
def test_counts_via_cli_json(name: str):
    result = subprocess.run(archspec_cli() + ["summary", str(spec_path(name)), "--format", "json"],
                            capture_output=True, text=True, timeout=60, check=True)
    totals = json.loads(result.stdout)["totals"]
    assert (totals["params"], totals["macs"]) == EXPECTED[name]


# --- GoogLeNet, per Inception module (Szegedy et al. 2015, Table 1) -----------------------------

# name: (input channels, spatial size, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj,
#        weights without biases, MACs) -- the last two as given for the paper's Table 1.
INCEPTIONS = {
    "inception3a": (192, 28, 64, 96, 128, 16, 32, 32, 163_328, 128_049_152),
    "inception3b": (256, 28, 128, 128, 192, 32, 96, 64, 388_096, 304_267_264),
    "inception4a": (480, 14, 192, 96, 208, 16, 48, 64, 375_552, 73_608_192),
    "inception4b": (512, 14, 160, 112, 224, 24, 64, 64, 448_512, 87_908_352),
    "inception4c": (512, 14, 128, 128, 256, 24, 64, 64, 509_440, 99_850_240),
    "inception4d": (512, 14, 112, 144, 288, 32, 64, 64, 604_672, 118_515_712),
    "inception4e": (528, 14, 256, 160, 320, 32, 128, 128, 867_328, 169_996_288),
    "inception5a": (832, 7, 256, 160, 320, 32, 128, 128, 1_042_432, 51_079_168),
    "inception5b": (832, 7, 384, 192, 384, 48, 128, 128, 1_442_816, 70_697_984),
}


@pytest.fixture(scope="module")
def googlenet_paper() -> archspec.Report:
    return archspec.check(spec_path("googlenet_paper"))


def test_googlenet_paper_has_nine_inception_rows(googlenet_paper: archspec.Report):
    rows = [n.path for n in googlenet_paper.nodes if n.depth == 1 and n.kind == "inception"]
    assert rows == list(INCEPTIONS)


@pytest.mark.parametrize("name", list(INCEPTIONS))
def test_googlenet_paper_inception(googlenet_paper: archspec.Report, name: str):
    cin, hw, c1, c3r, c3, c5r, c5, proj, weights, macs = INCEPTIONS[name]
    # The table's figures follow from its columns: every weight is used once per output position.
    assert cin * (c1 + c3r + c5r + proj) + 9 * c3r * c3 + 25 * c5r * c5 == weights
    assert weights * hw * hw == macs
    node = next(n for n in googlenet_paper.nodes if n.depth == 1 and n.path == name)
    biases = c1 + c3r + c3 + c5r + c5 + proj  # one per convolution output channel
    assert (node.params - biases, node.macs) == (weights, macs)
    assert node.output.shape == (c1 + c3 + c5 + proj, hw, hw)
