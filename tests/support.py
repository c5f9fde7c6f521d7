"""Helpers shared by the torch-side tests (not a test module)."""

from __future__ import annotations

import torch
from torch import nn


def recorded_shapes(module: nn.Module, x: torch.Tensor, paths: set[str]) -> dict[str, tuple[int, ...]]:
    """Output shape of every submodule named in `paths` (and of the model's first output, under ""),
    via forward hooks; of a layer with several outputs (split), the first, as the checker's row shows."""
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(
                 name, tuple((o[0] if isinstance(o, tuple) else o).shape)))
             for name, m in module.named_modules() if name in paths]
    try:
        with torch.no_grad():
            y = module(x)
            seen[""] = tuple((y[0] if isinstance(y, tuple) else y).shape)  # the first of several outputs
    finally:
        for h in hooks:
            h.remove()
    return seen
