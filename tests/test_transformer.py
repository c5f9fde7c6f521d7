"""Transformer pieces and the peephole LSTM against independent oracles: torch.nn.MultiheadAttention,
nn.GELU's formula, torchvision's stochastic depth rule, a hand-written peephole cell (Gers &
Schmidhuber 2000) and nn.LSTM; ONNX exports verified by onnxruntime, the LSTM's `P` input present."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archspec
from archspec.errors import SpecError
from archspec.exporter import expected_tensors, export_model, initial_state

SPECS = Path(__file__).resolve().parent.parent / "specs"


def spec(tmp_path: Path, network: str, inp: str = "{x: [time=7, 16]}") -> archspec.Report:
    path = tmp_path / "spec.yaml"
    path.write_text(f"archspec: 1\nname: t\ninput: {inp}\nnetwork:\n" + textwrap.indent(textwrap.dedent(network), "  "))
    return archspec.check(path)


# --- attention ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bias, fused", [(True, False), (False, False), (True, True)])
def test_attention_equals_nn_multiheadattention(tmp_path: Path, bias: bool, fused: bool) -> None:
    report = spec(tmp_path, f"- {{attention: {{heads: 4, dim: 16, bias: {str(bias).lower()}, "
                            f"fused: {str(fused).lower()}}}, name: attn}}\n")
    d, t = 16, 7
    assert report.totals.params == 4 * d * d + (4 * d if bias else 0)
    assert report.totals.macs == 4 * t * d * d + 2 * t * t * d
    ours = archspec.build(report, seed=0).eval()
    oracle = nn.MultiheadAttention(d, 4, bias=bias, batch_first=True).eval()
    state = {k.removeprefix("attn."): v for k, v in ours.state_dict().items()}
    assert list(state) == list(oracle.state_dict())  # same names, same order: weights load both ways
    oracle.load_state_dict(state)
    x = torch.randn(3, t, d)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), oracle(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-6)
    with torch.enable_grad():  # the slow path of nn.MultiheadAttention too
        torch.testing.assert_close(ours(x), oracle(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-6)


def test_attention_macs_are_flopcountermode_halved(tmp_path: Path) -> None:
    report = spec(tmp_path, "- {attention: {heads: 2}, name: attn}\n- {linear: {out: 3}}\n", "{x: [9, 8]}")
    module = archspec.build(report, device="meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.empty(1, 9, 8, device="meta"))
    assert counter.get_total_flops() == 2 * report.totals.macs


@pytest.mark.parametrize("network, message", [
    ("- {attention: {heads: 3}}\n", "heads=3 does not divide the token width 16"),
    ("- {attention: {heads: 2, dim: 32}}\n", "declared dim=32 but the tokens have 16 features"),
    ("- {attention: {heads: 0}}\n", "greater than 0"),
    ("- {attention: {heads: 2, dropout: 1.5}}\n", "less than 1"),
])
def test_attention_mistakes_are_diagnosed(tmp_path: Path, network: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        spec(tmp_path, network)
    assert len(info.value.diagnostics) == 1
    text = str(info.value)
    assert message in text and "spec.yaml:5:" in text


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("then", ["", "- {gru: {hidden: 4}}\n"])  # attention's output read by an ONNX GRU
def test_attention_exports_verified(tmp_path: Path, fused: bool, then: str) -> None:
    report = spec(tmp_path, f"- {{attention: {{heads: 4, fused: {str(fused).lower()}}}, name: attn}}\n"
                            "- gelu: {approximate: tanh}\n" + then +
                            "- {linear: {out: 3}, name: fc}\n")
    result = export_model(report, tmp_path / "m.onnx")
    assert result.compared and len(result.checks) == 2 and result.max_rel_error <= result.tolerance
    assert dict(result.dynamic_axes) == {"batch": 0, "time": 1}


# --- gelu (tanh) and stochastic depth ------------------------------------------------------------

def test_gelu_tanh_is_hendrycks_gimpel_formula(tmp_path: Path) -> None:
    report = spec(tmp_path, "- gelu: {approximate: tanh}\n")
    x = torch.linspace(-6, 6, 7 * 16 * 2).reshape(2, 7, 16)
    expected = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(archspec.build(report)(x), expected)
    exact = archspec.build(spec(tmp_path, "- gelu\n"))(x)
    torch.testing.assert_close(exact, 0.5 * x * (1 + torch.erf(x / math.sqrt(2))))
    assert not torch.equal(exact, expected)


def test_exact_gelu_is_one_onnxruntime_kernel(tmp_path: Path) -> None:
    """At opset 17 the erf form is five nodes; onnxruntime fuses them, with the linear's bias, into one
    BiasGelu as it does for opset 20's Gelu. A form it does not match costs ViT/ConvNeXt 2-14% latency."""
    import onnxruntime as ort

    report = spec(tmp_path, "- {linear: {out: 32}}\n- gelu\n- {linear: {out: 3}}\n")
    path = export_model(report, tmp_path / "m.onnx", opset=17).path
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "Erf" not in ops and ops.count("BiasGelu") == 1, ops


def test_parameter_is_a_free_tensor_broadcast_over_the_batch(tmp_path: Path) -> None:
    report = spec(tmp_path, "- residual: {body: [{parameter: {shape: [7, 16], init: normal, std: 0.5}, name: p}]}\n")
    assert report.totals.params == 7 * 16 and report.totals.macs == 0
    module = archspec.build(report, seed=0).eval()
    weight = dict(module.named_parameters())["residual0.p.weight"]
    assert tuple(weight.shape) == (1, 7, 16)  # torchvision's layout of ViT's pos_embedding
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(module(x), x + weight)
    with pytest.raises(SpecError, match="cannot add"):
        spec(tmp_path, "- residual: {body: [{parameter: {shape: [6, 16]}}]}\n")
    with pytest.raises(SpecError, match="expected a shape as a list of positive integers"):
        spec(tmp_path, "- parameter: {shape: []}\n")


def test_parameter_is_an_operand_by_name(tmp_path: Path) -> None:
    """On the graph IR a free tensor is a named value: read by `add` with `from:` (ViT's eq. 1)."""
    report = spec(tmp_path, "- {linear: {out: 16}, name: tokens}\n"
                            "- {parameter: {shape: [7, 16], init: normal}, name: pos}\n"
                            "- {add, from: [tokens, pos]}\n"
                            "- {linear: {out: 3}, name: head}\n", "{x: [7, 16]}")
    assert report.totals.params == (16 * 16 + 16) + 7 * 16 + (16 * 3 + 3)
    module = archspec.build(report, seed=0).eval()
    state = module.state_dict()
    assert list(state) == ["tokens.weight", "tokens.bias", "pos.weight", "head.weight", "head.bias"]
    x = torch.randn(2, 7, 16)
    tokens = x @ state["tokens.weight"].T + state["tokens.bias"]
    expected = (tokens + state["pos.weight"]) @ state["head.weight"].T + state["head.bias"]
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected)
    result = export_model(report, tmp_path / "m.onnx")
    assert result.compared and result.max_rel_error <= result.tolerance


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth(tmp_path: Path, mode: str) -> None:
    report = spec(tmp_path, f"- stochastic_depth: {{p: 0.5, mode: {mode}}}\n", "{x: [3, 4, 4]}")
    assert (report.totals.params, report.totals.macs, report.totals.flops) == (0, 0, 0)
    module = archspec.build(report)
    x = torch.rand(64, 3, 4, 4) + 1
    assert torch.equal(module.eval()(x), x)
    torch.manual_seed(0)
    y = module.train()(x)
    ratio = (y / x).flatten(1)
    # torchvision.ops.stochastic_depth: every sample is either dropped (0) or scaled by 1/(1-p) as a whole
    assert set(ratio.unique().tolist()) <= {0.0, 2.0}
    assert bool((ratio == ratio[:, :1]).all())
    if mode == "row":
        assert 0 < int((ratio[:, 0] == 0).sum()) < 64
    else:
        assert len(set(ratio[:, 0].tolist())) == 1


# --- declared tensors and their seeded numpy initial values --------------------------------------

MIXED = """\
- {linear: {out: 16}, name: embed}
- {class_token: {init: trunc_normal}, name: cls}
- residual: {body: [{parameter: {shape: [8, 16], init: normal}, name: pos}]}
- {attention: {heads: 4}, name: attn}
- {attention: {heads: 2, bias: false}, name: attn_nobias}
- {layer_scale: {value: 0.25}, name: ls}
- {lstm: {hidden: 5, layers: 2, bidirectional: true, peephole: true}, name: lstm}
- {lstm: {hidden: 3, bias: false, peephole: true, output: last}, name: lstm_nobias}
"""


def test_declared_tensors_are_the_state_dict_in_order(tmp_path: Path) -> None:
    """What the kinds declare (and initial_state draws) is what lowering builds: names, order, shapes."""
    report = spec(tmp_path, MIXED, "{x: [7, 16]}")
    module = archspec.build(report, device="meta")
    state = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]
    assert [(k, tuple(s), d) for k, (s, d) in expected_tensors(report).items()] == state
    assert [(k, v.shape, str(v.dtype)) for k, v in initial_state(report, seed=3).items()] == state
    assert sum(v.size for v in initial_state(report).values()) == report.totals.params


def ks_distance(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size).max())


@pytest.mark.parametrize("init", ["zeros", "normal", "trunc_normal"])
def test_free_tensor_initial_values_follow_torch_init(tmp_path: Path, init: str) -> None:
    """The numpy draws of parameter/class_token equal in distribution the torch module's own init
    (nn.init.normal_ / trunc_normal_(a=-2std, b=2std)): KS distance of 200,000 values each."""
    report = spec(tmp_path, f"- {{parameter: {{shape: [400, 500], init: {init}, std: 0.3}}, name: p}}\n", "{x: [3]}")
    ours = initial_state(report, seed=1)["p.weight"]
    torch.manual_seed(1)
    theirs = archspec.build(report).state_dict()["p.weight"].numpy()  # torch's own initialisation, no seed
    assert ours.shape == theirs.shape == (1, 400, 500) and ours.dtype == np.float32
    if init == "zeros":
        assert not ours.any() and not theirs.any()
        return
    assert ks_distance(ours, theirs) < 0.01  # 5.2e-3 is the 1% critical value at n = m = 2e5
    if init == "trunc_normal":
        assert np.abs(ours).max() <= 2 * 0.3 and np.abs(ours).max() > 1.99 * 0.3
    token = initial_state(spec(tmp_path, f"- {{class_token: {{init: {init}, std: 0.3}}, name: c}}\n"), 0)["c.token"]
    assert token.shape == (1, 1, 16) and token.any()


def test_attention_initial_values_follow_multiheadattention(tmp_path: Path) -> None:
    """in_proj xavier-uniform, out_proj nn.Linear's default, biases zero: KS against the torch module's own."""
    d = 512
    report = spec(tmp_path, "- {attention: {heads: 8}, name: a}\n", f"{{x: [4, {d}]}}")
    ours = initial_state(report, seed=2)
    torch.manual_seed(2)
    theirs = {k: v.numpy() for k, v in archspec.build(report).state_dict().items()}
    assert list(ours) == list(theirs)
    for name in ("a.in_proj_weight", "a.out_proj.weight"):
        assert ks_distance(ours[name], theirs[name]) < 0.01, name
    assert np.abs(ours["a.in_proj_weight"]).max() <= np.sqrt(6 / (4 * d))
    assert np.abs(ours["a.out_proj.weight"]).max() <= 1 / np.sqrt(d)
    assert not ours["a.in_proj_bias"].any() and not ours["a.out_proj.bias"].any()


# --- peephole LSTM -------------------------------------------------------------------------------

class HandWrittenPeepholeLSTM(nn.Module):
    """Gers, Schraudolph & Schmidhuber 2002, eq. 1-6, one direction of one layer per cell,
    written independently of archspec (own parameter names, gate-by-gate weights)."""

    def __init__(self, inputs: int, hidden: int, layers: int, directions: int):
        super().__init__()
        self.hidden, self.directions = hidden, directions
        self.cells = nn.ModuleList()
        for layer in range(layers):
            for _ in range(directions):
                width = inputs if layer == 0 else directions * hidden
                cell = nn.Module()
                for gate in "ifco":  # input, forget, cell input, output
                    setattr(cell, f"W{gate}", nn.Linear(width, hidden))
                    setattr(cell, f"U{gate}", nn.Linear(hidden, hidden))
                for gate in "ifo":
                    setattr(cell, f"p{gate}", nn.Parameter(torch.randn(hidden)))
                self.cells.append(cell)

    def step(self, cell: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        i = torch.sigmoid(cell.Wi(x) + cell.Ui(h) + cell.pi * c)
        f = torch.sigmoid(cell.Wf(x) + cell.Uf(h) + cell.pf * c)
        c = f * c + i * torch.tanh(cell.Wc(x) + cell.Uc(h))
        o = torch.sigmoid(cell.Wo(x) + cell.Uo(h) + cell.po * c)  # the output gate sees the new cell state
        return o * torch.tanh(c), c

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # (N, T, F)
        n, steps = x.shape[:2]
        finals = []
        for k in range(0, len(self.cells), self.directions):
            outs = []
            for d in range(self.directions):
                h = c = x.new_zeros(n, self.hidden)
                seq = [None] * steps
                for t in (range(steps) if d == 0 else reversed(range(steps))):
                    h, c = self.step(self.cells[k + d], x[:, t], h, c)
                    seq[t] = h
                outs.append(torch.stack(seq, 1))
                finals.append(h)
            x = torch.cat(outs, -1)
        return x, finals


def load_hand_written(ours: nn.Module, oracle: HandWrittenPeepholeLSTM, layers: int, directions: int) -> None:
    """Our nn.LSTM-layout tensors (gate blocks i, f, g, o; peepholes i, f, o) into the oracle's cells."""
    state = ours.state_dict()
    h = oracle.hidden
    for layer in range(layers):
        for d in range(directions):
            cell = oracle.cells[layer * directions + d]
            suffix = f"l{layer}" + ("_reverse" if d else "")
            for j, gate in enumerate("ifco"):
                rows = slice(j * h, (j + 1) * h)
                getattr(cell, f"W{gate}").weight.data = state[f"weight_ih_{suffix}"][rows].clone()
                getattr(cell, f"W{gate}").bias.data = state[f"bias_ih_{suffix}"][rows].clone()
                getattr(cell, f"U{gate}").weight.data = state[f"weight_hh_{suffix}"][rows].clone()
                getattr(cell, f"U{gate}").bias.data = state[f"bias_hh_{suffix}"][rows].clone()
            for j, gate in enumerate("ifo"):
                getattr(cell, f"p{gate}").data = state[f"weight_peephole_{suffix}"][j * h:(j + 1) * h].clone()


@pytest.mark.parametrize("layers, bidirectional, output", [
    (1, False, "sequence"), (2, False, "last"), (2, True, "sequence"), (2, True, "state"), (1, True, "last")])
def test_peephole_lstm_equals_hand_written_cell(tmp_path: Path, layers: int, bidirectional: bool, output: str) -> None:
    hidden, features = 5, 3
    report = spec(tmp_path, f"- {{lstm: {{hidden: {hidden}, layers: {layers}, peephole: true, "
                            f"bidirectional: {str(bidirectional).lower()}, output: {output}}}, name: lstm}}\n",
                  "{x: [time=6, 3]}")
    directions = 2 if bidirectional else 1
    plain_path = tmp_path / "plain.yaml"
    plain_path.write_text((tmp_path / "spec.yaml").read_text().replace("peephole: true", "peephole: false"))
    plain = archspec.check(plain_path)
    assert report.totals.params == plain.totals.params + 3 * hidden * layers * directions
    assert report.totals.macs == plain.totals.macs
    ours = archspec.build(report, seed=0).eval()
    for name, p in ours.named_parameters():  # peepholes large enough to matter
        if "peephole" in name:
            p.data.normal_(0, 1)
    oracle = HandWrittenPeepholeLSTM(features, hidden, layers, directions)
    load_hand_written(ours.lstm, oracle, layers, directions)
    x = torch.randn(4, 6, features)
    with torch.no_grad():
        seq, finals = oracle(x)
        expected = {"sequence": seq, "last": seq[:, -1],
                    "state": torch.cat(finals[-directions:], -1)}[output]
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-6)
    ours(x).sum().backward()  # trainable: gradients reach the peepholes
    assert ours.lstm.weight_peephole_l0.grad is not None and ours.lstm.weight_peephole_l0.grad.abs().sum() > 0


def test_peephole_lstm_with_zero_peepholes_is_nn_lstm(tmp_path: Path) -> None:
    report = spec(tmp_path, "- {lstm: {hidden: 4, layers: 2, bidirectional: true, peephole: true}, name: lstm}\n",
                  "{x: [time=5, 3]}")
    ours = archspec.build(report, seed=0).eval()
    oracle = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).eval()
    state = {k.removeprefix("lstm."): v for k, v in ours.state_dict().items() if "peephole" not in k}
    assert list(state) == list(oracle.state_dict())  # nn.LSTM's names and order, peepholes added
    oracle.load_state_dict(state)
    for name, p in ours.named_parameters():
        if "peephole" in name:
            p.data.zero_()
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), oracle(x)[0], rtol=1e-5, atol=1e-6)


def test_peephole_lstm_exports_to_onnx_lstm_with_p(tmp_path: Path) -> None:
    report = spec(tmp_path, "- {lstm: {hidden: 6, layers: 2, bidirectional: true, peephole: true, output: last}, "
                            "name: lstm}\n- {linear: {out: 3}, name: fc}\n", "{x: [time=9, 4]}")
    state = archspec.build(report, seed=0).state_dict()
    for k in state:
        if "peephole" in k:
            state[k] = torch.randn(state[k].shape)
    result = export_model(report, tmp_path / "m.onnx", weights=state)
    assert result.compared and result.max_rel_error <= result.tolerance
    assert dict(result.dynamic_axes) == {"batch": 0, "time": 1}
    graph = onnx.load(str(result.path)).graph
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    assert len(lstms) == 2
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for node in lstms:
        assert len(node.input) == 8 and node.input[7] in consts  # P, after the absent lens and states
        assert consts[node.input[7]].shape == (2, 18) and abs(consts[node.input[7]]).sum() > 0
        assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["direction"] == b"bidirectional"


def test_lstm_peephole_classifier_spec() -> None:
    report = archspec.check(SPECS / "lstm_peephole_classifier.yaml")
    classifier = archspec.check(SPECS / "lstm_classifier.yaml")
    assert report.totals.params == classifier.totals.params + 2 * 3 * 256 == 925_706
    assert report.totals.macs == classifier.totals.macs == 45_877_760
    module = archspec.build(report, seed=0).eval()
    assert sum(p.numel() for p in module.parameters()) == 925_706
    assert tuple(module(torch.randn(2, 11, 128)).shape) == (2, 10)


# --- convnext_tiny and vit_b_16 against hand-written torchvision-layout references --------------
# tests/torchvision_like.py follows torchvision 0.29's convnext.py and vision_transformer.py (their
# module names, parameter shapes and order, forward computations), written out because CI cannot
# import torchvision; tools/oracle_transformers.py runs the same comparison against torchvision.

import sys  # noqa: E402

from torchvision_like import ConvNeXtTiny, ViTB16  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from oracle_transformers import convnext_key, vit_key  # noqa: E402


def randomized(model: nn.Module) -> nn.Module:
    """Every tensor away from its constant start (layer scale 1e-6, zero token, LayerNorm 1/0)."""
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "layer_scale" in name:
            p.data = torch.rand(p.shape, generator=g) * 0.5 + 0.25
        elif p.dim() == 1 or float(p.detach().std()) == 0.0:
            p.data = p.data + torch.randn(p.shape, generator=g) * 0.1
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name, reference, translate", [("convnext_tiny", ConvNeXtTiny, convnext_key),
                                                        ("vit_b_16", ViTB16, vit_key)])
def test_zoo_transformers_equal_torchvision_layout_references(name: str, reference, translate) -> None:
    report = archspec.check(SPECS / f"{name}.yaml")
    ref = randomized(reference())
    ours = archspec.build(report, seed=0).eval()
    assert sum(p.numel() for p in ref.parameters()) == report.totals.params
    state = {translate(k): v for k, v in ref.state_dict().items()}
    ours.load_state_dict(state, strict=True)  # every tensor mapped once, shapes equal
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x)
        assert float((expected[0] - expected[1]).abs().max()) > 1e-3  # the output depends on the input
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5)


def test_zoo_transformer_macs_against_flopcountermode() -> None:
    """ConvNeXt: MACs are FlopCounterMode/2 exactly. ViT: FlopCounterMode/2 of the module (its attention
    written as matmuls) equals the checker's MACs, which count the attention's two matmuls."""
    for name in ("convnext_tiny", "vit_b_16"):
        report = archspec.check(SPECS / f"{name}.yaml")
        meta = archspec.build(report, device="meta").eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            meta(torch.empty(1, 3, 224, 224, device="meta"))
        assert counter.get_total_flops() == 2 * report.totals.macs, name
    vit = archspec.check(SPECS / "vit_b_16.yaml")
    tokens, dim, layers = 197, 768, 12
    attention_matmuls = layers * 2 * tokens * tokens * dim  # Q K^T and A V
    assert vit.totals.macs - attention_matmuls == 16_848_500_736  # torchvision's FlopCounterMode/2 (SDPA uncounted)
