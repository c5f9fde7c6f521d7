"""The seeded numpy initial values (`initial`) of conv1d, conv_transpose2d and the layer, group and
instance norms against PyTorch's own initialisation of the kinds' lowered modules: the same tensors,
equal in distribution (two-sample Kolmogorov-Smirnov) for random ones, equal for constant ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import archspec
from archspec.exporter import initial_state
from archspec.lower import build_module

CASES = [  # big enough tensors that a wrong fan (a factor of 2 in the bound) is far outside the KS band
    ("conv1d", {"out": 48, "kernel": 5, "groups": 2}, "[time=20, 64]"),
    ("conv_transpose2d", {"out": 48, "kernel": 3, "stride": 2, "groups": 2}, "[64, 5, 5]"),
    ("conv_transpose2d", {"out": 96, "kernel": [3, 2], "bias": False}, "[32, 5, 5]"),
    ("layernorm", {}, "[time=4, 40]"),
    ("layernorm", {"bias": False}, "[40, 5, 5]"),
    ("groupnorm", {"groups": 4}, "[40, 5, 5]"),
    ("instancenorm", {"affine": True}, "[40, 5, 5]"),
]


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a.ravel()), np.sort(b.ravel())
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size).max())


@pytest.mark.parametrize("scheme", ["pytorch", "kaiming", "xavier"])
@pytest.mark.parametrize("kind, params, inp", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_initial_is_torch_init_in_distribution(tmp_path: Path, kind: str, params: dict, inp: str, scheme: str) -> None:
    spec = tmp_path / "one.yaml"
    spec.write_text(f"archspec: 1\nname: one\ninput: {{x: {inp}}}\ninit: {{scheme: {scheme}}}\n"
                    f"network:\n  - {json.dumps({kind: params})}\n")
    report = archspec.check(spec)
    ours = initial_state(report, seed=0)
    torch.manual_seed(0)
    theirs = {k: v.numpy() for k, v in build_module(report).state_dict().items()}
    assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {k: (v.shape, v.dtype) for k, v in theirs.items()}
    assert ours
    for name, value in ours.items():
        if np.unique(theirs[name]).size == 1:  # a constant (norm scale 1, shift 0, zero conv bias)
            np.testing.assert_array_equal(value, theirs[name], err_msg=name)
        else:
            # KS critical value at alpha = 0.001: 1.95 * sqrt((n + m) / (n m)) (Smirnov 1948)
            n = value.size
            assert n >= 48
            assert _ks(value, theirs[name]) < 1.95 * np.sqrt(2 / n), name
