#!/usr/bin/env python3
"""The emitted forms of `layernorm` over the channels of an image (ConvNeXt's LayerNorm2d), timed in
onnxruntime: opset 17 (Transpose, LayerNormalization, Transpose) against opset 13 (the primitive
ReduceMean/Sub/Pow/Sqrt/Div form on axis 1), both as `archspec export` writes them.

    python tools/bench_layernorm.py                 # ConvNeXt-T's stage sizes, batch 1 and 8, one thread
    python tools/bench_layernorm.py --threads 2 --rounds 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ((96, 56, 56), (192, 28, 28), (384, 14, 14), (768, 7, 7))  # ConvNeXt-T's four stages


def main() -> None:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    import numpy as np

    import archspec
    from archspec.exporter import export_model
    from archspec.runtime import Session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", default="1,8")
    args = ap.parse_args()
    print("| C x H x W | batch | opset 17 (Transpose+LayerNormalization) | opset 13 (primitives) | ratio |\n"
          "|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for c, h, w in SHAPES:
            spec = Path(tmp) / "ln.yaml"
            spec.write_text(f"archspec: 1\nname: ln\ninput: {{x: [{c}, {h}, {w}]}}\nnetwork:\n  - layernorm\n")
            report = archspec.check(spec)
            sessions = {o: Session(export_model(report, Path(tmp) / f"ln{o}.onnx", opset=o).path, threads=args.threads)
                        for o in (17, 13)}
            for batch in map(int, args.batch.split(",")):
                x = np.random.default_rng(0).standard_normal((batch, c, h, w)).astype(np.float32)
                times: dict[int, list[float]] = {17: [], 13: []}
                for _ in range(args.rounds):  # interleaved, so drift in the machine's load hits both
                    for o, s in sessions.items():
                        t0 = time.perf_counter()
                        s.run({"x": x})
                        times[o].append(time.perf_counter() - t0)
                a, b = (statistics.median(times[o]) for o in (17, 13))
                print(f"| {c}x{h}x{w} | {batch} | {a * 1e3:.3f} ms | {b * 1e3:.3f} ms | {b / a:.2f} |")


if __name__ == "__main__":
    main()
