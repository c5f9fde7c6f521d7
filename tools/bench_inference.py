#!/usr/bin/env python3
"""PyTorch eager vs onnxruntime inference latency over zoo specs, as a Markdown table.

    python tools/bench_inference.py                      # the default zoo selection, batch 1
    python tools/bench_inference.py specs/resnet18.yaml --batch 1,8 --rounds 20

Each spec is built once (seeded), exported with verification, and both engines run the same
weights and inputs with the same thread count (physical cores unless --threads). Per batch size:
warm-up, then interleaved rounds (torch block, ORT block, torch block, ...), each block long
enough for the clock; the table gives the median per-call latency with its interquartile range,
throughput, and GFLOP/s achieved from the checker's MACs (2 * MACs * batch / latency).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["lenet", "alexnet", "vgg11", "nin", "googlenet", "resnet18", "resnet50", "inception_v3",
           "rnn_classifier", "gru_classifier", "lstm_classifier", "bilstm_tagger"]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    import onnxruntime
    import torch

    from archspec import __version__, check
    from archspec.runtime import bench_model, bench_table, physical_cores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help=f"spec files (default: {', '.join(DEFAULT)} from specs/)")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes, e.g. 1,8")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    args = parser.parse_args(argv)
    specs = [Path(s) for s in args.specs] or [p for p in (ROOT / "specs" / f"{n}.yaml" for n in DEFAULT) if p.exists()]
    batches = [int(b) for b in args.batch.split(",") if b.strip()]

    threads = args.threads or physical_cores()
    print(f"archspec {__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{platform.processor() or platform.machine()}, {threads} threads "
          f"({physical_cores()} physical cores usable); rounds {args.rounds}, warm-up {args.warmup}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"load average {load:.2f} before the run"
          + (" -- other processes compete for the cores; multi-threaded timings (torch's OpenMP barriers "
             "especially) will be unreliable, try --threads 1" if load > 0.5 * physical_cores() else "") + "\n")
    print(f"dense float32 GEMM (torch.matmul 2048x2048, {threads} threads): {gemm_gflops(threads):.1f} GFLOP/s "
          "-- the reference for the GFLOP/s columns\n")
    rows = []
    for spec in specs:
        report = check(spec)
        # sequence specs at their nominal length and at twice it (the time axis stays dynamic)
        reports = [report] + ([check(spec, input_shape=tuple(d.size * 2 if d.name else d.size
                                                             for d in report.graph.input.dims))]
                              if any(d.name for d in report.graph.input.dims) else [])
        for r in reports:
            try:
                rows += bench_model(r, batches=batches, rounds=args.rounds, warmup=args.warmup,
                                    threads=args.threads, device=args.device)
            except Exception as exc:  # keep going: one failing spec should not hide the others
                print(f"{spec}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"done {spec.name}", file=sys.stderr, flush=True)
    print(bench_table(rows))
    return 0


def gemm_gflops(threads: int, n: int = 2048, rounds: int = 7) -> float:
    """The machine's dense float32 matrix-multiply throughput: median of `rounds` (2 n^3 FLOPs each)."""
    import statistics
    import time

    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.matmul(a, b)  # warm-up
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            torch.matmul(a, b)
            times.append(time.perf_counter() - start)
        return 2 * n**3 / statistics.median(times) / 1e9
    finally:
        torch.set_num_threads(saved)


if __name__ == "__main__":
    sys.exit(main())
