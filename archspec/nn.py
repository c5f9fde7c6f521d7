"""The few torch modules lowering needs beyond torch.nn. Imported only by lowering (torch side).

Layouts: images (N, C, H, W); sequences batch-first (N, T, F); tokens (N, T) int64.
"""

from __future__ import annotations

import keyword
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import nn


class Network(nn.Module):
    """The compiled model: a small executor over the graph IR's topologically ordered nodes.

    Each layer's module is registered at its scope (`layer2.block0.conv1`), with plain containers
    for the prefixes, so `state_dict` keys read like the spec. The forward pass runs the steps in
    order over a list of values, and returns one tensor, or several as a named tuple (`result_type`).
    Why not torch.fx: both torch.onnx exporters (dynamo, and the TorchScript tracer the recurrent
    kinds need) trace this loop into a flat graph as they trace any module, the modules keep their
    own classes for hooks and weights, and building it needs no symbolic trace of our own."""

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
        if len(self._outputs) == 1:
            return env[self._outputs[0]]  # type: ignore[return-value]
        return result_type(self.output_names)(*(env[v] for v in self._outputs))


_RESULT_TYPES: dict[tuple[str, ...], type] = {}  # per tuple of output names: a module holds no class, so it pickles


def result_fields(names: tuple[str, ...]) -> tuple[str, ...]:
    """The fields of a several-output result, one per `outputs:` name in order. The grammar makes every
    name an identifier (`schema.IDENT`), but not every identifier names a field: a Python keyword gets a
    trailing underscore (`class` -> `class_`, PEP 8's convention); one starting with `_`, or repeating an
    earlier field, is named by its position (`_1`), as `collections.namedtuple(rename=True)` does."""
    return namedtuple("_", [f"{n}_" if keyword.iskeyword(n) else n for n in names], rename=True)._fields


def result_type(names: tuple[str, ...]) -> type:
    """The named tuple a network with several outputs returns: still a tuple (unpacking, indexing,
    torch's pytree and the exporters see one), its fields the output names (`result_fields`)."""
    cls = _RESULT_TYPES.get(names)
    if cls is None:
        cls = _RESULT_TYPES[names] = namedtuple("Outputs", result_fields(names), rename=True)  # `_1` stays `_1`
    return cls


class _Scope(nn.Module):
    """A container named by the spec (a block, group, repeat or branch); the Network runs its layers."""


class PaddedConv2d(nn.Conv2d):
    """Conv2d with asymmetric padding (t != b or l != r), e.g. 'same' with an even kernel.
    The pad is explicit so PyTorch and ONNX agree; weight names stay those of nn.Conv2d. "same"
    recomputes it for each image size, as a strided 'same' needs (ONNX auto_pad SAME_LOWER)."""

    def __init__(self, *, pads: tuple[int, int, int, int] | str, **conv_args):
        super().__init__(padding=0, **conv_args)
        self.pads = pads  # (left, right, top, bottom), the order F.pad takes

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, out, H', W')
        pads = self.pads
        if pads == "same":  # as layers.conv.same_padding per axis, written out so an ejected file needs only torch
            pads = ()
            for n, k, s, d in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
                total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
                pads += ((total + 1) // 2, total // 2)
        return super().forward(F.pad(x, pads))

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


class Mul(nn.Module):
    """Broadcasting product of per-sample shapes aligned on the right: a lower-rank input gains
    its missing axes behind the batch axis, never in front of it."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        rank = max(x.dim() for x in xs)
        xs = tuple(x.reshape(x.shape[:1] + (1,) * (rank - x.dim()) + x.shape[1:]) for x in xs)
        out = xs[0]
        for x in xs[1:]:
            out = out * x
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


class AxisLayerNorm(nn.LayerNorm):
    """LayerNorm over a per-sample axis that is not the last (ConvNeXt's LayerNorm2d normalises the
    channels of (N, C, H, W)): move it last, normalise, move it back. Parameter names stay nn.LayerNorm's."""

    def __init__(self, normalized_shape: int, axis: int, **kwargs):  # named as nn.LayerNorm's: eject reads it back
        super().__init__(normalized_shape, **kwargs)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(self.axis, -1)).movedim(-1, self.axis)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", axis={self.axis}"


class AxisGroupNorm(nn.GroupNorm):
    """GroupNorm over a per-sample axis that is not the first: the features of a sequence (N, T, F),
    which PyTorch's GroupNorm reads as (N, C, L) = (N, F, T): move the axis to 1, normalise, move it
    back. Parameter names stay nn.GroupNorm's."""

    def __init__(self, num_groups: int, num_channels: int, axis: int, **kwargs):  # named as nn.GroupNorm's: eject reads it back
        super().__init__(num_groups, num_channels, **kwargs)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(self.axis, 1)).movedim(1, self.axis)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", axis={self.axis}"


class AxisBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over a per-sample axis that is not the first: the features of a sequence (N, T, F),
    which PyTorch's BatchNorm1d normalises as (N, F, T): move the axis to 1, normalise, move it back.
    Parameter and buffer names stay nn.BatchNorm1d's."""

    def __init__(self, num_features: int, axis: int, **kwargs):  # named as nn.BatchNorm1d's: eject reads it back
        super().__init__(num_features, **kwargs)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(self.axis, 1)).movedim(1, self.axis)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", axis={self.axis}"


class Permute(nn.Module):
    """x.permute(order); `order` includes the batch axis (0 stays first)."""

    def __init__(self, order: list[int]):
        super().__init__()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order)

    def extra_repr(self) -> str:
        return f"order={self.order}"


class Reshape(nn.Module):
    """Per-sample reshape to a fixed `shape`; the batch axis is kept as it comes."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Slice(nn.Module):
    """x[..., start:end:step, ...] on axis `dim` (batch included in the numbering), Python's bounds."""

    def __init__(self, dim: int, start: int, end: int | None, step: int):
        super().__init__()
        self.dim, self.start, self.end, self.step = dim, start, end, step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (slice(None),) * self.dim + (slice(self.start, self.end, self.step),)
        return x[index]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, {self.start}:{'' if self.end is None else self.end}:{self.step}"


class Select(nn.Module):
    def __init__(self, dim: int, index: int):
        super().__init__()
        self.dim, self.index = dim, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.select(self.dim, self.index)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, index={self.index}"


class Split(nn.Module):
    """torch.split(x, sizes, dim): the pieces, in order (the graph binds each to its name)."""

    def __init__(self, dim: int, sizes: list[int]):
        super().__init__()
        self.dim, self.sizes = dim, sizes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, self.sizes, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, sizes={self.sizes}"


class Chunk(nn.Module):
    """torch.chunk(x, chunks, dim), on an axis the chunks divide (the checker refuses others)."""

    def __init__(self, dim: int, chunks: int):
        super().__init__()
        self.dim, self.chunks = dim, chunks

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.chunk(x, self.chunks, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, chunks={self.chunks}"


class UpsampleTo(nn.Module):
    """F.interpolate(x, size=ref's H x W): an FPN/U-Net decoder's upsampling to the skip's size."""

    def __init__(self, mode: str, align_corners: bool | None = None):
        super().__init__()
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=ref.shape[-2:], mode=self.mode, align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, align_corners={self.align_corners}"


class Pad(nn.Module):
    """F.pad with `pads` in its order: (left, right, top, bottom[, channels before, after])."""

    def __init__(self, pads: tuple[int, ...], mode: str, value: float):
        super().__init__()
        self.pads, self.mode, self.value = pads, mode, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "constant":
            return F.pad(x, self.pads, value=self.value)
        return F.pad(x, self.pads, mode=self.mode)

    def extra_repr(self) -> str:
        return f"pads={self.pads}, mode={self.mode}" + (f", value={self.value}" if self.mode == "constant" else "")


class ChannelShuffle(nn.Module):
    """ShuffleNet's shuffle as reshape-transpose-reshape (exports as plain ONNX ops)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class SequenceConv1d(nn.Conv1d):
    """Conv1d over batch-first sequences (N, T, F): features are the channels, so the time axis moves
    behind them and back. Explicit (left, right) padding, so PyTorch and ONNX agree on 'same'; "same"
    recomputes it for each length, as a strided 'same' needs on a sequence of any length (ONNX auto_pad
    SAME_LOWER)."""

    # an explicit signature without `padding` (always 0 here): eject writes back what it names, and an
    # equal pair (p, p) as p
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True, pads: tuple[int, int] | int | str = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups,
                         bias=bias)
        self.pads = (pads, pads) if isinstance(pads, int) else pads if isinstance(pads, str) else tuple(pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, F) -> (N, T', out)
        y = x.transpose(1, 2)
        pads = self.pads
        if pads == "same":  # as layers.conv.same_padding, written out so an ejected file needs only torch
            n, k, s, d = y.shape[-1], self.kernel_size[0], self.stride[0], self.dilation[0]
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
            pads = ((total + 1) // 2, total // 2)
        if pads != (0, 0):
            y = F.pad(y, pads)
        return super().forward(y).transpose(1, 2)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pads(l,r)={self.pads}"


class OverTime(nn.Module):
    """Applies a channels-first 1-D module (pooling) to batch-first sequences (N, T, F); with
    `as_2d`, a 2-D module with a 1 x k window to (N, F, 1, T)."""

    def __init__(self, inner: nn.Module, as_2d: bool = False):
        super().__init__()
        self.inner, self.as_2d = inner, as_2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(1, 2)
        if self.as_2d:
            return self.inner(y.unsqueeze(2)).squeeze(2).transpose(1, 2)
        return self.inner(y).transpose(1, 2)


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
