"""Weight transfer against the reference implementations (torchvision, timm) of the zoo specs.

CI cannot import torchvision, and the environment that has it (torch 2.14 + torchvision + timm)
lacks archspec's dependencies, so the check runs in two steps that share a folder:

  /tmp/oracle/bin/python tools/zoo_reference.py dump DIR [NAME ...]     # reference side
  .venv/bin/python tools/zoo_reference.py compare DIR [NAME ...]        # archspec side

`dump` builds each reference model in eval mode with randomised batch-norm statistics, runs a
seeded input and saves the state dict, input, output, parameter count and FlopCounterMode MACs
(FLOPs / 2, batch 1) to DIR/NAME.pt. `compare` builds the spec, copies the reference tensors in
order (the names differ, the order and shapes must not), runs the same input and prints one
markdown row per spec: params and MACs (ours vs reference) and the largest output difference.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# spec name: (library, builder, keyword arguments, input shape per sample)
REFERENCES = {
    "squeezenet1_1": ("torchvision", "squeezenet1_1", {}, (3, 224, 224)),
    "mobilenet_v2": ("torchvision", "mobilenet_v2", {}, (3, 224, 224)),
    "resnext50_32x4d": ("torchvision", "resnext50_32x4d", {}, (3, 224, 224)),
    "densenet121": ("torchvision", "densenet121", {}, (3, 224, 224)),
    "shufflenet_v2_x1_0": ("torchvision", "shufflenet_v2_x1_0", {}, (3, 224, 224)),
    "efficientnet_b0": ("torchvision", "efficientnet_b0", {}, (3, 224, 224)),
    "mobilenet_v3_large": ("torchvision", "mobilenet_v3_large", {}, (3, 224, 224)),
    "regnet_y_400mf": ("torchvision", "regnet_y_400mf", {}, (3, 224, 224)),
    "fcn_resnet50": ("torchvision.segmentation", "fcn_resnet50",
                     {"num_classes": 21, "aux_loss": False, "weights_backbone": None}, (3, 520, 520)),
    "inception_v4": ("timm", "inception_v4", {}, (3, 299, 299)),
    "inception_resnet_v2": ("timm", "inception_resnet_v2", {}, (3, 299, 299)),
}


def reference_model(name: str) -> torch.nn.Module:
    library, builder, kwargs, _ = REFERENCES[name]
    if library == "timm":
        import timm

        return timm.create_model(builder, pretrained=False, **kwargs)
    import torchvision.models
    import torchvision.models.segmentation

    module = torchvision.models.segmentation if library.endswith("segmentation") else torchvision.models
    return getattr(module, builder)(weights=None, **kwargs)


def randomize_bn_stats(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def dump(folder: Path, names: list[str]) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        torch.manual_seed(0)
        model = reference_model(name).eval()
        with torch.no_grad():
            randomize_bn_stats(model)
            x = torch.randn(1, *REFERENCES[name][3], generator=torch.Generator().manual_seed(2))
            counter = FlopCounterMode(display=False)
            with counter:
                y = model(x)
        y = y["out"] if isinstance(y, dict) else y
        params = sum(p.numel() for p in model.parameters())
        torch.save({"state": model.state_dict(), "x": x, "y": y, "params": params,
                    "macs": counter.get_total_flops() // 2}, folder / f"{name}.pt")
        print(f"{name}: params {params:,}, MACs {counter.get_total_flops() // 2:,}")


def compare(folder: Path, names: list[str]) -> int:
    import archspec

    print("| spec | params (archspec) | params (reference) | MACs (archspec) | MACs (reference) | "
          "max abs output difference | max abs output |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    failures = 0
    for name in names:
        ref = torch.load(folder / f"{name}.pt", weights_only=True)
        report = archspec.check(ROOT / "specs" / f"{name}.yaml")
        module = archspec.build(report).eval()
        ours, theirs = list(module.state_dict().items()), list(ref["state"].items())
        shapes = [tuple(t.shape) for _, t in ours], [tuple(t.shape) for _, t in theirs]
        if shapes[0] != shapes[1]:
            at = next((i for i, (a, b) in enumerate(zip(*shapes)) if a != b), min(map(len, shapes)))
            print(f"| {name} | tensors differ at #{at}: ours {ours[at][0] if at < len(ours) else '-'} "
                  f"{shapes[0][at] if at < len(ours) else ''}, reference {theirs[at][0] if at < len(theirs) else '-'} "
                  f"{shapes[1][at] if at < len(theirs) else ''} | | | | | |")
            failures += 1
            continue
        module.load_state_dict(OrderedDict((k, v) for (k, _), (_, v) in zip(ours, theirs)))
        with torch.no_grad():
            y = module(ref["x"])
        diff = (y - ref["y"]).abs().max().item()
        ok = (report.totals.params == ref["params"] and report.totals.macs == ref["macs"]
              and torch.allclose(y, ref["y"], rtol=1e-4, atol=1e-4 * ref["y"].abs().max().item()))
        failures += not ok
        print(f"| {name} | {report.totals.params:,} | {ref['params']:,} | {report.totals.macs:,} | "
              f"{ref['macs']:,} | {diff:.2e} | {ref['y'].abs().max().item():.2f} |" + ("" if ok else " MISMATCH"))
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["dump", "compare"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("names", nargs="*", help=f"default: all ({', '.join(REFERENCES)})")
    args = parser.parse_args()
    names = args.names or list(REFERENCES)
    if args.step == "dump":
        dump(args.folder, names)
        return 0
    return compare(args.folder, names)


if __name__ == "__main__":
    sys.exit(main())
