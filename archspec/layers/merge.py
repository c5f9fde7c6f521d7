"""How parallel branches meet: channel concatenation (Inception) or element-wise add (ResNet)."""

from __future__ import annotations

from typing import ClassVar

from .base import Cost, Shape, ShapeError, numel

MERGES: dict[str, type[Merge]] = {}


def concat_axis(rank: int) -> int:
    """Channels-first for images (C, H, W) and vectors; features-last for sequences (T, F)."""
    return 1 if rank == 2 else 0


class Merge:
    name: ClassVar[str]
    doc: ClassVar[str]

    def __init_subclass__(cls) -> None:
        MERGES[cls.name] = cls

    @classmethod
    def infer(cls, shapes: list[Shape]) -> Shape:
        raise NotImplementedError

    @classmethod
    def cost(cls, shapes: list[Shape], y: Shape) -> Cost:
        return Cost()

    @classmethod
    def lower(cls, shapes: list[Shape]):
        raise NotImplementedError

    @classmethod
    def fix_hint(cls, x: Shape, a: Shape, b: Shape) -> str:
        """A suggested fix when branch outputs `a` and `b` (of input `x`) cannot merge."""
        return ""


class Concat(Merge):
    name = "concat"
    doc = "Concatenates branch outputs along channels (images) or features (sequences)."

    @classmethod
    def infer(cls, shapes: list[Shape]) -> Shape:
        first = shapes[0]
        axis = concat_axis(len(first))
        for i, s in enumerate(shapes[1:], 1):
            if len(s) != len(first) or s[:axis] + s[axis + 1:] != first[:axis] + first[axis + 1:]:
                raise ShapeError(f"cannot concatenate branch outputs {_fmt(first)} and {_fmt(s)}: "
                                 f"all axes but {'channels' if axis == 0 else 'features'} must agree", str(i))
        return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]

    @classmethod
    def lower(cls, shapes: list[Shape]):
        from ..nn import Concat as TorchConcat

        return TorchConcat(concat_axis(len(shapes[0])) + 1)


class Add(Merge):
    name = "add"
    doc = "Adds branch outputs element-wise; every branch must have the same shape."

    @classmethod
    def infer(cls, shapes: list[Shape]) -> Shape:
        for i, s in enumerate(shapes[1:], 1):
            if s != shapes[0]:
                raise ShapeError(f"cannot add branch outputs {_fmt(shapes[0])} and {_fmt(s)}", str(i))
        return shapes[0]

    @classmethod
    def cost(cls, shapes: list[Shape], y: Shape) -> Cost:
        return Cost(flops=(len(shapes) - 1) * numel(y))

    @classmethod
    def fix_hint(cls, x: Shape, a: Shape, b: Shape) -> str:
        """An identity shortcut that no longer matches the body: project it as ResNet does (He et al.
        2016, option B: a strided 1x1 convolution, then batch norm)."""
        if len(x) != 3 or x not in (a, b):
            return ""
        y = b if a == x else a
        if len(y) != 3 or x[1] % y[1] or x[2] % y[2] or x[1] // y[1] != x[2] // y[2]:
            return ""
        stride = x[1] // y[1]
        return ("project the shortcut to the body's shape: `shortcut: [{conv2d: {out: %d, kernel: 1%s, "
                "bias: false}}, batchnorm]`" % (y[0], f", stride: {stride}" if stride > 1 else ""))

    @classmethod
    def lower(cls, shapes: list[Shape]):
        from ..nn import Add as TorchAdd

        return TorchAdd()


def _fmt(shape: Shape) -> str:
    return "x".join(map(str, shape))
