"""`split`/`chunk` (one value in, several named values out) and `upsample: {to: NAME}` (a second
input, the reference whose H x W the output takes), issue #13's last two operators.

Oracles: torch.split, torch.chunk and F.interpolate called by hand; a hand-written PyTorch C2f-FPN
(ultralytics' C2f block and top-down neck) holding the built module's weights, copied by position;
FlopCounterMode for the MACs; onnxruntime at sizes the export did not check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archspec
from archspec import SpecError
from archspec.exporter import ExportError
from archspec.render import human_diagnostic
from archspec.runtime import Session

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "c2f_fpn.yaml"


def write(tmp_path: Path, inputs: str, items: str, outputs: dict[str, str] | None = None) -> Path:
    path = tmp_path / "spec.yaml"
    tail = f"outputs: {json.dumps(outputs)}\n" if outputs else ""
    path.write_text(f"archspec: 1\nname: t\ninputs: {inputs}\nnetwork:\n{items}\n{tail}")
    return path


def refused(path: Path) -> str:
    """The one diagnostic a spec gets, as `archspec check` prints it."""
    with pytest.raises(SpecError) as info:
        archspec.check(path)
    (d,) = info.value.diagnostics
    return human_diagnostic(d, path.read_text().splitlines()[d.loc.line - 1])


# --- split and chunk: the pieces are torch.split's and torch.chunk's ------------------------------

SPLITS = [  # input, sizes, axis (None: the default), torch's dim of the batched input
    ("[8, 5, 7]", [3, 5], None, 1),  # an image: channels
    ("[8, 5, 7]", [2, 1, 2], "height", 2),
    ("[8, 5, 7]", [6, 1], "width", 3),
    ("[6, 10]", [4, 6], None, 2),  # a sequence: features
    ("[6, 10]", [1, 2, 3], "time", 1),
    ("[12]", [5, 7], None, 1),  # a vector: features
]


@pytest.mark.parametrize("inp, sizes, axis, dim", SPLITS)
def test_split_pieces_are_torch_split(tmp_path: Path, inp: str, sizes: list[int], axis: str | None, dim: int) -> None:
    names = [f"p{i}" for i in range(len(sizes))]
    where = f", axis: {axis}" if axis else ""
    item = f"  - split: {{sizes: {sizes}{where}, as: [{', '.join(names)}]}}"
    report = archspec.check(write(tmp_path, f"{{x: {inp}}}", item, {n: n for n in names}))
    x = torch.randn(3, *json.loads(inp))
    want = torch.split(x, sizes, dim)
    assert [(3, *t.shape) for t in report.outputs.values()] == [tuple(w.shape) for w in want]
    assert report.totals.params == report.totals.macs == report.totals.flops == 0
    with torch.no_grad():
        got = archspec.build(report, seed=0).eval()(x)
    assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("inp, parts, axis, dim", [("[8, 5, 7]", 4, None, 1), ("[8, 6, 7]", 3, "height", 2),
                                                   ("[6, 10]", 2, "time", 1), ("[12]", 3, None, 1)])
def test_chunk_pieces_are_torch_chunk(tmp_path: Path, inp: str, parts: int, axis: str | None, dim: int) -> None:
    names = [f"c{i}" for i in range(parts)]
    where = f"axis: {axis}, " if axis else ""
    report = archspec.check(write(tmp_path, f"{{x: {inp}}}", f"  - chunk: {{{where}as: [{', '.join(names)}]}}",
                                  {n: n for n in names}))
    x = torch.randn(2, *json.loads(inp))
    want = torch.chunk(x, parts, dim)
    with torch.no_grad():
        got = archspec.build(report, seed=0).eval()(x)
    assert [(2, *t.shape) for t in report.outputs.values()] == [tuple(w.shape) for w in want]
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("length, parts", [(5, 3), (6, 4)])
def test_uneven_chunk_is_refused(tmp_path: Path, length: int, parts: int) -> None:
    """torch.chunk cuts 5 into 2, 2, 1 and 6 into three pieces when asked for four: archspec refuses
    rather than give names to pieces of another size or count than asked."""
    torch_sizes = [t.shape[1] for t in torch.chunk(torch.zeros(1, length), parts, 1)]
    assert len(set(torch_sizes)) > 1 or len(torch_sizes) != parts
    names = ", ".join(f"c{i}" for i in range(parts))
    message = refused(write(tmp_path, f"{{x: [{length}]}}", f"  - chunk: {{as: [{names}]}}",
                            {f"c{i}": f"c{i}" for i in range(parts)}))
    assert "spec.yaml:5:17: error[AS201]" in message
    assert f"{parts} equal pieces do not divide the features axis of the {length} input ({length})" in message
    assert "use `split` with explicit sizes" in message


def test_pieces_are_read_by_name_in_a_block(tmp_path: Path) -> None:
    """ShuffleNetV2's unit as torchvision writes it: `x1, x2 = x.chunk(2, dim=1)`, a branch on x2,
    cat, shuffle; the pieces read by name inside a block, the block invoked twice."""
    path = tmp_path / "unit.yaml"
    path.write_text("""archspec: 1
name: unit
input: {image: [8, 6, 6]}
blocks:
  unit:
    params: {c: int}
    body:
      - {chunk: {as: [x1, x2]}}
      - {conv2d: {out: "c // 2", kernel: 1, bias: false}, from: x2, name: branch2}
      - {concat, from: [x1, branch2]}
      - channel_shuffle: {groups: 2}
network:
  - {unit: {c: 8}, name: u1}
  - {unit: {c: 8}, name: u2}
""")
    report = archspec.check(path)
    module = archspec.build(report, seed=0).eval()
    x = torch.randn(2, 8, 6, 6)

    def unit(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, F.conv2d(x2, w)), dim=1)
        return out.view(2, 2, 4, 6, 6).transpose(1, 2).reshape(2, 8, 6, 6)  # torchvision's channel_shuffle

    with torch.no_grad():
        want = unit(unit(x, module.u1.branch2.weight), module.u2.branch2.weight)
        torch.testing.assert_close(module(x), want, rtol=0, atol=0)
    assert report.totals.params == 2 * 4 * 4


# --- mistakes: one diagnostic each, where it is -------------------------------------------------

MISTAKES = [
    ("  - {split: {sizes: [3, 4], as: [a, b]}}\n  - {concat, from: [a, b]}", "5:21", "AS201",
     "sizes [3, 4] sum to 7, but the channels axis of the 8x5x7 input is 8"),
    ("  - {split: {sizes: [3, 5], axis: time, as: [a, b]}}\n  - {concat, from: [a, b]}", "5:35", "AS201",
     "has no time axis; its axes: channels, height, width"),
    ("  - {split: {sizes: [3, 5], axis: chanels, as: [a, b]}}\n  - {concat, from: [a, b]}", "5:35", "AS107",
     "did you mean 'channels'?"),
    ("  - {split: {sizes: [3, 5, 0], as: [a, b]}}\n  - {concat, from: [a, b]}", "5:13", "AS107",
     "`sizes` has 3 entries but `as` names 2 pieces"),
    ("  - {split: {sizes: [3, 5], as: [a, a]}}\n  - {concat, from: [a, b]}", "5:33", "AS107",
     "'a' names two pieces"),
    ("  - {split: {sizes: [3, 5], as: [left, right]}}\n  - {concat, from: [left, rihgt]}", "6:27", "AS123",
     "did you mean 'right'?"),
    ("  - {relu, name: left}\n  - {split: {sizes: [3, 5], as: [left, right]}}\n  - {concat, from: [right, left]}",
     "6:34", "AS110", "duplicate name 'left': piece 'left' of split 'split0' is named like layer 'left'"),
    ("  - {split: {sizes: [3, 5], as: [left, right]}, name: sp}\n  - {relu, from: sp}", "6:18", "AS123",
     "'sp' is a split with several outputs: name the piece to read\n   6 |   - {relu, from: sp}"),
    ("  - {split: {sizes: [3, 5], as: [left, right]}}\n  - relu", "6:5", "AS107",
     "hint: add `from: left` (or another piece) to it"),
    ("  - {relu, from: left}\n  - {split: {sizes: [3, 5], as: [left, right]}}\n  - {concat, from: [left, right]}",
     "5:18", "AS124", "forward reference: 'left' is defined after this item"),
    ("  - {group: [{split: {sizes: [3, 5], as: [a, b]}}]}", "5:14", "AS107",
     "split 'split0' ends its list, but it gives several values (a, b), not one to pass on"),
    ("  - {split: {sizes: [3, 5], as: [a, b]}}", "5:5", "AS107", "name them under `outputs:`"),
    ("  - {upsample: {to: imag}}", "5:21", "AS123", "did you mean 'image'?"),
    ("  - {upsample: {to: image, scale: 2}}", "5:16", "AS107", "give exactly one of `scale`, `size` and `to`"),
    ("  - {global_avgpool, name: g}\n  - {upsample: {to: g}, from: image}", "6:21", "AS201",
     "`to` names 'g', a 8 tensor; upsample takes H x W from an image (C, H, W)"),
]


@pytest.mark.parametrize("items, where, code, words", MISTAKES)
def test_mistakes_are_one_located_diagnostic(tmp_path: Path, items: str, where: str, code: str, words: str) -> None:
    message = refused(write(tmp_path, "{image: [8, 5, 7]}", items))
    assert f"spec.yaml:{where}: error[{code}]" in message and words in message, message


def test_a_wrong_sum_is_what_torch_split_refuses_too() -> None:
    with pytest.raises(RuntimeError, match=r"split_sizes to sum exactly to 8 .* got split_sizes=\[3, 4\]"):
        torch.split(torch.zeros(1, 8, 5, 7), [3, 4], 1)


def test_an_unread_piece_is_a_warning(tmp_path: Path) -> None:
    report = archspec.check(write(tmp_path, "{image: [8, 5, 7]}",
                                  "  - {split: {sizes: [3, 5], as: [a, b]}, name: sp}\n  - {relu, from: a}"))
    assert [(w.code, w.message) for w in report.graph.warnings] == [("AS402", "'sp.b' of split 'sp' is never used")]


# --- upsample to another value's size ----------------------------------------------------------

@pytest.mark.parametrize("mode, corners", [("nearest", None), ("bilinear", None), ("bilinear", True)])
def test_upsample_to_is_f_interpolate_to_the_references_size(tmp_path: Path, mode: str, corners: bool | None) -> None:
    extra = f", align_corners: {str(corners).lower()}" if corners is not None else ""
    report = archspec.check(write(tmp_path, "{x: [4, 5, 7], skip: [2, 9, 13]}",
                                  f"  - {{upsample: {{to: skip, mode: {mode}{extra}}}, name: up}}"))
    assert report.output.shape == (4, 9, 13)
    assert report.node("up").reads == ("x", "skip")
    x, skip = torch.randn(2, 4, 5, 7), torch.randn(2, 2, 9, 13)
    want = F.interpolate(x, size=skip.shape[-2:], mode=mode, align_corners=corners)
    with torch.no_grad():
        torch.testing.assert_close(archspec.build(report, seed=0).eval()(x, skip), want, rtol=0, atol=0)
    result = archspec.export(report, tmp_path / "up.onnx")  # verified against PyTorch at batch 1 and 3
    assert result.compared
    got = Session(tmp_path / "up.onnx").run({"x": x.numpy(), "skip": skip.numpy()})["output"]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def dynamic_decoder(tmp_path: Path, mode: str, h: str = "h=64", w: str = "w=64") -> Path:
    """A stride-2 conv and its output upsampled back to the input's size, added to the input: the
    ratio of the two sizes is 2 at even sizes only."""
    path = tmp_path / f"decoder_{mode}.yaml"
    path.write_text(f"""archspec: 1
name: decoder
input: {{image: [3, {h}, {w}]}}
network:
  - {{conv2d: {{out: 3, kernel: 3, stride: 2, padding: 1}}, name: down}}
  - {{upsample: {{to: image, mode: {mode}}}, name: up}}
  - {{add, from: [up, image]}}
""")
    return path


def hand_written_decoder(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mode: str) -> torch.Tensor:
    return F.interpolate(F.conv2d(x, weight, bias, stride=2, padding=1), size=x.shape[-2:], mode=mode) + x


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsample_to_exports_dynamic_sizes(tmp_path: Path, mode: str) -> None:
    """`[3, h=64, w=64]`: the sizes come from the reference's Shape in the graph, so the export is
    right at every size, odd ones included (71 -> 36 -> 71, a ratio of 71/36)."""
    report = archspec.check(dynamic_decoder(tmp_path, mode))
    result = archspec.export(report, tmp_path / "dec.onnx")
    assert set(result.dynamic_axes) == {"batch", "h", "w"}
    assert [c.input_shape for c in result.checks] == [(1, 3, 64, 64), (3, 3, 71, 71)]  # verified vs PyTorch
    model = onnx.load(str(tmp_path / "dec.onnx"))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "h", "w"]
    assert any(n.op_type == "Shape" and n.input[0] == "image" for n in model.graph.node)  # the reference's sizes
    module = archspec.build(report, seed=0).eval()
    session = Session(tmp_path / "dec.onnx")
    for shape in [(2, 3, 50, 77), (1, 3, 33, 20), (1, 3, 64, 64)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            want = hand_written_decoder(x, module.down.weight, module.down.bias, mode)
        got = session.run({"image": x.numpy()})["output"]
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_upsample_to_a_power_of_two_is_one_resize(tmp_path: Path) -> None:
    """At fixed sizes with a ratio of 2, the form is one Resize whose sizes are the reference's Shape."""
    report = archspec.check(dynamic_decoder(tmp_path, "nearest", "64", "64"))
    archspec.export(report, tmp_path / "dec.onnx")
    nodes = onnx.load(str(tmp_path / "dec.onnx")).graph.node
    (resize,) = [n for n in nodes if n.op_type == "Resize"]
    producers = {o: n for n in nodes for o in n.output}

    def reads(value: str) -> set[str]:
        n = producers.get(value)
        return {value} if n is None else set().union(*(reads(i) for i in n.input if i))

    assert "image" in reads(resize.input[3])


# --- the example: a tiny C2f backbone and FPN neck -----------------------------------------------

class Conv(nn.Module):
    """ultralytics Conv: conv (no bias), batch norm, SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """ultralytics C2f with n=1 (registered cv1, m, cv2: the spec's order, for the copy by position)."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.cv1 = Conv(c1, c2)
        self.m = Bottleneck(c2 // 2)
        self.cv2 = Conv(3 * (c2 // 2), c2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class C2fFPN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.down1, self.c3 = Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), C2f(32, 32)
        self.down2, self.c4, self.down3, self.c5 = Conv(32, 64, 3, 2), C2f(64, 64), Conv(64, 128, 3, 2), C2f(128, 128)
        self.p4, self.p3 = C2f(192, 64), C2f(96, 32)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c3 = self.c3(self.down1(self.stem(x)))
        c4 = self.c4(self.down2(c3))
        c5 = self.c5(self.down3(c4))
        p4 = self.p4(torch.cat([F.interpolate(c5, size=c4.shape[-2:], mode="nearest"), c4], 1))
        p3 = self.p3(torch.cat([F.interpolate(p4, size=c3.shape[-2:], mode="nearest"), c3], 1))
        return p3, p4, c5


def trained_like(report: archspec.Report) -> tuple[nn.Module, C2fFPN]:
    """The built example with every tensor random (batch-norm statistics too), and the reference
    holding the same tensors, copied by position."""
    built = archspec.build(report, seed=0).eval()
    gen = torch.Generator().manual_seed(3)
    state = {k: (torch.rand(v.shape, generator=gen) + 0.5 if k.endswith("running_var") else
                 torch.randn(v.shape, generator=gen) * 0.3) if v.is_floating_point() else v
             for k, v in built.state_dict().items()}
    built.load_state_dict(state)
    ref = C2fFPN().eval()
    theirs = ref.state_dict()
    assert [tuple(v.shape) for v in theirs.values()] == [tuple(v.shape) for v in state.values()]
    ref.load_state_dict(dict(zip(theirs, state.values())))
    return built, ref


def test_example_counts_are_the_hand_written_networks() -> None:
    report = archspec.check(EXAMPLE)
    assert not report.graph.warnings
    ref = C2fFPN()
    assert report.totals.params == sum(p.numel() for p in ref.parameters()) == 296_208
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        ref(torch.randn(1, 3, 64, 64))
    assert 2 * report.totals.macs == counter.get_total_flops() == 2 * 14_204_928
    assert {k: v.shape for k, v in report.outputs.items()} == {"p3": (32, 16, 16), "p4": (64, 8, 8),
                                                               "p5": (128, 4, 4)}


@pytest.mark.parametrize("size", [(64, 64), (71, 71), (50, 90)])
def test_example_equals_the_hand_written_network(size: tuple[int, int]) -> None:
    report = archspec.check(EXAMPLE)
    built, ref = trained_like(report)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        for got, want in zip(built(x), ref(x), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_example_exports_dynamic_and_runs_at_other_sizes(tmp_path: Path) -> None:
    report = archspec.check(EXAMPLE)
    built, ref = trained_like(report)
    weights = {k: v.numpy() for k, v in built.state_dict().items()}
    result = archspec.export(report, tmp_path / "fpn.onnx", weights=weights)
    assert set(result.dynamic_axes) == {"batch", "h", "w"}
    assert [c.input_shape for c in result.checks] == [(1, 3, 64, 64), (3, 3, 71, 71)]
    session = Session(tmp_path / "fpn.onnx")
    for shape in [(2, 3, 50, 90), (1, 3, 37, 37)]:  # sizes the export did not check: 37 -> 19, 10, 5, 3
        x = torch.randn(*shape)
        got = session.run({"image": x.numpy()})
        with torch.no_grad():
            want = dict(zip(["p3", "p4", "p5"], ref(x)))
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value.numpy(), rtol=1e-4, atol=1e-5)


def test_summary_shows_every_piece(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from archspec.cli import main

    path = write(tmp_path, "{image: [8, 5, 7]}", "  - {split: {sizes: [3, 5], as: [left, right]}, name: sp}\n"
                 "  - {relu, from: right, name: act}\n  - {concat, from: [left, act]}")
    assert main(["summary", str(path)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["sp"][:3] == ["sp", "split", "3x5x7,"] and rows["sp"][3] == "5x5x7"
    assert rows["act"][-1] == "right" and rows["concat0"][-2:] == ["left,", "act"]  # as `from:` writes them


def test_report_and_json_give_every_piece(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Each piece's name and shape (torch.split's), in the report and in both commands' JSON, as the
    JSON gives the model's `outputs`: {name: shape}."""
    from archspec.cli import main

    path = write(tmp_path, "{image: [8, 5, 7]}", "  - {split: {sizes: [3, 5], as: [left, right]}, name: sp}",
                 {"first": "left", "second": "right"})
    report = archspec.check(path)
    want = [tuple(t.shape[1:]) for t in torch.split(torch.zeros(1, 8, 5, 7), [3, 5], 1)]
    node = report.node("sp")
    assert [(name, t.shape) for name, t in node.outputs] == list(zip(["left", "right"], want))
    assert node.output == node.outputs[0][1]  # the first piece, as every row has one output
    assert main(["summary", str(path), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (row,) = summary["layers"]
    assert row["outputs"] == {"left": list(want[0]), "right": list(want[1])}
    assert summary["outputs"] == {"first": list(want[0]), "second": list(want[1])}
    assert main(["check", str(path), "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["outputs"] == summary["outputs"] and entry["output_shape"] == list(want[0])
    one = archspec.check(write(tmp_path, "{image: [8, 5, 7]}", "  - relu"))
    assert one.node("relu0").outputs == ()  # one output: `output` says it all


SPECS = sorted([*(ROOT / "specs").glob("*.yaml"), *(ROOT / "examples").glob("*.yaml"),
                *(ROOT / "tests" / "data").glob("*.yaml")])


def test_reads_are_the_names_from_writes() -> None:
    """Every layer with a `from:` reads the names as the spec writes them there (a block's name, not
    its last layer's flattened path; a piece's `as:` name), over the zoo, the examples and the test specs."""
    checked = []
    for path in SPECS:
        try:
            report = archspec.check(path)
        except SpecError:
            continue  # tests/data also holds specs with mistakes
        for node in report.graph.nodes:
            item = report.graph.doc.data
            for key in node.yaml_path:
                item = item[key]
            if isinstance(item, dict) and "from" in item:
                written = item["from"] if isinstance(item["from"], list) else [item["from"]]
                reads = report.node(node.scope).reads
                assert list(reads[:len(written)]) == written, (path.name, node.scope, reads)
                checked.append(tuple(written))
    assert len(checked) > 50 and len(set(checked)) > 10  # not vacuous: 74 reads, 14 different, when written


def test_shufflenet_unit_written_with_chunk_is_the_zoo_spec(tmp_path: Path) -> None:
    """ShuffleNetV2's basic unit as torchvision writes it, `x1, x2 = x.chunk(2, dim=1)`, in place of the
    zoo's two slices: the published counts and, with the same tensors, the same outputs."""
    zoo = ROOT / "specs" / "shufflenet_v2_x1_0.yaml"
    slices = '''      - concat:
          branch1: [{slice: {dim: 0, end: "c // 2"}}]
          branch2: [{slice: {dim: 0, start: "c // 2"}}, {branch: {c: "c // 2"}}]
'''
    chunk = '''      - {chunk: {as: [x1, x2]}}
      - {branch: {c: "c // 2"}, from: x2, name: branch2}
      - {concat, from: [x1, branch2]}
'''
    text = zoo.read_text()
    assert slices in text
    (tmp_path / "shufflenet_chunk.yaml").write_text(text.replace(slices, chunk))
    ours, theirs = archspec.check(tmp_path / "shufflenet_chunk.yaml"), archspec.check(zoo)
    counts = (2_278_604, 144_907_992)  # torchvision shufflenet_v2_x1_0 (tests/test_zoo.py)
    assert (ours.totals.params, ours.totals.macs) == (theirs.totals.params, theirs.totals.macs) == counts
    a, b = archspec.build(ours, seed=0).eval(), archspec.build(theirs, seed=1).eval()
    b.load_state_dict(dict(zip(b.state_dict(), a.state_dict().values())))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_chunk_of_a_dynamic_axis_exports_dynamic(tmp_path: Path) -> None:
    """Chunking `time` needs an even length: the export checks a second size where that holds, and its
    Split sizes come from the input's Shape."""
    report = archspec.check(write(tmp_path, "{x: [time=6, 10]}",
                                  "  - {chunk: {axis: time, as: [a, b]}}\n  - {concat, from: [b, a]}"))
    result = archspec.export(report, tmp_path / "c.onnx")
    assert set(result.dynamic_axes) == {"batch", "time"}
    assert [c.input_shape for c in result.checks] == [(1, 6, 10), (3, 14, 10)]  # 13 is odd
    x = torch.randn(2, 10, 10)
    a, b = torch.chunk(x, 2, 1)
    got = Session(tmp_path / "c.onnx").run({"x": x.numpy()})["output"]
    np.testing.assert_array_equal(got, torch.cat([b, a], 2).numpy())


def test_fixed_sizes_on_a_dynamic_axis_export_only_fixed(tmp_path: Path) -> None:
    report = archspec.check(write(tmp_path, "{x: [time=6, 10]}", "  - {split: {sizes: [1, 5], axis: time, as: [a, b]}}",
                                  {"a": "a", "b": "b"}))
    with pytest.raises(ExportError, match=r"split 'split0' .* needs time == 6"):
        archspec.export(report, tmp_path / "s.onnx")
    assert archspec.export(report, tmp_path / "s.onnx", dynamic="batch").compared
