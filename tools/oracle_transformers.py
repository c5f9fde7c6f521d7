"""Weight-transfer oracle for the transformer-era specs (issue 13 part B): convnext_tiny and
vit_b_16 against torchvision, and the peephole LSTM against its hand-written cell.

Runs in the oracle environment (torch 2.14 + torchvision 0.29, see DEVELOPERS.md), against this
checkout, nothing downloaded (random weights):

    PYTHONPATH=. /tmp/oracle/bin/python tools/oracle_transformers.py

For each spec: parameter counts (archspec check, the built module, torchvision), MACs (archspec)
beside FlopCounterMode/2 of the torchvision model, then torchvision's random weights copied into
the archspec module by an explicit name map (every tensor used once, shapes equal), and the two
outputs compared in eval mode. Weights that start at a constant (layer scale 1e-6, zero class
token, torchvision ViT's zero head, LayerNorm 1/0) are re-drawn first, so that every tensor influences the output.
Prints a Markdown table (docs/oracle_transformers.md records it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import archspec

ROOT = Path(__file__).resolve().parent.parent


def convnext_key(key: str) -> str:
    """torchvision convnext_tiny state-dict key -> the archspec spec's key."""
    stage_of = {"1": "1", "3": "2", "5": "3", "7": "4"}
    down_of = {"2": "2", "4": "3", "6": "4"}
    rules = [
        (r"features\.0\.0\.(.*)", lambda m: f"stem.conv.{m[1]}"),
        (r"features\.0\.1\.(.*)", lambda m: f"stem.norm.{m[1]}"),
        (r"features\.([1357])\.(\d+)\.layer_scale", lambda m: f"stage{stage_of[m[1]]}.block{m[2]}.layer_scale.scale"),
        (r"features\.([1357])\.(\d+)\.block\.(\d)\.(.*)", lambda m: f"stage{stage_of[m[1]]}.block{m[2]}."
         + {"0": "dwconv", "2": "norm", "3": "pwconv1", "5": "pwconv2"}[m[3]] + f".{m[4]}"),
        (r"features\.([246])\.0\.(.*)", lambda m: f"down{down_of[m[1]]}.norm.{m[2]}"),
        (r"features\.([246])\.1\.(.*)", lambda m: f"down{down_of[m[1]]}.conv.{m[2]}"),
        (r"classifier\.0\.(.*)", lambda m: f"norm.{m[1]}"),
        (r"classifier\.2\.(.*)", lambda m: f"fc.{m[1]}"),
    ]
    return _translate(key, rules)


def vit_key(key: str) -> str:
    """torchvision vit_b_16 state-dict key -> the archspec spec's key."""
    layer = r"encoder\.layers\.encoder_layer_(\d+)\."
    rules = [
        (r"class_token", lambda m: "class_token.token"),
        (r"conv_proj\.(.*)", lambda m: f"conv_proj.{m[1]}"),
        (r"encoder\.pos_embedding", lambda m: "pos_embedding.embedding.weight"),
        (layer + r"ln_1\.(.*)", lambda m: f"encoder{m[1]}.attention_block.ln_1.{m[2]}"),
        (layer + r"self_attention\.(.*)", lambda m: f"encoder{m[1]}.attention_block.self_attention.{m[2]}"),
        (layer + r"ln_2\.(.*)", lambda m: f"encoder{m[1]}.mlp_block.ln_2.{m[2]}"),
        (layer + r"mlp\.0\.(.*)", lambda m: f"encoder{m[1]}.mlp_block.fc1.{m[2]}"),
        (layer + r"mlp\.3\.(.*)", lambda m: f"encoder{m[1]}.mlp_block.fc2.{m[2]}"),
        (r"encoder\.ln\.(.*)", lambda m: f"ln.{m[1]}"),
        (r"heads\.head\.(.*)", lambda m: f"head.{m[1]}"),
    ]
    return _translate(key, rules)


def _translate(key: str, rules) -> str:
    for pattern, make in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return make(m)
    raise KeyError(f"no rule for {key}")


def redraw(model: torch.nn.Module) -> None:
    """Non-constant values for the tensors torchvision starts at a constant."""
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "layer_scale" in name:
            p.data = torch.rand(p.shape, generator=g) * 0.5 + 0.25
        elif p.dim() == 1 or float(p.detach().std()) == 0.0:  # biases, norms, zero-initialised heads and tokens
            p.data = p.data + torch.randn(p.shape, generator=g) * 0.1


def compare(spec: str, builder, translate) -> list[str]:
    report = archspec.check(ROOT / "specs" / f"{spec}.yaml")
    ours = archspec.build(report, seed=0).eval()
    torch.manual_seed(0)
    ref = builder().eval()
    redraw(ref)
    counter = FlopCounterMode(display=False)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with counter, torch.no_grad():
        ref(x[:1])
    grad_counter = FlopCounterMode(display=False)
    with grad_counter:
        ref(x[:1])
    target = ours.state_dict()
    mapped = {translate(k): v for k, v in ref.state_dict().items()}
    assert set(mapped) == set(target), sorted(set(mapped) ^ set(target))[:10]
    bad = [k for k in target if tuple(target[k].shape) != tuple(mapped[k].shape)]
    assert not bad, bad
    ours.load_state_dict(mapped, strict=True)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert float((b[0] - b[1]).abs().max()) > 1e-3, "the reference output does not depend on the input"
    err = float((a - b).abs().max())
    rel = err / max(1.0, float(b.abs().max()))
    ref_params = sum(p.numel() for p in ref.parameters())
    our_params = sum(p.numel() for p in ours.parameters())
    return [f"| {spec} | {report.totals.params:,} | {our_params:,} | {ref_params:,} | {report.totals.macs:,} | "
            f"{counter.get_total_flops() // 2:,} / {grad_counter.get_total_flops() // 2:,} | "
            f"{len(target)} tensors, max abs err {err:.2e} (rel {rel:.2e}), top-1 equal: "
            f"{bool((a.argmax(1) == b.argmax(1)).all())} |"]


def main() -> int:
    import torchvision  # only here: the tests import the key maps above without it

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"archspec from {Path(archspec.__file__).parent}")
    print()
    print("| spec | params (archspec check) | params (built module) | params (torchvision) | MACs (archspec) | "
          "FlopCounterMode/2 (no grad / grad) | weight transfer, eval, batch 2 |")
    print("|---|---|---|---|---|---|---|")
    rows = compare("convnext_tiny", torchvision.models.convnext_tiny, convnext_key)
    rows += compare("vit_b_16", torchvision.models.vit_b_16, vit_key)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
