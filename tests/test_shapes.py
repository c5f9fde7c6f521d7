"""Per-kind shape and cost rules, checked against the lecture's worked examples (d2l ch. 7) and
against the PyTorch output-size formulas written out by hand."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

import archspec
from archspec import SpecError
from archspec.layers import REGISTRY
from archspec.layers.conv import Conv2d, Conv2dParams, same_padding
from archspec.layers.pool import AvgPool2d, AvgPoolParams, MaxPool2d, PoolParams


def spec(tmp_path: Path, shape: list[int], body: str, dtype: str | None = None) -> Path:
    """Writes a spec whose network items start at line 5, column 5 (`  - kind`)."""
    decl = f"{shape}" if dtype is None else f"{{shape: {shape}, dtype: {dtype}}}"
    path = tmp_path / "spec.yaml"
    path.write_text(f"archspec: 1\nname: t\ninput: {{x: {decl}}}\nnetwork:\n"
                    + textwrap.indent(textwrap.dedent(body), "  "),
                    encoding="utf-8")
    return path


def check(tmp_path: Path, shape: list[int], body: str, dtype: str | None = None) -> archspec.Report:
    return archspec.check(spec(tmp_path, shape, body, dtype))


def errors(tmp_path: Path, shape: list[int], body: str, dtype: str | None = None) -> list[archspec.Diagnostic]:
    with pytest.raises(SpecError) as info:
        check(tmp_path, shape, body, dtype)
    return list(info.value.diagnostics)


def where(d: archspec.Diagnostic) -> tuple[str, int, int]:
    return d.code, d.loc.line, d.loc.col


# --- convolution: d2l 7.3 worked examples ---------------------------------------------------

def test_5x5_kernel_shrinks_32_to_28(tmp_path):
    report = check(tmp_path, [1, 32, 32], "  - conv2d: {out: 1, kernel: 5}\n")
    assert report.output.shape == (1, 28, 28)


def test_seven_5x5_layers_shrink_32_to_4(tmp_path):
    report = check(tmp_path, [1, 32, 32], "  - repeat: 7\n    body:\n      - conv2d: {out: 1, kernel: 5}\n")
    assert [n.output.shape[1] for n in report.nodes if n.leaf] == [28, 24, 20, 16, 12, 8, 4]
    assert report.output.shape == (1, 4, 4)


def test_an_eighth_5x5_layer_does_not_fit(tmp_path):
    d, = errors(tmp_path, [1, 32, 32], "  - repeat: 8\n    body:\n      - conv2d: {out: 1, kernel: 5}\n")
    assert where(d) == ("AS202", 7, 34)
    assert "kernel 5x5 is larger than the padded input 4x4" in d.message
    assert "conv2d7" in d.message


def test_padding_1_keeps_8x8_with_3x3(tmp_path):
    assert check(tmp_path, [1, 8, 8], "  - conv2d: {out: 1, kernel: 3, padding: 1}\n").output.shape == (1, 8, 8)


def test_stride_2_halves_8x8(tmp_path):
    body = "  - conv2d: {out: 1, kernel: 3, padding: 1, stride: 2}\n"
    assert check(tmp_path, [1, 8, 8], body).output.shape == (1, 4, 4)


def test_rectangular_kernel_padding_and_stride(tmp_path):
    body = "  - conv2d: {out: 1, kernel: [3, 5], padding: [0, 1], stride: [3, 4]}\n"
    assert check(tmp_path, [1, 8, 8], body).output.shape == (1, 2, 2)


def test_same_padding_with_even_kernel_is_asymmetric(tmp_path):
    assert same_padding(7, 4, 1, 1) == (2, 1)  # ceil(3/2) top, floor(3/2) bottom
    assert same_padding(7, 3, 1, 1) == (1, 1)
    report = check(tmp_path, [1, 7, 7], "  - conv2d: {out: 1, kernel: 4, padding: same}\n")
    assert report.output.shape == (1, 7, 7)
    p = Conv2dParams.model_validate({"out": 1, "kernel": 4, "padding": "same"})
    assert Conv2d.pads(p, (1, 7, 7)) == (2, 1, 2, 1)


def test_same_padding_gives_ceil_n_over_s():
    for n in range(1, 12):
        for k in range(1, 6):
            for s in (1, 2, 3):
                p = Conv2dParams.model_validate({"out": 1, "kernel": k, "stride": s, "padding": "same"})
                assert Conv2d.infer(p, (1, n, n)) == (1, math.ceil(n / s), math.ceil(n / s)), (n, k, s)
                top, bottom = same_padding(n, k, s, 1)
                assert top - bottom in (0, 1)  # the odd row goes on top


def test_explicit_four_sided_padding(tmp_path):
    body = "  - conv2d: {out: 1, kernel: 3, padding: [2, 0, 1, 1]}\n"
    assert check(tmp_path, [1, 7, 7], body).output.shape == (1, 7, 7)


def test_dilation(tmp_path):
    # span = d*(k-1)+1 = 5
    assert check(tmp_path, [1, 7, 7], "  - conv2d: {out: 1, kernel: 3, dilation: 2}\n").output.shape == (1, 3, 3)
    body = "  - conv2d: {out: 1, kernel: 3, dilation: 2, padding: 2}\n"
    assert check(tmp_path, [1, 7, 7], body).output.shape == (1, 7, 7)


def test_dilated_kernel_larger_than_input(tmp_path):
    d, = errors(tmp_path, [1, 4, 4], "  - conv2d: {out: 1, kernel: 3, dilation: 3}\n")
    assert where(d) == ("AS202", 5, 30)
    assert "dilated to 7x7" in d.message


def _torch_conv_out(n: int, k: int, s: int, p: int, d: int) -> int:
    """torch.nn.Conv2d docs: floor((n + 2p - d*(k-1) - 1) / s + 1)."""
    return math.floor((n + 2 * p - d * (k - 1) - 1) / s + 1)


def test_conv_matches_the_pytorch_formula():
    checked = 0
    for n in range(1, 13):
        for k in range(1, 6):
            for s in (1, 2, 3):
                for p in (0, 1, 2):
                    for d in (1, 2):
                        if d * (k - 1) + 1 > n + 2 * p:
                            continue
                        params = Conv2dParams.model_validate(
                            {"out": 2, "kernel": k, "stride": s, "padding": p, "dilation": d})
                        o = _torch_conv_out(n, k, s, p, d)
                        assert Conv2d.infer(params, (1, n, n)) == (2, o, o), (n, k, s, p, d)
                        checked += 1
    assert checked > 500


# --- groups -------------------------------------------------------------------------------------

def test_grouped_conv_params(tmp_path):
    report = check(tmp_path, [4, 8, 8], "  - conv2d: {out: 8, kernel: 3, groups: 2}\n")
    assert report.output.shape == (8, 6, 6)
    assert report.totals.params == 8 * (4 // 2) * 3 * 3 + 8
    assert report.totals.macs == 8 * 6 * 6 * (4 // 2) * 9


def test_depthwise_conv_params(tmp_path):
    report = check(tmp_path, [32, 8, 8], "  - conv2d: {out: 32, kernel: 3, padding: 1, groups: 32, bias: false}\n")
    assert report.totals.params == 32 * 9
    assert report.totals.macs == 32 * 8 * 8 * 9


@pytest.mark.parametrize("groups, out", [(3, 8), (4, 6)])
def test_groups_must_divide_channels(tmp_path, groups, out):
    d, = errors(tmp_path, [4, 8, 8], f"  - conv2d: {{out: {out}, kernel: 3, groups: {groups}}}\n")
    assert where(d) == ("AS201", 5, 41)
    assert d.path == "network[0].conv2d.groups"
    assert f"groups={groups} must divide" in d.message


# --- pooling --------------------------------------------------------------------------------------

def _torch_pool_out(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """torch.nn.MaxPool2d docs: floor or ceil((n + 2p - k) / s) + 1, and in ceil mode a last window
    that would start in the right padding is dropped: if (out - 1) * s >= n + p: out -= 1."""
    out = (math.ceil if ceil_mode else math.floor)((n + 2 * p - k) / s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


@pytest.mark.parametrize("kind, params_cls", [(MaxPool2d, PoolParams), (AvgPool2d, AvgPoolParams)])
def test_pooling_matches_the_pytorch_formula(kind, params_cls):
    checked = dropped = 0
    for n in range(1, 14):
        for k in range(1, 7):
            for s in range(1, 5):
                for p in range(0, k // 2 + 1):
                    if k > n + 2 * p:
                        continue
                    for ceil_mode in (False, True):
                        params = params_cls.model_validate(
                            {"kernel": k, "stride": s, "padding": p, "ceil_mode": ceil_mode})
                        o = _torch_pool_out(n, k, s, p, ceil_mode)
                        assert kind.infer(params, (3, n, n)) == (3, o, o), (n, k, s, p, ceil_mode)
                        checked += 1
                        dropped += ceil_mode and o < math.ceil((n + 2 * p - k) / s) + 1
    assert checked > 1000 and dropped > 0  # the last-window rule was exercised


@pytest.mark.parametrize("body, hw", [
    ("  - maxpool2d: {kernel: 2}\n", 2),  # stride defaults to the kernel
    ("  - maxpool2d: {kernel: 2, ceil_mode: true}\n", 3),
    ("  - maxpool2d: {kernel: 3, stride: 2, padding: 1}\n", 3),
    ("  - maxpool2d: {kernel: 3, stride: 2, padding: 1, ceil_mode: true}\n", 3),
    ("  - avgpool2d: {kernel: 2, stride: 2, padding: 1}\n", 3),
    ("  - avgpool2d: {kernel: 2, stride: 2, padding: 1, ceil_mode: true}\n", 3),  # last window dropped
    ("  - global_avgpool\n", None),
    ("  - adaptive_avgpool2d: {output: [2, 3]}\n", (2, 3)),
])
def test_pooling_on_5x5(tmp_path, body, hw):
    report = check(tmp_path, [3, 5, 5], body)
    expected = (3,) if hw is None else (3, *hw) if isinstance(hw, tuple) else (3, hw, hw)
    assert report.output.shape == expected


def test_pool_window_larger_than_input(tmp_path):
    d, = errors(tmp_path, [1, 4, 4], "  - maxpool2d: {kernel: 5}\n")
    assert where(d) == ("AS202", 5, 25)
    assert "window 5x5 is larger than the padded input 4x4" in d.message


def test_pool_padding_more_than_half_the_kernel(tmp_path):
    d, = errors(tmp_path, [1, 8, 8], "  - maxpool2d: {kernel: 2, padding: 2}\n")
    assert where(d) == ("AS107", 5, 37)  # at the padding, the field to change
    assert d.path == "network[0].maxpool2d.padding" and "at most half the kernel [2, 2]" in d.message


def test_kernel_larger_than_padded_input(tmp_path):
    d, = errors(tmp_path, [1, 4, 4], "  - relu\n  - conv2d: {out: 1, kernel: 7, padding: 1}\n")
    assert where(d) == ("AS202", 6, 30)
    assert d.path == "network[1].conv2d.kernel"
    assert "kernel 7x7 is larger than the padded input 6x6" in d.message
    (note, loc), = d.related
    assert "1x4x4" in note and "relu0" in note and (loc.line, loc.col) == (5, 5)


# --- merges -------------------------------------------------------------------------------------

def test_concat_adds_channels(tmp_path):
    body = """\
      - concat:
          a:
            - conv2d: {out: 2, kernel: 3, padding: 1}
          b:
            - conv2d: {out: 5, kernel: 1}
    """
    report = check(tmp_path, [3, 8, 8], body)
    assert report.output.shape == (7, 8, 8)
    assert report.node("concat0.a.conv2d0").output.shape == (2, 8, 8)


def test_concat_of_different_spatial_sizes(tmp_path):
    body = """\
      - concat:
          a:
            - conv2d: {out: 2, kernel: 3}
          b:
            - conv2d: {out: 2, kernel: 1}
    """
    d, = errors(tmp_path, [3, 8, 8], body)
    assert where(d) == ("AS201", 7, 11)  # the only layer that changed the spatial size: branch a's 3x3 conv
    assert "2x6x6" in d.message and "2x8x8" in d.message
    # the notes point at the layers that produced the two inputs, the last of each branch
    assert [(loc.line, loc.col) for _, loc in d.related] == [(7, 11), (9, 11)]
    assert d.related[0][0] == "input 0 2x6x6 comes from 'concat0.a.conv2d0'"
    assert d.related[1][0] == "input 1 2x8x8 comes from 'concat0.b.conv2d0'"


def test_add_of_mismatched_shapes(tmp_path):
    body = """\
      - add:
          - - conv2d: {out: 2, kernel: 1}
          - - conv2d: {out: 3, kernel: 1}
    """
    d, = errors(tmp_path, [3, 8, 8], body)
    assert where(d) == ("AS201", 6, 11)  # the only layer that changed the channels
    assert d.message == "add 'add0.merge': cannot add 2x8x8 and 3x8x8"


def test_residual_with_projection_shortcut(tmp_path):
    body = """\
      - residual:
          body:
            - conv2d: {out: 8, kernel: 3, padding: 1, stride: 2}
          shortcut:
            - conv2d: {out: 8, kernel: 1, stride: 2}
    """
    report = check(tmp_path, [4, 8, 8], body)
    assert report.output.shape == (8, 4, 4)
    assert report.totals.flops - 2 * report.totals.macs == 2 * 8 * 4 * 4 + 8 * 4 * 4  # bias adds + the add


def test_residual_identity_shortcut_shape_mismatch(tmp_path):
    body = "  - residual:\n      body:\n        - conv2d: {out: 8, kernel: 3, padding: 1}\n"
    d, = errors(tmp_path, [4, 8, 8], body)
    assert where(d) == ("AS201", 7, 11)  # the body's conv that widened it, with a projection suggested
    assert d.hint.startswith("project the shortcut") and "out: 8, kernel: 1, bias: false" in d.hint
    assert "8x8x8" in d.message and "4x8x8" in d.message


# --- dense layers and ranks ---------------------------------------------------------------------

def test_flatten_and_linear(tmp_path):
    report = check(tmp_path, [3, 8, 8], "  - flatten\n  - linear: {out: 10, in: 192}\n")
    assert report.output.shape == (10,)
    assert report.totals.params == 192 * 10 + 10


def test_linear_declared_in_mismatch(tmp_path):
    d, = errors(tmp_path, [3, 8, 8], "  - flatten\n  - linear: {out: 10, in: 100}\n")
    assert where(d) == ("AS201", 6, 27)
    assert d.path == "network[1].linear.in"
    assert "declared in=100 but the input has 192 features" in d.message


def test_linear_without_flatten_hints_at_flatten(tmp_path):
    d, = errors(tmp_path, [3, 8, 8], "  - linear: {out: 10, in: 192}\n")
    assert where(d) == ("AS201", 5, 27)
    assert "add a flatten" in d.message


def test_conv_declared_in_mismatch(tmp_path):
    d, = errors(tmp_path, [3, 8, 8], "  - conv2d: {out: 4, kernel: 3, in: 4}\n")
    assert where(d) == ("AS201", 5, 37)


def test_conv_after_flatten_is_a_rank_error(tmp_path):
    d, = errors(tmp_path, [3, 8, 8], "  - flatten\n  - conv2d: {out: 4, kernel: 1}\n")
    assert where(d) == ("AS203", 6, 5)
    assert d.message == "conv2d expects a (C, H, W) input, got 192 (rank 1)"
    assert "flatten" in d.hint
    (note, loc), = d.related
    assert "flatten0" in note and (loc.line, loc.col) == (5, 5)


def test_batchnorm_on_a_4d_input_is_a_rank_error(tmp_path):
    """A sequence (T, F) is accepted (its features normalised: tests/test_batchnorm_layout.py)."""
    d, = errors(tmp_path, [2, 3, 4, 5], "  - batchnorm\n")
    assert where(d) == ("AS203", 5, 5)


def test_softmax_dim_out_of_range(tmp_path):
    d, = errors(tmp_path, [3, 8, 8], "  - softmax: {dim: 3}\n")
    assert where(d) == ("AS201", 5, 20)


# --- recurrent layers ----------------------------------------------------------------------------

T, F, H = 10, 5, 7


def _recurrent_params(gates: int, layers: int = 1, dirs: int = 1) -> int:
    total = 0
    for layer in range(layers):
        width = F if layer == 0 else dirs * H
        total += dirs * (gates * H * (width + H) + 2 * gates * H)
    return total


@pytest.mark.parametrize("kind, gates", [("rnn", 1), ("gru", 3), ("lstm", 4)])
@pytest.mark.parametrize("output, bidirectional, shape", [
    ("sequence", False, (T, H)),
    ("last", False, (H,)),
    ("state", False, (H,)),
    ("sequence", True, (T, 2 * H)),
    ("last", True, (2 * H,)),
    ("state", True, (2 * H,)),
])
def test_recurrent_shapes_and_params(tmp_path, kind, gates, output, bidirectional, shape):
    body = f"  - {kind}: {{hidden: {H}, output: {output}, bidirectional: {str(bidirectional).lower()}}}\n"
    report = check(tmp_path, [T, F], body)
    assert report.output.shape == shape
    dirs = 2 if bidirectional else 1
    assert report.totals.params == _recurrent_params(gates, dirs=dirs)
    assert report.totals.macs == dirs * T * gates * H * (F + H)


def test_stacked_bidirectional_lstm(tmp_path):
    report = check(tmp_path, [T, F], f"  - lstm: {{hidden: {H}, layers: 2, bidirectional: true}}\n")
    assert report.output.shape == (T, 2 * H)
    assert report.totals.params == _recurrent_params(4, layers=2, dirs=2)


def test_recurrent_needs_a_sequence(tmp_path):
    d, = errors(tmp_path, [3, 8, 8], "  - lstm: {hidden: 4}\n")
    assert where(d) == ("AS203", 5, 5)
    assert "(T, F)" in d.message


def test_linear_on_a_sequence_is_per_step(tmp_path):
    report = check(tmp_path, [T, F], "  - linear: {out: 3}\n")
    assert report.output.shape == (T, 3)
    assert report.totals.macs == T * F * 3


# --- embeddings and dtypes -------------------------------------------------------------------------

def test_embedding_of_token_ids(tmp_path):
    report = check(tmp_path, [12], "  - embedding: {vocab: 100, dim: 8}\n  - lstm: {hidden: 4, output: last}\n",
                   dtype="int64")
    assert report.node("embedding0").output.shape == (12, 8)
    assert report.node("embedding0").output.dtype == "float32"
    assert report.node("embedding0").params == 800
    assert report.output.shape == (4,)


def test_embedding_requires_int64(tmp_path):
    d, = errors(tmp_path, [12], "  - embedding: {vocab: 100, dim: 8}\n")
    assert where(d) == ("AS203", 5, 5)
    assert d.message == "embedding expects int64 input, got float32"
    assert "token ids" in d.hint


def test_float_layer_on_token_ids_hints_at_embedding(tmp_path):
    d, = errors(tmp_path, [12], "  - linear: {out: 4}\n", dtype="int64")
    assert where(d) == ("AS203", 5, 5)
    assert "embedding" in d.hint


def test_embedding_needs_rank_1(tmp_path):
    d, = errors(tmp_path, [12, 3], "  - embedding: {vocab: 100, dim: 8}\n", dtype="int64")
    assert where(d) == ("AS203", 5, 5)


# --- the lecture's cost comparison (d2l 7.4 exercise / GoogLeNet motivation) ------------------

@pytest.mark.parametrize("kernel, padding, weights, macs", [
    (3, 1, 442_368, 346_816_512),
    (5, 2, 1_228_800, 963_379_200),
])
def test_192_to_256_channel_conv_on_28x28(tmp_path, kernel, padding, weights, macs):
    body = f"  - conv2d: {{out: 256, kernel: {kernel}, padding: {padding}, bias: false}}\n"
    report = check(tmp_path, [192, 28, 28], body)
    assert report.output.shape == (256, 28, 28)
    assert report.totals.params == weights == 192 * 256 * kernel * kernel
    assert report.totals.macs == macs == weights * 28 * 28
    assert report.totals.flops == 2 * macs
    assert report.totals.activation_bytes == 256 * 28 * 28 * 4


def test_lenet_matches_d2l(tmp_path):
    root = Path(__file__).resolve().parent.parent
    report = archspec.check(root / "specs" / "lenet.yaml")
    assert report.totals.params == 61_706
    assert [n.output.shape for n in report.nodes if n.kind in ("conv2d", "avgpool2d", "linear")] == [
        (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120,), (84,), (10,)]


def test_input_shape_override(tmp_path):
    path = spec(tmp_path, [1, 28, 28], "  - conv2d: {out: 6, kernel: 5}\n  - flatten\n")
    assert archspec.check(path).output.shape == (6 * 24 * 24,)
    report = archspec.check(path, input_shape=(1, 32, 32))
    assert report.node("conv2d0").output.shape == (6, 28, 28)
    assert report.output.shape == (6 * 28 * 28,)
    with pytest.raises(SpecError) as info:
        archspec.check(path, input_shape=(32, 32))
    assert where(info.value.diagnostics[0]) == ("AS203", 3, 12)


def test_every_registered_kind_has_a_rule():
    assert {"conv2d", "linear", "flatten", "maxpool2d", "avgpool2d", "lstm", "gru", "rnn", "embedding",
            "batchnorm", "relu", "softmax"} <= set(REGISTRY)
