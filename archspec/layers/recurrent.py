"""Recurrent stacks (d2l ch. 9-10): rnn, gru, lstm; multi-layer, bidirectional, batch-first.

Per layer, direction and time step the gate matmuls cost g*H*(I+H) MACs, g = 1/3/4 for
rnn/gru/lstm (d2l §10.1-10.2); PyTorch keeps two bias vectors (b_ih, b_hh) per gate set.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import Field

from .base import Cost, LayerKind, LayerParams, PositiveInt, Probability, Shape


class RecurrentParams(LayerParams):
    hidden: PositiveInt
    layers: PositiveInt = 1
    bidirectional: bool = False
    dropout: Probability = 0.0  # between stacked layers, as in PyTorch
    bias: bool = True
    output: Literal["sequence", "last", "state"] = Field(
        "sequence", description="sequence: (T, D*H) every step; last: (D*H) the last step's output; "
        "state: (D*H) the final hidden state of the top layer, both directions")


class RNNParams(RecurrentParams):
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class LSTMParams(RecurrentParams):
    peephole: bool = Field(False, description="peephole connections from the cell state to the input, forget "
                           "and output gates (Gers & Schmidhuber 2000): 3*hidden more parameters per layer "
                           "and direction")


class _Recurrent(LayerKind):
    gates: ClassVar[int]
    gate_elementwise: ClassVar[int]  # element-wise ops per hidden unit per step, after the matmuls
    input_rank = (2,)
    input_desc = "(T, F)"
    example = {"hidden": 6, "layers": 2, "output": "last"}
    # torch 2.13's dynamo exporter bakes the example sequence length into LSTM/GRU (and fixes it
    # for RNN); the TorchScript exporter keeps it dynamic.
    exporter = "torchscript"
    shape_rule = "(T, F) -> sequence: (T, D*hidden); last, state: (D*hidden), D = 2 if bidirectional"
    macs_rule = "sum over layers of D * T * g * hidden * (I_layer + hidden), g = 1/3/4 for rnn/gru/lstm"

    @classmethod
    def brief(cls, p: RecurrentParams) -> str:
        return (f"{'bi' if p.bidirectional else ''}{cls.name} {p.hidden}" + (f" x{p.layers}" if p.layers > 1 else "")
                + f" ({p.output})")

    @classmethod
    def infer(cls, p: RecurrentParams, x: Shape) -> Shape:
        width = p.hidden * (2 if p.bidirectional else 1)
        return (x[0], width) if p.output == "sequence" else (width,)

    @classmethod
    def cost(cls, p: RecurrentParams, x: Shape, y: Shape) -> Cost:
        steps, features = x
        dirs = 2 if p.bidirectional else 1
        g, h = cls.gates, p.hidden
        biases = p.layers * dirs * 2 * g * h if p.bias else 0  # b_ih and b_hh
        # W_ih: gH x I, W_hh: gH x H; the first layer reads the features, the others D*H (closed form:
        # a hostile `layers: 10**9` costs nothing to count)
        weights = dirs * (g * h * (features + h) + (p.layers - 1) * g * h * (dirs * h + h))
        params, macs = weights + biases, steps * weights
        per_step_extra = (2 * g * h if p.bias else 0) + cls.gate_elementwise * h
        flops = 2 * macs + p.layers * dirs * steps * per_step_extra
        return Cost(params=params, macs=macs, flops=flops, biases=biases)

    @classmethod
    def lower(cls, p: RecurrentParams, x: Shape, y: Shape):
        from ..nn import RECURRENT

        extra = {"nonlinearity": p.nonlinearity} if isinstance(p, RNNParams) else {}
        return RECURRENT[cls.name](x[1], p.hidden, num_layers=p.layers, bias=p.bias, batch_first=True,
                                   dropout=p.dropout, bidirectional=p.bidirectional, output=p.output, **extra)


class RNN(_Recurrent):
    name = "rnn"
    Params = RNNParams
    doc = "Elman RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."
    flops_rule = "2*MACs + 2H bias adds + H activations per layer, direction and step"
    gates, gate_elementwise = 1, 1


class GRU(_Recurrent):
    name = "gru"
    Params = RecurrentParams
    doc = "Gated recurrent unit (Cho et al. 2014), PyTorch's formulation."
    flops_rule = "2*MACs + 6H bias adds + 8H gate element-wise ops per layer, direction and step"
    gates, gate_elementwise = 3, 8


class LSTM(_Recurrent):
    name = "lstm"
    Params = LSTMParams
    doc = ("Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch's formulation; with `peephole: true` "
           "the gates also read the cell state (Gers & Schmidhuber 2000), exported as ONNX LSTM's `P` input.")
    flops_rule = ("2*MACs + 8H bias adds + 9H gate element-wise ops per layer, direction and step; "
                  "peepholes add 6H (3 products, 3 adds)")
    macs_rule = _Recurrent.macs_rule + "; the peephole products are element-wise, not MACs (FlopCounterMode agrees)"
    gates, gate_elementwise = 4, 9

    @classmethod
    def brief(cls, p: LSTMParams) -> str:
        return super().brief(p) + (" peephole" if p.peephole else "")

    @classmethod
    def cost(cls, p: LSTMParams, x: Shape, y: Shape) -> Cost:
        plain = super().cost(p, x, y)
        if not p.peephole:
            return plain
        cells = p.layers * (2 if p.bidirectional else 1) * p.hidden  # Gers et al. 2002 eq. 1-6: p_i, p_f, p_o
        return replace(plain, params=plain.params + 3 * cells, flops=plain.flops + 6 * cells * x[0])

    @classmethod
    def lower(cls, p: LSTMParams, x: Shape, y: Shape):
        if not p.peephole:
            return super().lower(p, x, y)
        from ..nn_peephole import PeepholeLSTM

        return PeepholeLSTM(x[1], p.hidden, num_layers=p.layers, bias=p.bias, dropout=p.dropout,
                            bidirectional=p.bidirectional, output=p.output)
