"""Torch modules of the transformer kinds (layers/transformer.py). Imported only by lowering.

Layout: tokens batch-first (N, T, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Mask-free multi-head self-attention with nn.MultiheadAttention's parameters (same names,
    shapes, order and initialisation), so its state dict loads both ways. Written out as two
    batched matmuls rather than calling nn.MultiheadAttention: its eval-mode fast path
    (`_native_multi_head_attention`) is invisible to FlopCounterMode and not exportable by every
    torch.onnx path, while matmul + softmax exports everywhere and is counted. `fused` uses
    F.scaled_dot_product_attention instead (counted by FlopCounterMode on the meta device only)."""

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0, bias: bool = True, fused: bool = False):
        super().__init__()
        self.dim, self.heads, self.dropout, self.fused = dim, heads, dropout, fused
        self.bias = bias  # constructor arguments kept as attributes: `archspec eject` reads them back
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim)) if bias else None
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention._reset_parameters
        if bias:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, D) -> (N, T, D)
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        # (N, h, T, d); reshaped with the traced sizes, as TorchScript's unflatten fixes the batch size
        q, k, v = (t.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        if self.fused:  # mask-free: no mask argument, so the fused kernels apply
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        else:
            scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # (N, h, T, T)
            out = F.dropout(scores.softmax(dim=-1), self.dropout, self.training) @ v
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dropout={self.dropout}, fused={self.fused}"


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: drops the whole input per sample ("row") or per batch with
    probability p in training and scales survivors by 1/(1-p); the identity in eval mode."""

    def __init__(self, p: float, drop_mode: str = "row"):
        super().__init__()
        self.p, self.drop_mode = p, drop_mode  # torchvision's `mode`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1) if self.drop_mode == "row" else (1,) * x.dim()
        keep = x.new_empty(shape).bernoulli_(survival)
        return x * keep.div_(survival)

    def extra_repr(self) -> str:
        return f"p={self.p}, drop_mode={self.drop_mode}"


def free_tensor(shape: tuple[int, ...], init: str, std: float) -> nn.Parameter:
    """zeros, normal(0, std) or normal(0, std) truncated at +-2 std (timm/torchvision's trunc_normal_)."""
    t = torch.zeros(shape)
    if init == "normal":
        nn.init.normal_(t, std=std)
    elif init == "trunc_normal":
        nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)
    return nn.Parameter(t)


def broadcast_over_batch(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t (1, ...) repeated over x's batch: (N, ...). Zeros of the traced size plus t, rather than
    t.expand(N, -1, ...): TorchScript's ONNX form of expand hides the fixed sizes from ONNX shape
    inference, and an expanded view made under no_grad requires grad without a grad_fn, which
    FlopCounterMode's module tracker refuses."""
    return x.new_zeros((x.shape[0], *t.shape[1:])) + t


class ClassToken(nn.Module):
    """Prepends the learned token: (N, T, D) -> (N, T+1, D), torchvision ViT's `class_token`."""

    def __init__(self, dim: int, init: str, std: float):
        super().__init__()
        self.dim, self.init, self.std = dim, init, std
        self.token = free_tensor((1, 1, dim), init, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((broadcast_over_batch(self.token, x), x), dim=1)


class FreeParameter(nn.Module):
    """A learned tensor (1, *shape), broadcast over the input's batch; the input's values are unused."""

    def __init__(self, shape: tuple[int, ...], init: str, std: float):
        super().__init__()
        self.shape, self.init, self.std = tuple(shape), init, std
        self.weight = free_tensor((1, *shape), init, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, ...) -> (N, *shape)
        return broadcast_over_batch(self.weight, x)


class LayerScale(nn.Module):
    """Per-channel learned scale, torchvision ConvNeXt's `layer_scale` ((C, 1, 1) for images)."""

    def __init__(self, shape: tuple[int, ...], value: float):
        super().__init__()
        self.shape, self.value = tuple(shape), value
        self.scale = nn.Parameter(torch.full(shape, value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
