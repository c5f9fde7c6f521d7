"""Normalisation: batch norm (Ioffe & Szegedy 2015) and local response norm (AlexNet §3.3)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import Cost, LayerKind, LayerParams, Shape, numel


class BatchNormParams(LayerParams):
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)


class BatchNorm(LayerKind):
    name = "batchnorm"
    Params = BatchNormParams
    doc = "Batch normalisation over channels: (C, H, W) uses BatchNorm2d, (F) uses BatchNorm1d."
    input_rank = (1, 3)
    input_desc = "(C, H, W) or (F)"
    flops_rule = "2 per element (inference: one scale and one shift)"
    example = {}

    @classmethod
    def cost(cls, p: BatchNormParams, x: Shape, y: Shape) -> Cost:
        return Cost(params=2 * x[0], flops=2 * numel(x))  # weight and bias; running stats are buffers

    @classmethod
    def lower(cls, p: BatchNormParams, x: Shape, y: Shape):
        from torch import nn

        norm = nn.BatchNorm2d if len(x) == 3 else nn.BatchNorm1d
        return norm(x[0], eps=p.eps, momentum=p.momentum)

    @classmethod
    def init(cls, module, p: BatchNormParams, scheme: str) -> bool:
        if scheme != "zero":
            return False
        from torch import nn

        nn.init.zeros_(module.weight)  # gamma = 0: the residual block starts as the identity
        return True


MAX_LRN_SIZE = 255  # PyTorch pads the channels by size - 1 in a temporary; AlexNet uses 5


class LRNParams(LayerParams):
    size: Annotated[int, Field(gt=0, le=MAX_LRN_SIZE)] = 5
    alpha: float = Field(1e-4, ge=0)
    beta: float = Field(0.75, ge=0)
    k: float = Field(1.0, ge=0)


class LocalResponseNorm(LayerKind):
    name = "lrn"
    Params = LRNParams
    doc = "Local response normalisation across `size` neighbouring channels (AlexNet, VGG A-LRN)."
    input_rank = (3,)
    input_desc = "(C, H, W)"
    flops_rule = "2*size + 3 per element (squares and sums over the window, then scale, power, divide)"
    example = {"size": 3}

    @classmethod
    def cost(cls, p: LRNParams, x: Shape, y: Shape) -> Cost:
        return Cost(flops=(2 * p.size + 3) * numel(x))

    @classmethod
    def lower(cls, p: LRNParams, x: Shape, y: Shape):
        from torch import nn

        return nn.LocalResponseNorm(p.size, p.alpha, p.beta, p.k)
