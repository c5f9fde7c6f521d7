"""The few torch modules lowering needs beyond torch.nn. Imported only by lowering (torch side).

Layouts: images (N, C, H, W); sequences batch-first (N, T, F); tokens (N, T) int64.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class Network(nn.Sequential):
    """The compiled model: top-level spec items are its direct children, so state_dict keys read
    like the spec (`layer2.block0.conv1.weight`)."""

    def __init__(self, children: OrderedDict[str, nn.Module], *, name: str, input_name: str, sha256: str):
        super().__init__(children)
        self.spec_name, self.input_name, self.spec_sha256 = name, input_name, sha256


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


class Parallel(nn.Module):
    """Branches fed the same input, merged by `merge` (concat or add), then the `then` layers.
    A branch is a submodule (`inception3a.branch2.conv0.weight`), or, for a residual body, a run
    of this module's own children (`layer2.block0.conv1.weight`, as torchvision names them)."""

    def __init__(self, branches: list[tuple[str, OrderedDict[str, nn.Module], bool]], merge: nn.Module,
                 then: OrderedDict[str, nn.Module]):
        super().__init__()
        self.routes: list[list[str]] = []  # per branch, the children it runs in order
        for name, children, inline in branches:
            if inline:
                for child, module in children.items():
                    self.add_module(child, module)
                self.routes.append(list(children))
            else:
                self.add_module(name, nn.Sequential(children))
                self.routes.append([name])
        self.merge = merge
        for child, module in then.items():
            self.add_module(child, module)
        self.then = list(then)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for route in self.routes:
            y = x
            for name in route:
                y = getattr(self, name)(y)
            outputs.append(y)
        y = self.merge(outputs)
        for name in self.then:
            y = getattr(self, name)(y)
        return y


class Concat(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.dim)


class Add(nn.Module):
    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
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
