"""The LSTM with peephole connections (Gers & Schmidhuber 2000; Gers, Schraudolph & Schmidhuber
2002 eq. 1-6), which nn.LSTM lacks. Imported only by lowering.

Per layer and direction, with c the cell state:
    i = sigmoid(W_i x + U_i h + p_i * c_prev + b_i)     f = sigmoid(W_f x + U_f h + p_f * c_prev + b_f)
    g = tanh(W_g x + U_g h + b_g)                       c = f * c_prev + i * g
    o = sigmoid(W_o x + U_o h + p_o * c + b_o)          h = o * tanh(c)
exactly the equations of ONNX's `LSTM` operator with its `P` input (opset 7+), which the export
emits: `PeepholeLSTMOp.symbolic` writes the node for the TorchScript exporter.

Parameters keep nn.LSTM's names and layouts (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k},
bias_hh_l{k}, gate order i, f, g, o; `_reverse` for the backward direction), plus
`weight_peephole_l{k}` (3*hidden: p_i, p_f, p_o), so an nn.LSTM's weights load by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _to_onnx_gates(t: torch.Tensor, h: int) -> torch.Tensor:
    """Gate blocks along axis 0 from PyTorch's (i, f, g, o) to ONNX's (i, o, f, c)."""
    return torch.cat((t[:h], t[3 * h:], t[h:2 * h], t[2 * h:3 * h]))


def _to_onnx_peepholes(p: torch.Tensor, h: int) -> torch.Tensor:
    """(p_i, p_f, p_o) -> ONNX's P order (p_i, p_o, p_f)."""
    return torch.cat((p[:h], p[2 * h:], p[h:2 * h]))


def run_layer(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor, b: torch.Tensor, p: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer, ONNX layout and semantics: x (T, N, I); w (D, 4H, I), r (D, 4H, H), b (D, 8H),
    gates (i, o, f, c); p (D, 3H) as (i, o, f). Returns Y (T, D, N, H) and Y_h (D, N, H)."""
    steps, batch = x.shape[0], x.shape[1]
    directions, hidden = r.shape[0], r.shape[2]
    ys, finals = [], []
    for d in range(directions):
        projected = F.linear(x, w[d], b[d, :4 * hidden] + b[d, 4 * hidden:])  # (T, N, 4H)
        p_i, p_o, p_f = p[d].chunk(3)
        h = x.new_zeros(batch, hidden)
        c = x.new_zeros(batch, hidden)
        out = [h] * steps
        for t in (range(steps) if d == 0 else range(steps - 1, -1, -1)):
            i, o, f, g = (projected[t] + F.linear(h, r[d])).chunk(4, dim=-1)
            i, f = torch.sigmoid(i + p_i * c), torch.sigmoid(f + p_f * c)
            c = f * c + i * torch.tanh(g)
            h = torch.sigmoid(o + p_o * c) * torch.tanh(c)
            out[t] = h
        ys.append(torch.stack(out))  # (T, N, H)
        finals.append(h)
    return torch.stack(ys, dim=1), torch.stack(finals)


class PeepholeLSTMOp(torch.autograd.Function):
    """`run_layer` during ONNX export, written out as one ONNX `LSTM` node with its `P` input."""

    @staticmethod
    def forward(ctx, x, w, r, b, p):  # noqa: ANN001 - torch.autograd.Function's signature
        return run_layer(x, w, r, b, p)

    @staticmethod
    def symbolic(g, x, w, r, b, p):  # noqa: ANN001
        directions, hidden = p.type().sizes()[0], p.type().sizes()[1] // 3

        def absent():  # an omitted optional input (sequence_lens, initial_h, initial_c)
            node = g.op("prim::Constant")
            node.setType(torch._C.OptionalType.ofTensor())
            return node

        y, y_h, _ = g.op("LSTM", x, w, r, b, absent(), absent(), absent(), p, hidden_size_i=hidden,
                         direction_s="bidirectional" if directions == 2 else "forward", outputs=3)
        return y, y_h


class PeepholeLSTM(nn.Module):
    """A stack of peephole LSTM layers, batch-first, with the output the spec asked for (every
    step, the last step, or the top layer's final hidden state), as archspec.nn.LSTM."""

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1, bias: bool = True,
                 dropout: float = 0.0, bidirectional: bool = False, output: str = "sequence"):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.dropout, self.bidirectional, self.output = bias, dropout, bidirectional, output
        directions = 2 if bidirectional else 1
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's init: U(-1/sqrt(H), 1/sqrt(H)) for every tensor
        for layer in range(num_layers):
            width = input_size if layer == 0 else directions * hidden_size
            for suffix in ("", "_reverse")[:directions]:
                shapes = {"weight_ih": (4 * hidden_size, width), "weight_hh": (4 * hidden_size, hidden_size)}
                if bias:
                    shapes |= {"bias_ih": (4 * hidden_size,), "bias_hh": (4 * hidden_size,)}
                shapes["weight_peephole"] = (3 * hidden_size,)
                for name, shape in shapes.items():
                    self.register_parameter(f"{name}_l{layer}{suffix}",
                                            nn.Parameter(torch.empty(shape).uniform_(-bound, bound)))

    def _onnx_layout(self, layer: int) -> tuple[torch.Tensor, ...]:
        h = self.hidden_size
        ws, rs, bs, ps = [], [], [], []
        for suffix in ("", "_reverse")[:2 if self.bidirectional else 1]:
            get = lambda name: getattr(self, f"{name}_l{layer}{suffix}")  # noqa: E731
            ws.append(_to_onnx_gates(get("weight_ih"), h))
            rs.append(_to_onnx_gates(get("weight_hh"), h))
            if self.bias:
                bs.append(torch.cat((_to_onnx_gates(get("bias_ih"), h), _to_onnx_gates(get("bias_hh"), h))))
            else:
                bs.append(ws[-1].new_zeros(8 * h))
            ps.append(_to_onnx_peepholes(get("weight_peephole"), h))
        return torch.stack(ws), torch.stack(rs), torch.stack(bs), torch.stack(ps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, F)
        run = PeepholeLSTMOp.apply if torch.onnx.is_in_onnx_export() else run_layer
        seq = x.transpose(0, 1)  # (T, N, F), ONNX's default layout
        for layer in range(self.num_layers):
            if layer and self.dropout and self.training:
                seq = F.dropout(seq, self.dropout, True)
            y, h_n = run(seq, *self._onnx_layout(layer))  # (T, D, N, H), (D, N, H)
            seq = y.transpose(1, 2).flatten(2) if self.bidirectional else y.squeeze(1)  # (T, N, D*H)
        if self.output == "sequence":
            return seq.transpose(0, 1)  # (N, T, D*H)
        if self.output == "last":
            return seq[-1] if self.bidirectional else h_n[0]  # (N, D*H)
        return torch.cat(tuple(h_n), dim=-1)  # the top layer's final states, both directions: (N, D*H)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"bidirectional={self.bidirectional}, peephole=True, output={self.output}")
