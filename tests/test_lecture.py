"""The lecture's tables, reproduced from the specs: GoogLeNet's Table 1 beside the paper's own
figures, the Inception-vs-plain-convolution comparison, and "the curse of the last layer"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import archspec

ROOT = Path(__file__).resolve().parent.parent

# Szegedy et al. 2015, Table 1: (paper's params in K = 1024 weights, paper's ops in M) and our exact
# (weights without biases, MACs). The paper rounds its ops; its params column is off by up to ~8%.
TABLE1 = {
    "inception3a": (159, 128, 163_328, 128_049_152),
    "inception3b": (380, 304, 388_096, 304_267_264),
    "inception4a": (364, 73, 375_552, 73_608_192),
    "inception4b": (437, 88, 448_512, 87_908_352),
    "inception4c": (463, 100, 509_440, 99_850_240),
    "inception4d": (580, 119, 604_672, 118_515_712),
    "inception4e": (840, 170, 867_328, 169_996_288),
    "inception5a": (1072, 54, 1_042_432, 51_079_168),
    "inception5b": (1388, 71, 1_442_816, 70_697_984),
}


@pytest.fixture(scope="module")
def googlenet() -> archspec.Report:
    return archspec.check(ROOT / "specs" / "googlenet_paper.yaml")


def test_googlenet_table1_beside_the_paper(googlenet: archspec.Report) -> None:
    print(f"\n{'row':12} {'paper params':>12} {'ours':>10} {'paper ops':>9} {'ours (MACs)':>12}")
    for name, (paper_k, paper_m, weights, macs) in TABLE1.items():
        node = googlenet.node(name)
        print(f"{name:12} {paper_k:>11}K {node.weights:>10,} {paper_m:>8}M {node.macs:>12,}")
        assert (node.weights, node.macs) == (weights, macs)
        if name != "inception5a":  # the paper's 54M for 5a is a misprint: 51.1M
            assert abs(node.macs / 1e6 - paper_m) < 1  # the paper rounds some rows and truncates others
        assert abs(node.weights / 1024 - paper_k) / paper_k < 0.08  # the paper's params column is approximate


def test_googlenet_first_row_misprint(googlenet: archspec.Report) -> None:
    """Table 1 lists conv 7x7/2 as 2.7K params / 34M ops; the layer really has 9,408 weights / 118M MACs."""
    conv1 = googlenet.node("conv1")
    assert (conv1.weights, conv1.macs) == (7 * 7 * 3 * 64, 118_013_952) == (9_408, 118_013_952)


def test_inception_versus_plain_convolutions_compare_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "archspec.cli", "compare",
                             str(ROOT / "specs" / "googlenet_paper.yaml") + "#inception3a",
                             str(ROOT / "examples" / "lecture" / "conv3x3.yaml"),
                             str(ROOT / "examples" / "lecture" / "conv5x5.yaml")],
                            capture_output=True, text=True, check=True)
    rows = result.stdout.splitlines()[2:]
    expected = [("163,328", "128,049,152"), ("442,368", "346,816,512"), ("1,228,800", "963,379,200")]
    assert len(rows) == 3
    for row, (weights, macs) in zip(rows, expected):
        assert weights in row and macs in row and "256x28x28" in row


def test_curse_of_the_last_layer() -> None:
    """LeNet's first dense layer holds 16x5x5x120 = 48K weights; VGG's holds 512x7x7x4096 = 102.8M."""
    lenet = archspec.check(ROOT / "specs" / "lenet.yaml").node("linear0")
    vgg = archspec.check(ROOT / "specs" / "vgg16.yaml")
    first_fc = next(n for n in vgg.nodes if n.kind == "linear")
    assert lenet.weights == 16 * 5 * 5 * 120 == 48_000
    assert first_fc.weights == 512 * 7 * 7 * 4096 == 102_760_448
    assert first_fc.params / vgg.totals.params > 0.74  # three quarters of VGG-16 sits in one layer


# Ioffe & Szegedy 2015, Figure 5, as docs/lecture.md shows it: (output, params, MACs) per row.
BN_INCEPTION_ROWS = {
    "inception3a": ((256, 28, 28), 219_072, 170_999_808),
    "inception3b": ((320, 28, 28), 260_160, 203_112_448),
    "inception3c": ((576, 14, 14), 385_088, 143_904_768),
    "inception4a": ((576, 14, 14), 609_984, 119_218_176),
    "inception4b": ((576, 14, 14), 665_344, 130_056_192),
    "inception4c": ((608, 14, 14), 914_432, 178_827_264),  # the table prints 576: its columns give 608
    "inception4d": ((608, 14, 14), 1_142_912, 223_584_256),  # idem
    "inception4e": ((1056, 7, 7), 1_449_984, 164_577_280),  # the table prints 1024
    "inception5a": ((1024, 7, 7), 2_208_896, 108_079_104),
    "inception5b": ((1024, 7, 7), 2_279_616, 111_541_248),
}


def test_bn_inception_figure5_rows() -> None:
    report = archspec.check(ROOT / "specs" / "inception_v2.yaml")
    for name, (shape, params, macs) in BN_INCEPTION_ROWS.items():
        node = report.node(name)
        assert (node.output.shape, node.params, node.macs) == (shape, params, macs), name


def test_resnet_flavours_cost_the_same() -> None:
    """He et al. 2016, Fig. 4: the orderings (a)-(e) move BN and ReLU, never add or remove a weight."""
    report = archspec.check(ROOT / "specs" / "resnet_flavours.yaml")
    units = [report.node(f) for f in "abcde"]
    assert {(u.params, u.macs) for u in units} == {(2 * 16 * 16 * 9 + 4 * 16, 2 * 16 * 16 * 9 * 32 * 32)}
    # in order: the residual body, the addition (the identity shortcut's node), then `then`
    def is_add(n) -> bool:
        return n.kind == "add" or n.path.endswith(".shortcut")

    order = {f: " ".join("ADD" if is_add(n) else n.kind for n in report.nodes
                         if n.path.startswith(f + ".") and (n.leaf or is_add(n))) for f in "abcde"}
    assert order == {"a": "conv2d batchnorm relu conv2d batchnorm ADD relu",
                     "b": "conv2d batchnorm relu conv2d ADD batchnorm relu",
                     "c": "conv2d batchnorm relu conv2d batchnorm relu ADD",
                     "d": "relu conv2d batchnorm relu conv2d batchnorm ADD",
                     "e": "batchnorm relu conv2d batchnorm relu conv2d ADD"}
