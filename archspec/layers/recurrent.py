"""Recurrent stacks (d2l ch. 9-10): rnn, gru, lstm; multi-layer, bidirectional, batch-first.

Per layer, direction and time step the gate matmuls cost g*H*(I+H) MACs, g = 1/3/4 for
rnn/gru/lstm (d2l §10.1-10.2); PyTorch keeps two bias vectors (b_ih, b_hh) per gate set.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

from pydantic import Field

from .base import Cost, LayerKind, LayerParams, PositiveInt, Probability, Shape, TensorType, uniform


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
    input_layouts = ("TF",)
    onnx_op: ClassVar[str]  # the ONNX operator of `emit` (GRU, LSTM; the RNN emits a Scan)
    gate_order: ClassVar[tuple[int, ...]]  # PyTorch's gate blocks in ONNX's order
    example = {"hidden": 6, "layers": 2, "output": "last"}
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

    @classmethod
    def tensors(cls, p: RecurrentParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        """nn.RNNBase's names: weight_ih_l{k}[_reverse] (gH, I_k), weight_hh (gH, H), bias_ih/bias_hh (gH)."""
        dirs, gh, out = 2 if p.bidirectional else 1, cls.gates * p.hidden, {}
        for k in range(p.layers):
            for d in range(dirs):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                out[f"weight_ih{sfx}"] = ((gh, x[1] if k == 0 else dirs * p.hidden), "float32")
                out[f"weight_hh{sfx}"] = ((gh, p.hidden), "float32")
                if p.bias:
                    out[f"bias_ih{sfx}"] = out[f"bias_hh{sfx}"] = ((gh,), "float32")
                out.update(cls.extra_tensors(p, sfx))
        return out

    @classmethod
    def extra_tensors(cls, p: RecurrentParams, sfx: str) -> dict[str, tuple[Shape, str]]:
        """Tensors a variant adds per layer and direction, after the biases (the LSTM's peepholes)."""
        return {}

    @classmethod
    def extra_inputs(cls, p: RecurrentParams, g, k: int, sfx: list[str]) -> list[str]:
        """Layer k's ONNX inputs after initial_c (the LSTM's P), its directions' suffixes `sfx`."""
        return []

    @classmethod
    def initial(cls, p: RecurrentParams, x: Shape, y: Shape, scheme: str, rng):
        # every tensor U(+-1/sqrt(hidden)) (torch.nn.RNN/GRU/LSTM docs); no scheme changes it
        return {k: uniform(rng, shape, p.hidden ** -0.5) for k, (shape, _) in cls.tensors(p, x, y).items()}

    @classmethod
    def emit(cls, p: RecurrentParams, x: TensorType, y: TensorType, g) -> str:
        """One ONNX GRU/LSTM node per layer over (T, N, F), the initial states left out (zero by
        the operator's definition). PyTorch's gate blocks are reordered to ONNX's (LSTM iofc, GRU zrh)
        and GRU computes the reset gate after the recurrent matmul (linear_before_reset=1)."""
        import numpy as np

        dirs, h = (2 if p.bidirectional else 1), p.hidden

        def gates(a):
            return np.concatenate([a[i * h:(i + 1) * h] for i in cls.gate_order])

        i64 = lambda v: np.array(v, np.int64)  # noqa: E731
        v = g.op("Transpose", [g.x], perm=[1, 0, 2])  # (N, T, F) -> (T, N, F)
        seq = state = None
        for k in range(p.layers):
            sfx = [f"_l{k}" + ("_reverse" if d else "") for d in range(dirs)]
            w = g.const(f"W_l{k}", np.stack([gates(g.array("weight_ih" + s)) for s in sfx]))
            r = g.const(f"R_l{k}", np.stack([gates(g.array("weight_hh" + s)) for s in sfx]))
            inputs = [v, w, r]
            if p.bias:
                inputs.append(g.const(f"B_l{k}", np.stack([
                    np.concatenate([gates(g.array("bias_ih" + s)), gates(g.array("bias_hh" + s))]) for s in sfx])))
            extra = cls.extra_inputs(p, g, k, sfx)
            if extra:  # after B, sequence_lens, initial_h, initial_c: "" leaves each out (zeros, full length)
                inputs += [""] * (7 - len(inputs)) + extra
            attrs = dict(hidden_size=h, direction="bidirectional" if dirs == 2 else "forward")
            if cls.name == "gru":
                attrs["linear_before_reset"] = 1
            top = k == p.layers - 1
            need_seq = not top or p.output == "sequence" or (p.output == "last" and dirs == 2)
            seq, state = g.op(cls.onnx_op, inputs, outputs=("Y" if need_seq else "", "Y_h"), **attrs)
            if not top:  # (T, D, N, H) -> (T, N, D*H)
                v = (g.op("Squeeze", [seq, g.const("axis1", i64([1]))]) if dirs == 1 else
                     g.op("Reshape", [g.op("Transpose", [seq], perm=[0, 2, 1, 3]), g.const("keep2", i64([0, 0, -1]))]))
        if p.output == "sequence":  # (T, D, N, H) -> (N, T, D*H); for D=1 too, not Squeeze + Transpose,
            # which crashes onnxruntime 1.32's session creation in float16 when a MatMul follows
            return g.op("Reshape", [g.op("Transpose", [seq], perm=[2, 0, 1, 3]), g.const("keep2", i64([0, 0, -1]))])
        if dirs == 1:  # the last step's output is the final state: Y_h (1, N, H) -> (N, H)
            return g.op("Squeeze", [state, g.const("axis0", i64([0]))])
        if p.output == "last":  # both directions' outputs at the last step: Y[-1] (2, N, H)
            state = g.op("Gather", [seq, g.const("last", i64(-1))], axis=0)
        return g.op("Reshape", [g.op("Transpose", [state], perm=[1, 0, 2]), g.const("keep1", i64([0, -1]))])


class RNN(_Recurrent):
    name = "rnn"
    Params = RNNParams
    doc = "Elman RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."
    flops_rule = "2*MACs + 2H bias adds + H activations per layer, direction and step"
    gates, gate_elementwise = 1, 1

    @classmethod
    def emit(cls, p: RNNParams, x: TensorType, y: TensorType, g) -> str:
        """Per layer, the input projection of every time step as one MatMul (+ b_ih + b_hh), then
        one ONNX Scan over time, both directions in the same one (the backward one reversed),
        whose body is h_t = act(xw_t + h_{t-1} W_hh^T): MatMul, Add, Tanh or Relu. Not ONNX's RNN
        operator: onnxruntime 1.32's RNN kernel takes 8x as long at batch 8 as at batch 1 (3.9 vs
        0.49 ms on rnn_classifier, 2 threads, slower than eager PyTorch's 2.6 ms), while this form took
        1.0-1.3 ms at batch 8 and was also faster at batch 1 (0.35 vs 0.56 ms) than the RNN operator
        (tools/bench_rnn_forms.py, docs/benchmarks.md).
        The initial states are zeros of (N, H), N read at run time, so batch and time stay dynamic."""
        import numpy as np

        dirs, h = (2 if p.bidirectional else 1), p.hidden
        i64 = lambda v: np.array(v, np.int64)  # noqa: E731
        batch = g.dims[0][0] if g.dims else "batch"
        n = g.op("Shape", [g.x], start=0, end=1) if g.opset >= 15 else g.op(
            "Slice", [g.op("Shape", [g.x]), g.const("axis0", i64([0])), g.const("axis1", i64([1]))])
        zeros = g.op("Expand", [g.const("zero", np.zeros(1, np.float32)),
                                g.op("Concat", [n, g.const("hidden", i64([h]))], axis=0)])
        # No Transpose: the first layer projects (N, T, F) and scans its axis 1, the others scan (T, N, .),
        # and a `sequence` output is scanned out along axis 1. (onnxruntime 1.32 crashes creating a
        # float16 session where a Transpose feeds a MatMul.)
        v = g.x
        for k in range(p.layers):
            sfx = [f"_l{k}" + ("_reverse" if d else "") for d in range(dirs)]
            xw = g.op("MatMul", [v, g.const(f"Wt_l{k}", np.concatenate([g.array("weight_ih" + s).T for s in sfx], 1))])
            if p.bias:
                xw = g.op("Add", [xw, g.const(f"b_l{k}", np.concatenate(
                    [g.array("bias_ih" + s) + g.array("bias_hh" + s) for s in sfx]))])
            xs = [xw] if dirs == 1 else list(g.op("Split", [xw, g.const("halves", i64([h, h]))],
                                                  outputs=("forward", "backward"), axis=2))
            top = k == p.layers - 1
            # the directions whose output sequence is read: the next layer's input, the spec's output,
            # or (bidirectional `last`) the backward direction's output at the last step
            seq = range(dirs) if not top or p.output == "sequence" else [1] if p.output == "last" and dirs == 2 else []
            body = g.body(f"step_l{k}", {**{f"h{d}": [batch, h] for d in range(dirs)},
                                         **{f"xw{d}": [batch, h] for d in range(dirs)}})
            hs = [body.op(p.nonlinearity.title(), [body.op("Add", [body.op("MatMul", [
                body.xs[d], g.const("Rt" + s, np.ascontiguousarray(g.array("weight_hh" + s).T))]), body.xs[dirs + d]])])
                for d, s in enumerate(sfx)]
            ys = [body.op("Identity", [hs[d]]) for d in seq]
            names = ("forward", "backward")
            out_axis = 1 if top and p.output == "sequence" else 0
            # a direction's index is its Scan direction flag: 0 forward, 1 reversed
            scanned = {"scan_output_directions": list(seq), "scan_output_axes": [out_axis] * len(seq)} if seq else {}
            outs = g.op("Scan", [zeros] * dirs + xs,
                        outputs=tuple(f"h_{names[d]}" for d in range(dirs)) + tuple(f"y_{names[d]}" for d in seq),
                        body=body.graph({o: [batch, h] for o in hs + ys}), num_scan_inputs=dirs,
                        scan_input_directions=list(range(dirs)), scan_input_axes=[1 if k == 0 else 0] * dirs, **scanned)
            finals, steps = list(outs[:dirs]), list(outs[dirs:])
            if not top or p.output == "sequence":  # (T, N, D*H), the top layer's (N, T, D*H)
                v = steps[0] if dirs == 1 else g.op("Concat", steps, axis=2)
        if p.output == "sequence":
            return v
        if dirs == 1:  # the last step's output is the final state
            return finals[0]
        if p.output == "last":  # both directions' outputs at the last step
            finals[1] = g.op("Gather", [steps[0], g.const("last", i64(-1))], axis=0)
        return g.op("Concat", finals, axis=1)


class GRU(_Recurrent):
    name = "gru"
    Params = RecurrentParams
    doc = "Gated recurrent unit (Cho et al. 2014), PyTorch's formulation."
    flops_rule = "2*MACs + 6H bias adds + 8H gate element-wise ops per layer, direction and step"
    gates, gate_elementwise = 3, 8
    onnx_op, gate_order = "GRU", (1, 0, 2)  # PyTorch r, z, n -> ONNX z, r, h


class LSTM(_Recurrent):
    name = "lstm"
    Params = LSTMParams
    doc = ("Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch's formulation; with `peephole: true` "
           "the gates also read the cell state (Gers & Schmidhuber 2000), exported as ONNX LSTM's `P` input.")
    flops_rule = ("2*MACs + 8H bias adds + 9H gate element-wise ops per layer, direction and step; "
                  "peepholes add 6H (3 products, 3 adds)")
    macs_rule = _Recurrent.macs_rule + "; the peephole products are element-wise, not MACs (FlopCounterMode agrees)"
    gates, gate_elementwise = 4, 9
    onnx_op, gate_order = "LSTM", (0, 3, 1, 2)  # PyTorch i, f, g, o -> ONNX i, o, f, c

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
    def extra_tensors(cls, p: LSTMParams, sfx: str) -> dict[str, tuple[Shape, str]]:
        """weight_peephole_l{k}[_reverse] (3H: p_i, p_f, p_o), as PeepholeLSTM registers it."""
        return {f"weight_peephole{sfx}": ((3 * p.hidden,), "float32")} if p.peephole else {}

    @classmethod
    def extra_inputs(cls, p: LSTMParams, g, k: int, sfx: list[str]) -> list[str]:
        """ONNX LSTM's P (D, 3H) in the operator's order p_i, p_o, p_f (ONNX Operators.md, LSTM: "P ...
        peepholes [iof]"), from PyTorch-side (p_i, p_f, p_o)."""
        if not p.peephole:
            return []
        import numpy as np

        h = p.hidden
        ps = [g.array("weight_peephole" + s) for s in sfx]
        return [g.const(f"P_l{k}", np.stack([np.concatenate([a[:h], a[2 * h:], a[h:2 * h]]) for a in ps]))]

    @classmethod
    def lower(cls, p: LSTMParams, x: Shape, y: Shape):
        if not p.peephole:
            return super().lower(p, x, y)
        from ..nn_peephole import PeepholeLSTM

        return PeepholeLSTM(x[1], p.hidden, num_layers=p.layers, bias=p.bias, dropout=p.dropout,
                            bidirectional=p.bidirectional, output=p.output)
