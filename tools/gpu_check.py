#!/usr/bin/env python3
"""The GPU check of issue #5, for a machine with an NVIDIA GPU (CI has none):

    pip uninstall -y onnxruntime && pip install -e '.[gpu]'   # onnxruntime-gpu in place of onnxruntime
    python tools/gpu_check.py                                 # lenet, resnet18, gru_classifier, resnet50
    python tools/gpu_check.py specs/vgg16.yaml --json gpu.json

Per spec: export with the usual CPU verification, then the same weights and input through PyTorch on
CUDA and through archspec's onnxruntime `Session(device="cuda")` (strict: an error if onnxruntime
would fall back to the CPU), compared with each other and with the CPU reference; then batch-1 and
batch-8 latency of both on the GPU (synchronized; onnxruntime's figure includes the host-device copies
of numpy inputs). TF32 is switched off in torch and in onnxruntime, so both compute in float32.

Exit status: 0 all equal within the tolerance, 1 a mismatch or failure, 2 CUDA not usable (says why).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["lenet", "resnet18", "gru_classifier", "resnet50"]
TOLERANCE = 1e-4  # relative to max(1, |output|): GPU kernels sum in another order than the CPU's


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import onnxruntime as ort
    import torch

    import archspec
    from archspec.exporter import example_input
    from archspec.runtime import DeviceError, Session, time_interleaved

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    specs = [Path(s) for s in args.specs] or [ROOT / "specs" / f"{n}.yaml" for n in DEFAULT]

    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}), "
          f"onnxruntime {ort.__version__} providers {ort.get_available_providers()}")
    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device; nothing to check", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    results, failed = [], False
    for spec in specs:
        report = archspec.check(spec)
        module = archspec.build(report, seed=0).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            archspec.export(report, path, weights=module.state_dict())
            try:
                session = Session(path, device="cuda", cuda_options={"use_tf32": "0"})
            except DeviceError as exc:
                print(f"gpu_check: {exc}", file=sys.stderr)
                return 2
        gpu_module = module.to("cuda")
        row = {"spec": spec.stem, "providers": list(session.providers)}
        for batch in (1, 8):
            x = torch.from_numpy(example_input(report, (batch, *report.graph.input.shape), seed=1))
            with torch.inference_mode():
                ref = archspec.build(report, seed=0).eval()(x).numpy()  # the CPU reference
                x_gpu = x.to("cuda")
                torch_gpu = gpu_module(x_gpu).cpu().numpy()
                ort_gpu = session.run({report.graph.input.name: x.numpy()})[report.graph.output_name]
                scale = max(1.0, float(np.abs(ref).max()))
                errors = {"ort_cuda_vs_torch_cuda": float(np.abs(ort_gpu - torch_gpu).max()) / scale,
                          "ort_cuda_vs_cpu": float(np.abs(ort_gpu - ref).max()) / scale,
                          "torch_cuda_vs_cpu": float(np.abs(torch_gpu - ref).max()) / scale}

                def torch_call() -> None:
                    gpu_module(x_gpu)
                    torch.cuda.synchronize()

                t_torch, t_ort = time_interleaved(
                    [torch_call, session.run_fn({report.graph.input.name: x.numpy()})], rounds=10, warmup=5)
            ok = all(e <= TOLERANCE for e in errors.values())
            failed |= not ok
            row[f"batch{batch}"] = {"errors": errors, "ok": ok, "torch_ms": t_torch.median * 1e3,
                                    "ort_ms": t_ort.median * 1e3}
            print(f"{spec.stem} batch {batch}: {'ok' if ok else 'MISMATCH'} "
                  + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
                  + f"; torch cuda {t_torch.median * 1e3:.3f} ms, onnxruntime cuda {t_ort.median * 1e3:.3f} ms",
                  flush=True)
        results.append(row)
    if args.json:
        args.json.write_text(json.dumps({"gpu": torch.cuda.get_device_name(0), "tolerance": TOLERANCE,
                                         "results": results}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
