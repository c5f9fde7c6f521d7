"""`archspec plot` and the spec's `meta:`: the zoo's bubbles sit at the checker's exact counts and
at the published accuracies, cited."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import archspec
from archspec.errors import SpecError
from archspec.plot import figure, points

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
CLI = [sys.executable, "-m", "archspec.cli"]

# torchvision's documented ImageNet-1K accuracies of its IMAGENET1K_V1 weights (acc@1, acc@5), as
# listed on https://pytorch.org/vision/stable/models.html: the independent oracle for the specs' meta.
TORCHVISION = {
    "alexnet": (56.522, 79.066), "vgg11": (69.020, 88.628), "vgg11_bn": (70.370, 89.810),
    "vgg16_bn": (73.360, 91.516),
    "vgg13": (69.928, 89.246), "vgg16": (71.592, 90.382), "vgg19": (72.376, 90.876),
    "googlenet": (69.778, 89.530), "inception_v3": (77.294, 93.450), "resnet18": (69.758, 89.078),
    "resnet34": (73.314, 91.420), "resnet50": (76.130, 92.862), "resnet101": (77.374, 93.546),
    "resnet152": (78.312, 94.046),
}


@pytest.fixture(scope="module")
def zoo() -> list[archspec.Report]:
    return [archspec.check(p) for p in SPECS]


def test_zoo_accuracies_are_torchvisions_and_cited(zoo: list[archspec.Report]) -> None:
    recorded = {r.graph.name: r.graph.spec.meta for r in zoo if r.graph.spec.meta is not None}
    assert set(recorded) == set(TORCHVISION)
    for name, meta in recorded.items():
        assert (meta.top1, meta.top5) == TORCHVISION[name]
        assert "torchvision" in meta.source and "IMAGENET1K_V1" in meta.source


def test_points_are_exact_counts_and_published_accuracy(zoo: list[archspec.Report]) -> None:
    pts, missing = points(zoo)
    assert {p.name for p in pts} == set(TORCHVISION)
    assert set(missing) == {r.graph.name for r in zoo} - set(TORCHVISION)
    by_name = {r.graph.name: r for r in zoo}
    for p in pts:
        assert (p.x, p.y, p.params) == (by_name[p.name].totals.macs, TORCHVISION[p.name][0],
                                        by_name[p.name].totals.params)
    counts, none_missing = points(zoo, x="params", y="macs")
    assert len(counts) == len(zoo) and not none_missing


def test_figure_draws_the_points_with_area_by_parameters(zoo: list[archspec.Report]) -> None:
    pytest.importorskip("matplotlib")
    fig, _ = figure(zoo)
    ax = fig.axes[0]
    (bubbles,) = ax.collections
    pts, _ = points(zoo)
    assert [tuple(o) for o in bubbles.get_offsets()] == [(p.x, p.y) for p in pts]
    sizes = bubbles.get_sizes()
    order = sorted(range(len(pts)), key=lambda i: pts[i].params)
    assert list(sorted(sizes)) == [sizes[i] for i in order]  # a larger model, a larger bubble
    assert ax.get_xscale() == "log" and {t.get_text() for t in ax.texts} == set(TORCHVISION)


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_cli_plot_writes_the_picture(suffix: str, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / f"zoo{suffix}"
    done = subprocess.run([*CLI, "plot", str(ROOT / "specs"), "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out} ({len(TORCHVISION)} specs)\n"
    assert "left out, no top1 recorded: " in done.stderr and " bilstm_tagger," in done.stderr
    data = out.read_bytes()
    if suffix == ".png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        texts = {"".join(e.itertext()).strip() for e in ET.fromstring(data).iter("{http://www.w3.org/2000/svg}text")}
        assert set(TORCHVISION) <= texts


def test_committed_zoo_picture_shows_the_cited_specs() -> None:
    svg = ET.parse(ROOT / "docs" / "images" / "zoo.svg")
    texts = {"".join(e.itertext()).strip() for e in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert set(TORCHVISION) <= texts and "docs/images/zoo.svg" in (ROOT / "README.md").read_text()


def test_cli_plot_without_accuracy_says_how_to_plot_counts(tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "plot", str(ROOT / "specs" / "lenet.yaml"), "-o", str(tmp_path / "x.svg")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "--x params --y macs" in done.stderr and "Traceback" not in done.stderr
    bad = subprocess.run([*CLI, "plot", str(ROOT / "specs"), "-o", str(tmp_path / "x.jpg")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and ".svg" in bad.stderr and not (tmp_path / "x.jpg").exists()


def test_an_accuracy_needs_its_source() -> None:
    text = textwrap.dedent("""\
        archspec: 1
        name: t
        input: {image: [3, 8, 8]}
        meta: {top1: 71.5}
        network: [flatten, {linear: {out: 2}}]
        """)
    with pytest.raises(SpecError) as err:
        archspec.check(archspec.load_text(text))
    (d,) = err.value.diagnostics
    assert (d.code, d.loc.line, d.path) == ("AS107", 4, "meta") and "source" in d.message
    with pytest.raises(SpecError) as err:
        archspec.check(archspec.load_text(text.replace("{top1: 71.5}", "{top1: 171.5, source: x}")))
    assert [(d.code, d.path) for d in err.value.diagnostics] == [("AS104", "meta.top1")]
