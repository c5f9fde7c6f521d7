"""onnxruntime latency of ONNX's LRN operator against the decomposed form `lrn` emits, and PyTorch.

    python tools/bench_lrn.py                  # AlexNet's two LRN inputs, batch 1 and 8, one thread
    python tools/bench_lrn.py --threads 2 --rounds 20

Why: `LocalResponseNorm.emit` (archspec/layers/norm.py) writes torch's formula, x / (k + alpha *
avg(x^2))^beta with the average by Pad + AveragePool over channels, rather than ONNX's LRN operator;
this measures both on the inputs of alexnet_paper's LRN layers (size 5, alpha 1e-4, beta 0.75, k 2),
each first compared with torch.nn.functional.local_response_norm, then timed interleaved with it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE, ALPHA, BETA, K = 5, 1e-4, 0.75, 2.0  # specs/alexnet_paper.yaml


def model(decomposed: bool, channels: int, side: int) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = {}
    if not decomposed:
        nodes = [helper.make_node("LRN", ["x"], ["y"], size=SIZE, alpha=ALPHA, beta=BETA, bias=K)]
    else:  # as LocalResponseNorm.emit writes it
        inits = {"axis1": np.array([1], np.int64), "alpha": np.array(ALPHA, np.float32), "k": np.array(K, np.float32),
                 "beta": np.array(BETA, np.float32),
                 "pads": np.array([0, 0, SIZE // 2, 0, 0, 0, 0, (SIZE - 1) // 2, 0, 0], np.int64)}
        nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("Unsqueeze", ["sq", "axis1"], ["sq5"]),
                 helper.make_node("Pad", ["sq5", "pads"], ["padded"]),
                 helper.make_node("AveragePool", ["padded"], ["avg5"], kernel_shape=[SIZE, 1, 1]),
                 helper.make_node("Squeeze", ["avg5", "axis1"], ["avg"]), helper.make_node("Mul", ["avg", "alpha"], ["m"]),
                 helper.make_node("Add", ["m", "k"], ["s"]), helper.make_node("Pow", ["s", "beta"], ["p"]),
                 helper.make_node("Div", ["x", "p"], ["y"])]
    dims = ["N", channels, side, side]
    graph = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from archspec.runtime import Session, time_interleaved

    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), rounds {args.rounds}; load average {os.getloadavg()[0]:.2f} before\n")
    print("| input | batch | ONNX LRN ms | decomposed ms | torch ms | LRN / decomposed |\n|---|---|---|---|---|---|")
    for channels, side in ((96, 55), (256, 27)):  # alexnet_paper's LRN inputs
        forms = [Session(model(d, channels, side), threads=args.threads) for d in (False, True)]
        for batch in (1, 8):
            x = np.random.default_rng(0).standard_normal((batch, channels, side, side)).astype(np.float32)
            xt = torch.from_numpy(x)
            ref = torch.nn.functional.local_response_norm(xt, SIZE, ALPHA, BETA, K).numpy()
            for s in forms:
                err = float(np.abs(s.run(x)["y"] - ref).max())
                if err > 1e-5:
                    raise SystemExit(f"a form disagrees with torch by {err:.2e}")
            with torch.inference_mode():
                lrn, dec, ref_t = time_interleaved(
                    [forms[0].run_fn({"x": x}), forms[1].run_fn({"x": x}),
                     lambda xt=xt: torch.nn.functional.local_response_norm(xt, SIZE, ALPHA, BETA, K)], rounds=args.rounds)
            print(f"| {channels}x{side}x{side} | {batch} | {lrn.median * 1e3:.2f} | {dec.median * 1e3:.2f} | "
                  f"{ref_t.median * 1e3:.2f} | {lrn.median / dec.median:.2f} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
