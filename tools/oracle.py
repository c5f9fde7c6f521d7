"""The torchvision/timm oracle: a reference model with random weights (nothing downloaded) is saved
as a checkpoint, imported with `archspec weights import`, and the spec built with the imported
weights must give the reference's outputs in eval mode; mismatched checkpoints must be refused.
Beside each row: parameters (archspec check / the reference) and MACs (archspec check /
FlopCounterMode FLOPs / 2 of the reference at batch 1), folded in from the former
tools/zoo_reference.py.

Runs in the oracle environment (torchvision cannot live beside the project's torch):

    python3 -m venv /tmp/oracle && /tmp/oracle/bin/pip install torch torchvision timm safetensors pydantic rich
    /tmp/oracle/bin/pip install --no-deps -e .
    /tmp/oracle/bin/python tools/oracle.py [SPEC ...] [--markdown docs/oracle.md]

To add a model, append a `Pair` to PAIRS: the spec's file stem and a function building the
reference module. A pair whose spec is not in specs/ yet is listed as such, not failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torchvision
import torchvision.models as tvm
from torch.utils.flop_counter import FlopCounterMode

import archspec

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5  # max|ref - ours| / max(1, max|ref|), the export's parity criterion


def single(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The reference's one output (torchvision's segmentation models return a dict)."""
    y = model(x)
    return (y["out"] if isinstance(y, dict) else y,)


def googlenet_with_aux(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """logits, aux1, aux2, as the spec's `outputs:`. torchvision runs its auxiliary heads only in
    training mode (GoogLeNet._forward: `if self.training: aux1 = self.aux1(x)`), where batch-norm
    statistics come from the batch and dropout is random; so the model runs in eval mode and its own
    aux1/aux2 modules are called, in eval mode, on the inception4a/inception4d outputs that
    `_forward` would have passed them (captured by forward hooks): torchvision's heads, weights and
    inputs, inference semantics on both sides."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
             for name in ("inception4a", "inception4d")]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, model.aux1(seen["inception4a"]), model.aux2(seen["inception4d"])


@dataclass(frozen=True)
class Pair:
    spec: str  # specs/<spec>.yaml
    source: str  # how the table names the reference
    make: Callable[[], torch.nn.Module]
    map: str | None = None  # a --map file (relative to the repository) for the hard cases
    outputs: Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, ...]] = single  # in `outputs:` order


PAIRS = [
    Pair("alexnet", "torchvision alexnet", lambda: tvm.alexnet()),
    Pair("vgg11", "torchvision vgg11", lambda: tvm.vgg11()),
    Pair("vgg11_bn", "torchvision vgg11_bn", lambda: tvm.vgg11_bn()),
    Pair("vgg13", "torchvision vgg13", lambda: tvm.vgg13()),
    Pair("vgg16", "torchvision vgg16", lambda: tvm.vgg16()),
    Pair("vgg16_bn", "torchvision vgg16_bn", lambda: tvm.vgg16_bn()),
    Pair("vgg19", "torchvision vgg19", lambda: tvm.vgg19()),
    Pair("googlenet", "torchvision googlenet", lambda: tvm.googlenet(aux_logits=False, init_weights=True)),
    Pair("googlenet_aux", "torchvision googlenet(aux_logits=True), aux heads on inception4a/4d",
         lambda: tvm.googlenet(aux_logits=True, init_weights=True), outputs=googlenet_with_aux),
    Pair("inception_v3", "torchvision inception_v3", lambda: tvm.inception_v3(aux_logits=False, init_weights=True)),
    Pair("resnet18", "torchvision resnet18", lambda: tvm.resnet18()),
    Pair("resnet34", "torchvision resnet34", lambda: tvm.resnet34()),
    Pair("resnet50", "torchvision resnet50", lambda: tvm.resnet50()),
    Pair("resnet101", "torchvision resnet101", lambda: tvm.resnet101()),
    Pair("resnet152", "torchvision resnet152", lambda: tvm.resnet152()),
    Pair("squeezenet1_1", "torchvision squeezenet1_1", lambda: tvm.squeezenet1_1()),
    Pair("mobilenet_v2", "torchvision mobilenet_v2", lambda: tvm.mobilenet_v2()),
    Pair("densenet121", "torchvision densenet121", lambda: tvm.densenet121()),
    Pair("resnext50_32x4d", "torchvision resnext50_32x4d", lambda: tvm.resnext50_32x4d()),
    Pair("shufflenet_v2_x1_0", "torchvision shufflenet_v2_x1_0", lambda: tvm.shufflenet_v2_x1_0()),
    Pair("efficientnet_b0", "torchvision efficientnet_b0", lambda: tvm.efficientnet_b0()),
    Pair("mobilenet_v3_large", "torchvision mobilenet_v3_large", lambda: tvm.mobilenet_v3_large()),
    Pair("regnet_y_400mf", "torchvision regnet_y_400mf", lambda: tvm.regnet_y_400mf()),
    Pair("fcn_resnet50", "torchvision fcn_resnet50",
         lambda: tvm.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)),
    Pair("convnext_tiny", "torchvision convnext_tiny", lambda: tvm.convnext_tiny()),
    Pair("vit_b_16", "torchvision vit_b_16", lambda: tvm.vit_b_16()),
    Pair("inception_v4", "timm inception_v4", lambda: timm.create_model("inception_v4", pretrained=False)),
    Pair("inception_resnet_v2", "timm inception_resnet_v2",
         lambda: timm.create_model("inception_resnet_v2", pretrained=False)),
]


@dataclass(frozen=True)
class Row:
    spec: str
    source: str
    result: str  # "equal", "DIFFERENT", "refused: ...", "no spec"
    tensors: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    seconds: float = 0.0
    params: tuple[int, int] = (0, 0)  # archspec check, the reference
    macs: tuple[int, int] = (0, 0)  # archspec check, FlopCounterMode / 2 of the reference (batch 1)
    notes: tuple[str, ...] = ()  # the import's notes, first clause each


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BatchNorm statistics (fresh ones are 0/1 and would hide a swap)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 1000, (), generator=gen)))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * (0.5 / max(1, t[0].numel()) ** 0.5))
    return model.eval()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archspec.cli", *args], capture_output=True, text=True, check=False)


def check_pair(pair: Pair, tmp: Path) -> Row:
    spec = ROOT / "specs" / f"{pair.spec}.yaml"
    if not spec.exists():
        return Row(pair.spec, pair.source, "no spec")
    started = time.perf_counter()
    report = archspec.check(spec)
    reference = randomized(pair.make())
    x = torch.randn(2, *report.graph.input.shape, generator=torch.Generator().manual_seed(1))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        pair.outputs(reference, x[:1])  # every head the spec has, auxiliary ones included
    counts = {"params": (report.totals.params, sum(p.numel() for p in reference.parameters())),
              "macs": (report.totals.macs, counter.get_total_flops() // 2)}
    torch.save(reference.state_dict(), tmp / "ckpt.pth")
    extra = ["--map", str(ROOT / pair.map)] if pair.map else []
    r = cli("weights", "import", str(spec), str(tmp / "ckpt.pth"), "-o", str(tmp / "w.safetensors"), *extra)
    if r.returncode != 0:
        return Row(pair.spec, pair.source, "refused: " + r.stderr.strip().splitlines()[0][:160],
                   seconds=time.perf_counter() - started, **counts)
    notes = tuple(line.removeprefix("note: ").split(" (")[0].split(":")[0] for line in r.stdout.splitlines()
                  if line.startswith("note: "))
    try:
        ours = archspec.build(report, weights=tmp / "w.safetensors").eval()
    except archspec.ArchspecError as exc:  # the imported file does not load: a row, not the end of the run
        return Row(pair.spec, pair.source, f"FAILED to load: {str(exc)[:160]}", seconds=time.perf_counter() - started,
                   **counts)
    with torch.no_grad():
        want, got = pair.outputs(reference, x), ours(x)
    got = got if isinstance(got, tuple) else (got,)  # one per `outputs:` entry, in order
    assert len(got) == len(want), (pair.spec, len(got), len(want))
    err = max(float((w - g).abs().max()) for w, g in zip(want, got))
    rel = max(float((w - g).abs().max()) / max(1.0, float(w.abs().max())) for w, g in zip(want, got))
    return Row(pair.spec, pair.source, "equal" if rel <= TOLERANCE else "DIFFERENT", len(ours.state_dict()), err, rel,
               time.perf_counter() - started, notes=notes, **counts)


def refusals(tmp: Path) -> list[tuple[str, bool, str]]:
    """Deliberately mismatched checkpoints: each must exit 1 with the side-by-side diagnostic."""
    out = []
    torch.save(tvm.resnet34().state_dict(), tmp / "r34.pth")
    sd = tvm.resnet18().state_dict()
    sd["fc.weight"] = sd["fc.weight"].t().contiguous()
    torch.save(sd, tmp / "r18_transposed.pth")
    sd = tvm.resnet18().state_dict()  # layer1.0's conv2/bn2 stored before its conv1/bn1: same shapes, names crossed
    block = [k for k in sd if k.startswith("layer1.0.")]
    second = [k for k in block if ".conv2." in k or ".bn2." in k]
    at = list(sd).index(block[0])
    order = list(sd)[:at] + second + [k for k in block if k not in second] + list(sd)[at + len(block):]
    torch.save({k: sd[k] for k in order}, tmp / "r18_swapped.pth")
    for what, ckpt in (("resnet34 checkpoint into resnet18", "r34.pth"),
                       ("resnet18 checkpoint, fc.weight transposed", "r18_transposed.pth"),
                       ("resnet18 checkpoint, layer1.0's conv1/bn1 and conv2/bn2 swapped", "r18_swapped.pth")):
        r = cli("weights", "import", str(ROOT / "specs/resnet18.yaml"), str(tmp / ckpt), "-o", str(tmp / "x.safetensors"))
        marked = [line.strip() for line in r.stderr.splitlines() if line.lstrip().startswith(">")]
        ok = r.returncode == 1 and len(marked) == 1 and "|" in marked[0] and not (tmp / "x.safetensors").exists()
        first = r.stderr.splitlines()[0].split(": ", 2)[-1] if r.stderr else "(no message)"
        out.append((what, ok, first.replace(str(tmp) + "/", "")))
        out.append(("", ok, marked[0] if marked else ""))
    return out


def markdown(rows: list[Row], refused: list[tuple[str, bool, str]]) -> str:
    versions = (f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}; "
                "random weights and BatchNorm statistics, eval mode, batch 2.")
    header = ("| spec | reference | result | tensors | max abs diff | rel. diff | params (archspec / reference) "
              "| MACs (archspec / FlopCounterMode÷2) | import notes | seconds |")
    lines = [versions, "", header, "|---|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        counts = (f"{_same(*r.params)} | {_same(*r.macs)}" if r.params[0] else " | ")
        if r.result in ("equal", "DIFFERENT"):
            lines.append(f"| {r.spec} | {r.source} | {r.result} | {r.tensors} | {r.max_abs:.2e} | {r.max_rel:.2e} | "
                         f"{counts} | {'; '.join(r.notes)} | {r.seconds:.1f} |")
        else:
            lines.append(f"| {r.spec} | {r.source} | {r.result} | | | | {counts} | | "
                         f"{f'{r.seconds:.1f}' if r.seconds else ''} |")
    lines += ["", "| mismatched checkpoint | refused with the side-by-side diagnostic | message |", "|---|---|---|"]
    for what, ok, message in refused:
        escaped = message.replace("|", "\\|")  # a pipe inside a table cell
        lines.append(f"| {what} | {'yes' if ok else 'NO'} | `{escaped}` |")
    return "\n".join(lines) + "\n"


def _same(ours: int, theirs: int) -> str:
    return f"{ours:,} (equal)" if ours == theirs else f"{ours:,} / {theirs:,}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="spec stems to check (default: every pair)")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    args = parser.parse_args()
    pairs = [p for p in PAIRS if not args.specs or p.spec in args.specs]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in pairs:
            rows.append(check_pair(pair, Path(tmp)))
            print(rows[-1], flush=True)
        refused = refusals(Path(tmp))
    text = markdown(rows, refused)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    bad = [r for r in rows if r.result not in ("equal", "no spec")] + [r for r in refused if not r[1]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
