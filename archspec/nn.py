"""The few torch modules lowering needs beyond torch.nn. Imported only by lowering (torch side).

Layouts: images (N, C, H, W); sequences batch-first (N, T, F); tokens (N, T) int64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Network(nn.Module):
    """The compiled model: a small executor over the graph IR's topologically ordered nodes.

    Each layer's module is registered at its scope (`layer2.block0.conv1`), with plain containers
    for the prefixes, so `state_dict` keys read like the spec. The forward pass runs the steps in
    order over a list of values. Why not torch.fx: both torch.onnx exporters (dynamo, and the
    TorchScript tracer the recurrent kinds need) trace this loop into a flat graph as they trace
    any module, the modules keep their own classes for hooks and weights, and building it needs
    no symbolic trace of our own."""

    def __init__(self, *, name: str, input_names: tuple[str, ...], output_names: tuple[str, ...], sha256: str,
                 values: int, outputs: tuple[int, ...]):
        super().__init__()
        self.spec_name, self.spec_sha256 = name, sha256
        self.input_names, self.output_names = input_names, output_names
        self._values, self._outputs = values, outputs
        # (module, input values, output values, values no later step reads: dropped after this one)
        self._steps: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...], list[int]]] = []
        self._last_read: dict[int, int] = {}  # value -> index of the last step reading it so far

    @property
    def input_name(self) -> str:
        return self.input_names[0]

    def add_step(self, scope: str, module: nn.Module, inputs: tuple[int, ...], outputs: tuple[int, ...]) -> None:
        """Registers `module` at `scope` (containers created on first use) and runs it after the others."""
        parent: nn.Module = self
        *prefix, leaf = scope.split(".")
        for part in prefix:
            child = parent._modules.get(part)
            if child is None:
                child = _Scope()
                parent.add_module(part, child)
            parent = child
        parent.add_module(leaf, module)
        here = len(self._steps)
        for v in dict.fromkeys(inputs):
            if v in self._last_read:  # read again: live until this step
                self._steps[self._last_read[v]][3].remove(v)
            self._last_read[v] = here
        self._steps.append((module, inputs, outputs, [v for v in dict.fromkeys(inputs) if v not in self._outputs]))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env: list[torch.Tensor | None] = list(inputs) + [None] * (self._values - len(inputs))
        for module, ins, outs, dead in self._steps:
            y = module(*(env[i] for i in ins))
            for v in dead:  # holding only live activations: ResNet-50 at batch 3 peaked 440 MB higher
                env[v] = None
            if len(outs) == 1:
                env[outs[0]] = y
            else:
                for v, t in zip(outs, y):
                    env[v] = t
        result = tuple(env[v] for v in self._outputs)
        return result[0] if len(result) == 1 else result  # type: ignore[return-value]


class _Scope(nn.Module):
    """A container named by the spec (a block, group, repeat or branch); the Network runs its layers."""


class PaddedConv2d(nn.Conv2d):
    """Conv2d with asymmetric padding (t != b or l != r), e.g. 'same' with an even kernel.
    The pad is explicit so PyTorch and ONNX agree; weight names stay those of nn.Conv2d."""

    def __init__(self, *, pads: tuple[int, int, int, int], **conv_args):
        super().__init__(padding=0, **conv_args)
        self.pads = pads  # (left, right, top, bottom), the order F.pad takes

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, out, H', W')
        return super().forward(F.pad(x, self.pads))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pads(l,r,t,b)={self.pads}"


class GlobalPool(nn.Module):
    def __init__(self, reduce: str):
        super().__init__()
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C)
        pooled = F.adaptive_avg_pool2d(x, 1) if self.reduce == "avg" else F.adaptive_max_pool2d(x, 1)
        return torch.flatten(pooled, 1)

    def extra_repr(self) -> str:
        return self.reduce


class Concat(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.dim)


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class _Recurrent:
    """Mixin for RNN/GRU/LSTM: batch-first, and the output the spec asked for: every step,
    the last step, or the top layer's final hidden state (both directions)."""

    def __init__(self, *args, output: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, F)
        out, state = super().forward(x)  # out: (N, T, D*H); state: h_n (L*D, N, H), or (h_n, c_n)
        h_n = state[0] if isinstance(state, tuple) else state
        if self.output == "sequence":
            return out
        if self.output == "last":
            # one direction: the last step's output is the top layer's final state, which the
            # exported graph has without transposing and gathering the whole output sequence
            return out[:, -1] if self.bidirectional else h_n[-1]  # (N, D*H)
        directions = 2 if self.bidirectional else 1
        return torch.cat(tuple(h_n[-directions:]), dim=-1)  # (N, D*H)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", output={self.output}"


class RNN(_Recurrent, nn.RNN):
    pass


class GRU(_Recurrent, nn.GRU):
    pass


class LSTM(_Recurrent, nn.LSTM):
    pass


RECURRENT = {"rnn": RNN, "gru": GRU, "lstm": LSTM}  # the torch class of each recurrent layer kind
