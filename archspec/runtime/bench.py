"""`archspec bench`: PyTorch eager against onnxruntime on the same weights and inputs, timed
call by call in interleaved rounds, with the spread that says how far a ratio can be trusted."""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .session import RunError, Session

if TYPE_CHECKING:
    from ..analyze import Report


@dataclass(frozen=True)
class Timing:
    median: float  # seconds per call, over every timed call
    q1: float
    q3: float
    min: float
    max: float
    calls: int  # calls per block; each round times one block of each contender
    rounds: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def spread(self) -> float:
        """IQR relative to the median: how far one typical call may sit from another."""
        return self.iqr / self.median if self.median > 0 else math.inf


# A timing whose IQR exceeds this share of its median is too noisy to compare: pyperf warns when the
# standard deviation passes 10% of the mean, and for normal noise the IQR is 1.35 standard deviations.
NOISY_SPREAD = 0.135


@dataclass(frozen=True)
class BenchRow:
    spec: str
    batch: int
    macs: int  # per sample
    torch: Timing
    ort: Timing
    threads: int
    device: str
    exporter: str
    export_seconds: float = 0.0  # `archspec export` of this spec, verification included
    input_shape: tuple[int, ...] = ()  # per sample: shows the sequence length of recurrent specs

    def gflops(self, t: Timing) -> float:
        return 2 * self.macs * self.batch / t.median / 1e9

    def throughput(self, t: Timing) -> float:
        return self.batch / t.median

    @property
    def speedup(self) -> float:
        return self.torch.median / self.ort.median

    @property
    def speedup_range(self) -> tuple[float, float]:
        """The ratio's uncertainty, from the quartiles: slowest-typical torch over fastest-typical ORT
        and the reverse, so the interval holds every ratio of two typical calls."""
        return self.torch.q1 / self.ort.q3, self.torch.q3 / self.ort.q1

    @property
    def noisy(self) -> tuple[str, ...]:
        return tuple(name for name, t in (("torch eager", self.torch), ("onnxruntime", self.ort))
                     if t.spread > NOISY_SPREAD)


def _quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[1], q[2]


def time_interleaved(fns: Sequence[Callable[[], Any]], *, rounds: int = 15, warmup: int = 3,
                     min_block: float = 0.02, settle: float = 0.01) -> list[Timing]:
    """Times several calls fairly: warm-up, then per round one block of calls of each (A B A B ...),
    each block long enough (>= min_block s) to be a fair share of the round. Every call is timed on
    its own, so the median is the typical latency even on a busy machine, where an occasional call
    stalls for a scheduler time slice (a block mean would be dominated by those). Between blocks the
    cores idle for `settle` s: a runtime's worker threads busy-wait a while after its call returns
    (torch's OpenMP pool does), and would otherwise slow the next contender down (measured on 2 cores:
    ResNet-50 in onnxruntime 46 ms right after a torch call, 39 ms after a 10 ms pause)."""
    calls = []
    for fn in fns:
        t0 = time.perf_counter()
        for _ in range(max(1, warmup)):
            fn()
        est = (time.perf_counter() - t0) / max(1, warmup)
        calls.append(max(1, math.ceil(min_block / max(est, 1e-7))))
    samples: list[list[float]] = [[] for _ in fns]
    clock = time.perf_counter
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            if settle:
                time.sleep(settle)
            out = samples[i]
            for _ in range(calls[i]):
                t0 = clock()
                fn()
                out.append(clock() - t0)
    result = []
    for xs, n in zip(samples, calls):
        q1, med, q3 = _quartiles(xs)
        result.append(Timing(med, q1, q3, min(xs), max(xs), n, rounds))
    return result


def bench_model(spec: Any, *, batches: Iterable[int] = (1,), rounds: int = 15, warmup: int = 3,
                threads: int | None = None, device: str = "cpu", seed: int = 0, limits: Any = None,
                min_block: float = 0.02, spinning: str = "during_run") -> list[BenchRow]:
    """PyTorch eager (inference_mode) vs onnxruntime on the same weights, inputs and device (torch
    moves to CUDA when the onnxruntime session runs there), with the same CPU thread count."""
    import numpy as np
    import torch

    from ..api import check
    from ..exporter import example_inputs, export_model
    from ..lower import build_module

    report: Report = check(spec, limits=limits)
    module = build_module(report, seed=seed).eval()
    with tempfile.TemporaryDirectory(prefix="archspec-bench-") as tmp:
        path = Path(tmp) / f"{report.graph.name}.onnx"
        result = export_model(report, path, weights=module.state_dict(), seed=seed)
        # pool threads that kept spinning after a run would steal torch's time slices when the two are
        # interleaved on the same cores (measured: LeNet in torch 80 ms instead of 0.3 ms on 2 cores)
        session = Session(path, device=device, threads=threads, spinning=spinning)
    on_cuda = session.device == "cuda"
    if on_cuda:
        module = module.to("cuda")
    if session.notice:
        print(f"archspec: notice: {session.notice}", file=sys.stderr)
    rows = []
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(session.threads)
    try:
        for batch in batches:
            xs = tuple(torch.from_numpy(a) for a in
                       example_inputs(report, tuple((batch, *i.shape) for i in report.graph.inputs), seed=seed))
            feeds = {i.name: x.numpy() for i, x in zip(report.graph.inputs, xs)}
            xs = tuple(x.to("cuda") for x in xs) if on_cuda else xs

            def torch_call(xs: tuple["torch.Tensor", ...] = xs) -> "torch.Tensor":
                y = module(*xs)
                y = y[0] if isinstance(y, tuple) else y  # the first output is compared
                if on_cuda:
                    torch.cuda.synchronize()  # CUDA kernels run asynchronously: time them to completion
                return y

            # a sanity check that both run the same model; on CUDA both engines multiply in TF32 by default
            tol = 1e-2 if on_cuda else 1e-4
            with torch.inference_mode():
                ref = torch_call().cpu().numpy()
                got = session.run(feeds)[report.graph.output_name]
                if not np.allclose(got, ref, rtol=tol, atol=tol * max(1.0, float(np.abs(ref).max()))):
                    raise RunError(f"{report.graph.name}: onnxruntime and PyTorch disagree at batch {batch}")
                t_torch, t_ort = time_interleaved([torch_call, session.run_fn(feeds)], rounds=rounds,
                                                  warmup=warmup, min_block=min_block)
            rows.append(BenchRow(report.graph.name, batch, report.totals.macs, t_torch, t_ort, session.threads,
                                 session.device, f"emitted, opset {result.opset}", result.seconds, report.graph.input.shape))
    finally:
        torch.set_num_threads(saved_threads)
    return rows


def bench_table(rows: Sequence[BenchRow]) -> str:
    """A Markdown table: median latency with its interquartile range, throughput and GFLOP/s."""
    head = ("| spec | input | exporter | export s | batch | MACs/sample | torch eager ms (IQR) | onnxruntime ms (IQR) | "
            "speedup | torch samples/s | ORT samples/s | torch GFLOP/s | ORT GFLOP/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.spec} | {'x'.join(map(str, r.input_shape))} | {r.exporter} | {r.export_seconds:.1f} | {r.batch} | "
            f"{_units(r.macs)} | "
            f"{r.torch.median * 1e3:.3f} ({r.torch.iqr * 1e3:.3f}) | "
            f"{r.ort.median * 1e3:.3f} ({r.ort.iqr * 1e3:.3f}) | "
            f"{_ratio(r)} | {r.throughput(r.torch):,.0f} | {r.throughput(r.ort):,.0f} | "
            f"{r.gflops(r.torch):.1f} | {r.gflops(r.ort):.1f} |")
    return "\n".join(lines)


def _ratio(r: BenchRow) -> str:
    """`2.13x (1.90-2.40)`, and `noisy` when a spread is too wide for the ratio to mean much."""
    low, high = r.speedup_range
    return f"{r.speedup:.2f}x ({low:.2f}-{high:.2f}){' noisy' if r.noisy else ''}"


def bench_notes(rows: Sequence[BenchRow]) -> list[str]:
    """What a reader must know before trusting the table: which timings are too spread out, and what to do."""
    notes = []
    for r in rows:
        for name in r.noisy:
            t = r.torch if name == "torch eager" else r.ort
            notes.append(f"{r.spec} batch {r.batch}: {name}'s spread is too wide to trust: IQR {t.iqr * 1e3:.3g} ms "
                         f"is {t.spread:.0%} of the median {t.median * 1e3:.3g} ms (trusted up to {NOISY_SPREAD:.1%})")
        low, high = r.speedup_range
        if low < 1 < high:
            notes.append(f"{r.spec} batch {r.batch}: neither is clearly faster (speedup {low:.2f}-{high:.2f})")
    if notes:
        notes.append("for steadier timings: --threads 1 (no contention between the two runtimes' pools), "
                     "more --rounds, and an otherwise idle machine")
    return notes


def _units(n: int) -> str:
    from ..render import human_units

    return human_units(n)
