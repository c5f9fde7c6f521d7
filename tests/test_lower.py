"""The PyTorch backend computes exactly what the checker says: parameters, shapes at every
named node, MACs (against torch's own FlopCounterMode), and outputs equal to hand-written
PyTorch definitions of the same networks."""

from __future__ import annotations

import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from support import recorded_shapes
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archspec
from archspec.layers import REGISTRY
from archspec.layers.base import INT

SPECS = sorted(Path(__file__).resolve().parent.parent.joinpath("specs").glob("*.yaml"))
CHEAP_MACS = 2 * 10**9  # larger models are checked on the meta device (no allocation, no compute)


def spec_file(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def device_for(report: archspec.Report) -> str:
    return "cpu" if report.totals.macs <= CHEAP_MACS and report.totals.params <= 30_000_000 else "meta"


def example_input(report: archspec.Report, batch: int, device: str = "cpu") -> torch.Tensor:
    shape = (batch, *report.graph.input.shape)
    if report.graph.input.dtype == INT:
        return torch.randint(0, 8, shape, device=device)
    return torch.randn(shape, device=device)


def sizes_for(report: archspec.Report) -> list[tuple[int, ...] | None]:
    """The declared input size, and for symbolic (sequence) axes a second length too."""
    dims = report.graph.input.dims
    if not any(d.name for d in dims):
        return [None]
    return [None, tuple(d.size + 7 if d.name else d.size for d in dims)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_zoo_params_and_shapes_match_checker(spec: Path) -> None:
    for override in sizes_for(archspec.check(spec)):
        report = archspec.check(spec, input_shape=override)
        device = device_for(report)
        module = archspec.build(report, device=device, seed=0).eval()
        assert sum(p.numel() for p in module.parameters()) == report.totals.params
        paths = {n.path for n in report.nodes if n.leaf}  # containers hold layers; the model runs them
        for batch in (1, 3):
            seen = recorded_shapes(module, example_input(report, batch, device), paths)
            expected = {n.path: (batch, *n.output.shape) for n in report.nodes if n.leaf or not n.path}
            assert seen == expected


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_zoo_macs_match_torch_flop_counter(spec: Path) -> None:
    """On the meta device torch decomposes RNN/GRU/LSTM into the matmuls it counts, so every MAC of
    every zoo spec, recurrent ones included, is checked here (on CPU the counter sees 0 for them:
    see the next test)."""
    report = archspec.check(spec)
    module = archspec.build(report, device="meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(example_input(report, 1, "meta"))
    # torch counts 2 FLOPs per multiply-accumulate of matmuls and convolutions, bias excluded.
    assert counter.get_total_flops() == 2 * report.totals.macs


def test_flop_counter_gap_on_recurrent_layers_is_real(tmp_path: Path) -> None:
    """The gap the counter has on CPU (the fused LSTM kernel has no flop formula): it reports 0."""
    report = archspec.check(spec_file(tmp_path, """
        archspec: 1
        name: lstm_only
        input: {x: [time=5, 3]}
        network: [{lstm: {hidden: 4, output: last}}]
    """))
    module = archspec.build(report).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.randn(1, 5, 3))
    assert report.totals.macs == 4 * 4 * (3 + 4) * 5
    assert counter.get_total_flops() == 0


# --- every registered kind, automatically -----------------------------------------------------

def _kind_spec(kind: str) -> str:
    cls = REGISTRY[kind]
    rank = (cls.input_rank or (3,))[-1] if kind != "batchnorm" else 1
    shape = {1: "[12]", 2: "[time=7, 5]", 3: "[4, 9, 9]"}[rank]
    if cls.input_dtype == INT:
        inp = "{tokens: {shape: [time=7], dtype: int64}}"
    else:
        inp = f"{{x: {shape}}}"
    params = cls.example if cls.example else None
    layer = f"{kind}: {params!r}" if params else kind
    if cls.arity is None:  # an N-ary kind reads two inputs by name
        return (f"archspec: 1\nname: kind_{kind}\ninputs: {{a: {shape}, b: {shape}}}\n"
                f"network:\n  - {{{layer}, from: [a, b]}}\n")
    pieces = cls.output_names(cls.Params.model_validate(params)) if params else ()
    if pieces:  # several outputs: every piece reaches the output, multiplied (mul broadcasts)
        layer += f"\n  - {{mul, from: [{', '.join(pieces)}]}}"
    return f"archspec: 1\nname: kind_{kind}\ninput: {inp}\nnetwork:\n  - {layer}\n"


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_kind_lowers_to_what_the_checker_says(kind: str, tmp_path: Path) -> None:
    assert REGISTRY[kind].example is not None, f"{kind} needs an `example` parameter set for generated tests"
    assert REGISTRY[kind].doc and REGISTRY[kind].flops_rule, f"{kind} needs `doc` and `flops_rule`"
    report = archspec.check(spec_file(tmp_path, _kind_spec(kind).replace("'", '"')))
    module = archspec.build(report, seed=0).eval()
    assert sum(p.numel() for p in module.parameters()) == report.totals.params
    for batch in (1, 2):
        xs = [torch.randn(batch, *i.shape) for i in report.graph.inputs] if len(report.graph.inputs) > 1 else \
            [example_input(report, batch)]
        out = module(*xs)
        assert tuple(out.shape) == (batch, *report.output.shape)


# --- independent oracles: hand-written PyTorch ------------------------------------------------

def copy_in_order(src: nn.Module, dst: nn.Module) -> None:
    """Copies tensors by position (not by name): the oracle's names are its own."""
    a, b = list(src.state_dict().items()), list(dst.state_dict().items())
    assert [tuple(t.shape) for _, t in a] == [tuple(t.shape) for _, t in b]
    dst.load_state_dict(OrderedDict((k, v.clone()) for (k, _), (_, v) in zip(b, a)))


def randomize_bn_stats(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def assert_same_function(ours: nn.Module, oracle: nn.Module, x: torch.Tensor) -> None:
    randomize_bn_stats(ours)
    copy_in_order(ours, oracle)
    ours.eval(), oracle.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), oracle(x), rtol=1e-5, atol=1e-5)


def test_lenet_equals_handwritten() -> None:
    oracle = nn.Sequential(  # d2l §7.6
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
        nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))
    assert_same_function(archspec.build("specs/lenet.yaml", seed=0), oracle, torch.randn(4, 1, 28, 28))


class BasicBlock(nn.Module):  # torchvision.models.resnet.BasicBlock, written out
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.down(x))


def test_resnet_basic_block_equals_handwritten(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, """
        archspec: 1
        name: basic_block
        input: {image: [16, 12, 12]}
        blocks:
          basic:
            params: {channels: int, stride: int}
            body:
              - residual:
                  body:
                    - {conv2d: {out: channels, kernel: 3, stride: stride, padding: 1, bias: false}, name: conv1}
                    - {batchnorm: {}, name: bn1}
                    - relu
                    - {conv2d: {out: channels, kernel: 3, padding: 1, bias: false}, name: conv2}
                    - {batchnorm: {}, name: bn2}
                  shortcut:
                    - {conv2d: {out: channels, kernel: 1, stride: stride, bias: false}, name: conv}
                    - {batchnorm: {}, name: bn}
                  then: [relu]
        network:
          - basic: {channels: 32, stride: 2}
            name: block0
    """)
    ours = archspec.build(spec, seed=0)
    keys = set(ours.state_dict())
    assert {"block0.conv1.weight", "block0.bn2.running_var", "block0.shortcut.conv.weight"} <= keys
    assert_same_function(ours, BasicBlock(16, 32, 2), torch.randn(2, 16, 12, 12))


class Inception(nn.Module):  # Szegedy et al. 2015, Fig. 2(b), written out
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool: int):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(cin, c3r, 1), nn.ReLU(), nn.Conv2d(c3r, c3, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(cin, c5r, 1), nn.ReLU(), nn.Conv2d(c5r, c5, 5, padding=2), nn.ReLU())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(cin, pool, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


def test_inception_block_equals_handwritten(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, """
        archspec: 1
        name: inception3a
        input: {image: [192, 28, 28]}
        network:
          - concat:
              b1: [{conv2d: {out: 64, kernel: 1}}, relu]
              b2: [{conv2d: {out: 96, kernel: 1}}, relu, {conv2d: {out: 128, kernel: 3, padding: 1}}, relu]
              b3: [{conv2d: {out: 16, kernel: 1}}, relu, {conv2d: {out: 32, kernel: 5, padding: 2}}, relu]
              b4: [{maxpool2d: {kernel: 3, stride: 1, padding: 1}}, {conv2d: {out: 32, kernel: 1}}, relu]
    """)
    report = archspec.check(spec)
    assert report.output.shape == (256, 28, 28)
    # the lecture: an inception block costs 0.16M weights / 128M MACs (bias excluded)
    biases = 64 + 96 + 128 + 16 + 32 + 32
    assert (report.totals.params - biases, report.totals.macs) == (163_328, 128_049_152)
    assert_same_function(archspec.build(report, seed=0), Inception(192, 64, 96, 128, 16, 32, 32),
                         torch.randn(1, 192, 28, 28))


class GRUClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(128, 256, num_layers=2, batch_first=True)
        self.head = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def test_gru_classifier_equals_handwritten(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, """
        archspec: 1
        name: gru_classifier
        input: {x: [time=50, 128]}
        network:
          - gru: {hidden: 256, layers: 2, output: last}
          - linear: {out: 10}
    """)
    ours = archspec.build(spec, seed=0)
    copy_in_order(ours, oracle := GRUClassifier())
    with torch.no_grad():
        for length in (50, 13):
            x = torch.randn(3, length, 128)
            torch.testing.assert_close(ours(x), oracle(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output", ["sequence", "last", "state"])
def test_bidirectional_lstm_outputs(output: str, tmp_path: Path) -> None:
    spec = spec_file(tmp_path, f"""
        archspec: 1
        name: bilstm
        input: {{x: [time=6, 5]}}
        network: [{{lstm: {{hidden: 4, layers: 2, bidirectional: true, output: {output}}}}}]
    """)
    ours = archspec.build(spec, seed=0).eval()
    oracle = nn.LSTM(5, 4, num_layers=2, bidirectional=True, batch_first=True)
    copy_in_order(ours, oracle)
    x = torch.randn(2, 6, 5)
    with torch.no_grad():
        out, (h, _) = oracle(x)
        want = {"sequence": out, "last": out[:, -1], "state": torch.cat([h[-2], h[-1]], -1)}[output]
        torch.testing.assert_close(ours(x), want)


def test_asymmetric_same_padding_matches_explicit_pad(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, """
        archspec: 1
        name: even_kernel
        input: {image: [2, 7, 7]}
        network: [{conv2d: {out: 3, kernel: 4, padding: same}}]
    """)
    ours = archspec.build(spec, seed=0).eval()
    conv = nn.Conv2d(2, 3, 4)
    copy_in_order(ours, conv)
    x = torch.randn(1, 2, 7, 7)
    with torch.no_grad():  # d2l: ceil(3/2)=2 rows on top, floor(3/2)=1 at the bottom
        torch.testing.assert_close(ours(x), conv(nn.functional.pad(x, (2, 1, 2, 1))))


# --- options ---------------------------------------------------------------------------------

def test_seed_makes_initialisation_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = archspec.build("specs/lenet.yaml", seed=7).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    b = archspec.build("specs/lenet.yaml", seed=7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_meta_device_allocates_nothing() -> None:
    module = archspec.build("specs/lenet.yaml", device="meta")
    assert all(p.is_meta for p in module.parameters())


def test_dtype_option() -> None:
    module = archspec.build("specs/lenet.yaml", dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in module.parameters())


def test_kaiming_init_and_zero_init_residual(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, """
        archspec: 1
        name: init
        input: {image: [8, 6, 6]}
        init: {scheme: kaiming, zero_init_residual: true}
        network:
          - residual:
              body: [{conv2d: {out: 8, kernel: 3, padding: 1}}, {batchnorm: {}, name: bn}]
          - relu
    """)
    module = archspec.build(spec, seed=0)
    assert torch.count_nonzero(module.residual0.bn.weight) == 0
    assert torch.count_nonzero(module.residual0.conv2d0.bias) == 0
    std = module.residual0.conv2d0.weight.std().item()
    assert 0.5 * (2 / (8 * 9)) ** 0.5 < std < 1.5 * (2 / (8 * 9)) ** 0.5  # He et al., fan_out


def test_state_dict_keys_follow_spec_names(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, """
        archspec: 1
        name: names
        input: {image: [3, 8, 8]}
        blocks:
          unit:
            params: {c: int}
            body: [{conv2d: {out: c, kernel: 3, padding: 1}, name: conv1}, relu]
        network:
          - group:
              - repeat: 2
                name: block
                body: [{unit: {c: 4}}]
            name: stage2
    """)
    keys = set(archspec.build(spec).state_dict())
    assert keys == {f"stage2.block{i}.conv1.{t}" for i in (0, 1) for t in ("weight", "bias")}



def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class PreActUnit(nn.Module):  # He et al. 2016, "Identity mappings", Fig. 1(b) / fb.resnet.torch
    def __init__(self, c: int, first: bool = False):
        super().__init__()
        self.first = first  # the first unit is pre-activated by the stem's BN-ReLU
        if not first:
            self.bn1 = nn.BatchNorm2d(c)
        self.conv1, self.bn2, self.conv2 = conv3x3(c, c), nn.BatchNorm2d(c), conv3x3(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.first else torch.relu(self.bn1(x))
        return x + self.conv2(torch.relu(self.bn2(self.conv1(y))))


class PreActProjection(nn.Module):
    def __init__(self, cin: int, c: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1, self.bn2, self.conv2 = conv3x3(cin, c, stride), nn.BatchNorm2d(c), conv3x3(c, c)
        self.shortcut = nn.Conv2d(cin, c, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))  # shared by both paths when the shortcut projects
        return self.conv2(torch.relu(self.bn2(self.conv1(a)))) + self.shortcut(a)


def preact_resnet18() -> nn.Module:
    stages = [PreActUnit(64, first=True), PreActUnit(64)]
    for cin, c in ((64, 128), (128, 256), (256, 512)):
        stages += [PreActProjection(cin, c, 2), PreActUnit(c)]
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         *stages, nn.BatchNorm2d(512), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, 1000))


def test_resnet18_preact_equals_handwritten() -> None:
    oracle = preact_resnet18()
    report = archspec.check("specs/resnet18_preact.yaml")
    assert report.totals.params == sum(p.numel() for p in oracle.parameters())
    assert_same_function(archspec.build(report, seed=0), oracle, torch.randn(1, 3, 224, 224))


class BiLSTMTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10000, 128)
        self.lstm = nn.LSTM(128, 128, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(256, 17)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.lstm(self.embed(tokens))[0])


def test_bilstm_tagger_equals_handwritten() -> None:
    oracle = BiLSTMTagger()
    report = archspec.check("specs/bilstm_tagger.yaml")
    assert report.totals.params == sum(p.numel() for p in oracle.parameters())
    ours = archspec.build(report, seed=0)
    copy_in_order(ours, oracle)
    with torch.no_grad():
        for length in (50, 9):
            tokens = torch.randint(0, 10000, (2, length))
            torch.testing.assert_close(ours(tokens), oracle(tokens), rtol=1e-5, atol=1e-5)


def test_reserved_names_cover_every_module_attribute() -> None:
    """Names the resolver refuses are exactly those lowering could not register as submodules."""
    from archspec.nn import Network
    from archspec.resolve import RESERVED_NAMES

    public = {n for cls in (nn.Module, nn.Sequential, Network) for n in dir(cls) if not n.startswith("_")}
    net = Network(name="n", input_names=("x",), output_names=("y",), sha256="", values=1, outputs=(0,))
    public |= {n for n in vars(net) if not n.startswith("_")}
    assert public <= RESERVED_NAMES
