"""Batch norm takes its variant from the tensor's layout, not its rank: an image's channels
(BatchNorm2d), a vector's features (BatchNorm1d), a sequence's features (BatchNorm1d on (N, F, T),
statistics over batch and time, as PyTorch normalises a sequence). Group and instance norm refuse,
as PyTorch does, groups of one value. Oracles: hand-written PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archspec
from archspec.errors import SpecError
from archspec.exporter import export_model
from archspec.runtime import Session


def spec(tmp_path: Path, inp: str, body: str) -> archspec.Report:
    path = tmp_path / "bn.yaml"
    path.write_text(f"archspec: 1\nname: bn\ninput: {{x: {inp}}}\nnetwork:\n{body}")
    return archspec.check(path)


def randomise(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g))


def test_a_sequence_normalises_its_features_as_pytorch(tmp_path: Path) -> None:
    report = spec(tmp_path, "[time=6, 4]", "  - batchnorm: {eps: 0.001, momentum: 0.2}\n")
    assert report.totals.params == 2 * 4  # the features' weight and bias, not the time axis's
    model = archspec.build(report)
    randomise(model)
    assert sorted(model.state_dict()) == ["batchnorm0.bias", "batchnorm0.num_batches_tracked",
                                          "batchnorm0.running_mean", "batchnorm0.running_var", "batchnorm0.weight"]
    oracle = nn.BatchNorm1d(4, eps=1e-3, momentum=0.2)
    oracle.load_state_dict({k.removeprefix("batchnorm0."): v for k, v in model.state_dict().items()})
    x = torch.randn(3, 6, 4) * 2 + 1
    for mode in ("eval", "train"):  # inference with running statistics; training over batch and time
        getattr(model, mode)(), getattr(oracle, mode)()
        got, want = model(x), oracle(x.transpose(1, 2)).transpose(1, 2)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(model.state_dict()["batchnorm0.running_mean"], oracle.running_mean)
    # the training statistics are per feature, over (batch, time): mean of x[..., f]
    normed = F.batch_norm(x.transpose(1, 2), None, None, training=True, eps=1e-3).transpose(1, 2)
    model.train()
    with torch.no_grad():
        model.batchnorm0.weight.fill_(1), model.batchnorm0.bias.zero_()
    torch.testing.assert_close(model(x), normed)
    torch.testing.assert_close(normed.mean((0, 1)), torch.zeros(4), atol=1e-6, rtol=0)


def test_a_sequence_exports_with_time_dynamic(tmp_path: Path) -> None:
    report = spec(tmp_path, "[time=6, 4]", "  - conv1d: {out: 5, kernel: 3}\n  - batchnorm\n  - relu\n")
    assert report.totals.params == (5 * 4 * 3 + 5) + 2 * 5
    state = {k: v.numpy() for k, v in archspec.build(report, seed=1).state_dict().items()}
    g = np.random.default_rng(0)
    state["batchnorm0.running_mean"] = g.standard_normal(5).astype(np.float32)
    state["batchnorm0.running_var"] = g.uniform(0.5, 2, 5).astype(np.float32)
    result = export_model(report, tmp_path / "m.onnx", weights=state)
    assert result.compared and dict(result.dynamic_axes) == {"batch": 0, "time": 1}
    x = torch.randn(2, 11, 4)
    t = {k: torch.from_numpy(v) for k, v in state.items()}
    h = F.conv1d(x.transpose(1, 2), t["conv1d0.weight"], t["conv1d0.bias"])  # (N, F, T): PyTorch's own layout
    want = F.relu(F.batch_norm(h, t["batchnorm0.running_mean"], t["batchnorm0.running_var"],
                               t["batchnorm0.weight"], t["batchnorm0.bias"], False, 0.0, 1e-5)).transpose(1, 2)
    got = Session(result.path).run({"x": x.numpy()})["output"]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inp, torch_class", [("[3, 8, 8]", nn.BatchNorm2d), ("[12]", nn.BatchNorm1d)])
def test_images_and_vectors_keep_their_module(tmp_path: Path, inp: str, torch_class: type) -> None:
    report = spec(tmp_path, inp, "  - batchnorm\n")
    model = archspec.build(report).eval()
    assert type(model.batchnorm0) is torch_class
    assert report.totals.params == 2 * int(inp.strip("[]").split(",")[0])


def test_token_ids_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        spec(tmp_path, "{shape: [time=6], dtype: int64}", "  - batchnorm\n")
    (d,) = exc.value.diagnostics
    assert d.code == "AS203" and "batchnorm expects float32 input, got int64" in d.message


def test_eject_writes_the_sequence_form(tmp_path: Path) -> None:
    """The ejected file carries AxisBatchNorm (the file imports only torch) and computes what build does."""
    from test_eject import eject

    report = spec(tmp_path, "[time=6, 4]", "  - {linear: {out: 5}}\n  - batchnorm\n")
    path, ejected = eject(tmp_path / "bn.yaml", tmp_path)
    assert "class AxisBatchNorm(nn.BatchNorm1d)" in path.read_text()
    built = archspec.build(report, seed=0)
    randomise(built)
    theirs = ejected.build()
    theirs.load_state_dict(built.state_dict(), strict=True)
    x = torch.randn(2, 6, 4)
    for mode in ("eval", "train"):
        getattr(built, mode)(), getattr(theirs, mode)()
        torch.testing.assert_close(theirs(x), built(x), rtol=0, atol=0)


def test_a_layout_without_channels_or_features_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        spec(tmp_path, "{shape: [6], layout: T}", "  - batchnorm\n")
    (d,) = exc.value.diagnostics
    assert (d.loc.line, d.loc.col) == (5, 5)
    assert d.message == "batchnorm 'batchnorm0': batchnorm normalises channels (C) or features (F); a T input has neither"


@pytest.mark.parametrize("inp, layer, where, torch_shape, ok", [
    ("[4, 1, 1]", "instancenorm", "each channel of a 4x1x1 input holds one value", (1, 4, 1, 1), "[4, 1, 2]"),
    ("[4, 1, 1]", "groupnorm: {groups: 4}", "each of the 4 groups of a 4x1x1 input holds one value", (1, 4, 1, 1),
     "[4, 1, 2]"),
    # a sequence (T, F) = (1, 4): its 4 features are the channels, nn.GroupNorm's (N, F, T) = (1, 4, 1)
    ("[1, 4]", "groupnorm: {groups: 4}", "each of the 4 groups of a 1x4 input holds one value", (1, 4, 1), "[2, 4]")])
def test_a_norm_of_single_values_is_refused_as_pytorch_refuses_it(tmp_path: Path, inp: str, layer: str,
                                                                 where: str, torch_shape: tuple, ok: str) -> None:
    with pytest.raises(SpecError) as exc:
        spec(tmp_path, inp, f"  - {layer}\n")
    (d,) = exc.value.diagnostics
    assert where in d.message
    module = {"instancenorm": nn.InstanceNorm2d(4), "groupnorm": nn.GroupNorm(4, 4)}[layer.split(":")[0]]
    with pytest.raises(ValueError, match="Expected more than 1"):  # the oracle: PyTorch's own check
        module(torch.randn(*torch_shape))
    spec(tmp_path, ok, f"  - {layer}\n")  # two values each: accepted
