#!/usr/bin/env python3
"""PyTorch eager vs onnxruntime inference latency over zoo specs, as a Markdown table.

    python tools/bench_inference.py                      # the whole zoo, batch 1 and 8 (about 17 min on 2 cores)
    python tools/bench_inference.py specs/resnet18.yaml --batch 1,8 --rounds 20
    python tools/bench_inference.py --json out.json      # also the rows and profiles as JSON
    python tools/bench_inference.py specs/vit_b_16.yaml --json out.json --merge docs/benchmarks.json
                                  # ... plus the rows of an earlier run for the specs not measured now

Each spec is built once (seeded), exported with verification, and both engines run the same
weights and inputs with the same thread count (physical cores unless --threads). Per batch size:
warm-up, then interleaved rounds (torch block, ORT block, torch block, ...), each block long
enough for the clock; the table gives the median per-call latency with its interquartile range,
throughput, and GFLOP/s achieved from the checker's MACs (2 * MACs * batch / latency).

The specs of the speed targets (resnet50 and the recurrent classifiers, batch 1) are then profiled:
onnxruntime's own per-node profiler and torch.profiler, over the same weights and inputs, so the
report can say where each engine's time goes.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the whole zoo, in the curriculum's order; a spec added to specs/ later is measured too (after these)
ORDER = ["lenet", "alexnet", "alexnet_paper", "vgg11", "vgg11_lrn", "vgg11_bn", "vgg13", "vgg16_c", "vgg16",
         "vgg16_bn", "vgg19", "nin", "googlenet_paper", "googlenet", "googlenet_aux", "inception_v2", "inception_v3",
         "inception_v4", "inception_resnet_v2", "resnet18", "resnet18_preact", "resnet34", "resnet50", "resnet101",
         "resnet152", "resnet20_cifar", "resnet_flavours", "resnext50_32x4d", "densenet121", "squeezenet1_1",
         "mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x1_0", "efficientnet_b0", "regnet_y_400mf",
         "convnext_tiny", "vit_b_16", "fcn_resnet50", "rnn_classifier", "gru_classifier", "lstm_classifier",
         "lstm_peephole_classifier", "bilstm_tagger"]
PROFILED = ["resnet50", "rnn_classifier", "gru_classifier", "lstm_classifier"]  # the specs #8's targets name


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    import onnxruntime
    import torch

    from archspec import __version__, check
    from archspec.runtime import SPINNING, bench_model, bench_table, physical_cores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="spec files (default: every spec in specs/)")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes, e.g. 1,8")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--spinning", choices=SPINNING, default="during_run",
                        help="when onnxruntime's idle pool threads busy-wait (archspec's default: during a run)")
    parser.add_argument("--profile", default=",".join(PROFILED),
                        help="comma-separated spec names to profile per operator at batch 1 ('' for none)")
    parser.add_argument("--json", type=Path, help="also write the rows, GEMM reference and profiles here")
    parser.add_argument("--merge", type=Path, help="an earlier --json run (or a benchmarks.json holding one under "
                        "'inference'): its rows and profiles of specs not measured now go into --json, marked")
    args = parser.parse_args(argv)
    zoo = sorted((ROOT / "specs").glob("*.yaml"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER),
                                                                p.stem))
    specs = [Path(s) for s in args.specs] or zoo
    batches = [int(b) for b in args.batch.split(",") if b.strip()]

    threads = args.threads or physical_cores()
    started, started_at = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    lines = [f"archspec {__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
             f"{platform.processor() or platform.machine()}, {threads} threads "
             f"({physical_cores()} physical cores usable); rounds {args.rounds}, warm-up {args.warmup}; "
             f"onnxruntime's pool threads spin: {args.spinning}"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    lines.append(f"load average {load:.2f} before the run"
                 + (" -- other processes compete for the cores; multi-threaded timings (torch's OpenMP barriers "
                    "especially) will be unreliable, try --threads 1" if load > 0.5 * physical_cores() else ""))
    gemm = gemm_gflops(threads)
    lines.append(f"dense float32 GEMM (torch.matmul 2048x2048, {threads} threads): {gemm:.1f} GFLOP/s "
                 "-- the reference for the GFLOP/s columns")
    print("\n\n".join(lines) + "\n", flush=True)
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
                                    threads=args.threads, device=args.device, spinning=args.spinning)
            except Exception as exc:  # keep going: one failing spec should not hide the others
                print(f"{spec}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"done {spec.name}", file=sys.stderr, flush=True)
    markdown = bench_table(rows)
    print(markdown)

    profiles = {}
    for spec in [s for s in specs if s.stem in args.profile.split(",")]:
        try:
            profiles[spec.stem] = profile(spec, threads)
        except Exception as exc:  # a failed profile must not lose the measurements above
            print(f"{spec}: profile: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        print(f"profiled {spec.stem}", file=sys.stderr, flush=True)
    if args.json:
        data = {"header": lines, "threads": threads, "gemm_gflops": gemm, "load_start": load,
                "load_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0,
                "started": started_at, "seconds": time.perf_counter() - started,
                "markdown": "\n\n".join(lines) + "\n\n" + markdown, "profiles": profiles,
                "rows": [dataclasses.asdict(r) for r in rows]}
        if args.merge:
            data = merged(data, json.loads(args.merge.read_text()), bench_table)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


def merged(new: dict, old: dict, bench_table) -> dict:
    """`new` plus the rows and profiles of `old` (a run, or a benchmarks.json holding one under
    'inference') for the specs `new` did not measure, in the zoo's order, with a header that says
    which rows come from which run (its settings and load): each row's two engines were still timed
    in the same rounds of one run."""
    from archspec.runtime import BenchRow, Timing

    old = old.get("inference", old)
    rank = {name: i for i, name in enumerate(ORDER)}
    runs = {**old.get("runs", {old.get("started", "earlier"): {k: old.get(k) for k in RUN_KEYS}}),
            new["started"]: {k: new.get(k) for k in RUN_KEYS}}
    measured = {r["spec"] for r in new["rows"]}
    earlier = old.get("started", "earlier")
    rows = sorted([{"run": earlier, "gemm_gflops": old.get("gemm_gflops"), **r} for r in old["rows"] if r["spec"] not in measured]
                  + [{**r, "run": new["started"], "gemm_gflops": new["gemm_gflops"]} for r in new["rows"]],
                  key=lambda r: rank.get(r["spec"], len(ORDER)))
    objects = [BenchRow(**{k: v for k, v in r.items() if k not in ("run", "gemm_gflops")} | {
        "torch": Timing(**r["torch"]), "ort": Timing(**r["ort"]), "input_shape": tuple(r["input_shape"])}) for r in rows]
    notes = []
    for started, run in runs.items():
        specs = list(dict.fromkeys(r["spec"] for r in rows if r["run"] == started))
        if specs:
            load = f"load average {run['load_start']:.2f} before" + (
                f", {run['load_end']:.2f} after" if run.get("load_end") is not None else "")
            threads = f"{run['threads']} threads, " if run.get("threads") else ""
            notes.append(f"Rows of {', '.join(specs)}: the run started {started} "
                         f"({threads}{run['header'][0].split('; ', 1)[1]}; {load}).")
    header = new["header"][:1] + [h for h in new["header"][2:]] + notes
    return {**new, "header": header, "rows": rows, "runs": runs,
            "profiles": {**old.get("profiles", {}), **new["profiles"]},
            "markdown": "\n\n".join(header) + "\n\n" + bench_table(objects)}


RUN_KEYS = ("header", "threads", "seconds", "load_start", "load_end", "gemm_gflops")


def gemm_gflops(threads: int, n: int = 2048, rounds: int = 7) -> float:
    """The machine's dense float32 matrix-multiply throughput: median of `rounds` (2 n^3 FLOPs each)."""
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


def profile(spec: Path, threads: int, batch: int = 1, calls: int = 30, top: int = 6) -> dict:
    """Where each engine spends one batch-`batch` call: onnxruntime's per-node profiler (kernel time
    per operator type) and torch.profiler (self CPU time per aten operator), per call."""
    import onnxruntime as ort
    import torch

    import archspec
    from archspec.exporter import example_input

    report = archspec.check(spec)
    module = archspec.build(report, seed=0).eval()
    x = torch.from_numpy(example_input(report, (batch, *report.graph.input.shape), seed=0))
    with tempfile.TemporaryDirectory(prefix="archspec-profile-") as tmp:
        path = Path(tmp) / "model.onnx"
        archspec.export(report, path, weights=module.state_dict())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feeds = {report.graph.input.name: x.numpy()}
        for _ in range(calls + 5):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e["dur"] for e in events if e.get("name") == "model_run"][5:]  # microseconds
    per_op: dict[str, float] = collections.defaultdict(float)
    node_op: dict[str, str] = {}
    seen: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
            node_op[e["name"]] = e["args"]["op_name"]
            seen[e["name"]] += 1
    n_calls = max(seen.values(), default=1)
    nodes_of = collections.Counter(node_op.values())
    ort_ops = [{"op": op, "nodes": nodes_of[op], "us_per_call": us / n_calls}
               for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])]

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(5):
                module(x)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(calls):
                    module(x)
    finally:
        torch.set_num_threads(saved)
    averages = sorted((e for e in prof.key_averages() if e.self_cpu_time_total > 0),
                      key=lambda e: -e.self_cpu_time_total)
    torch_ops = [{"op": e.key, "calls_per_run": e.count // calls, "us_per_call": e.self_cpu_time_total / calls}
                 for e in averages[:top]]
    return {"batch": batch, "input_shape": list(report.graph.input.shape), "macs": report.totals.macs,
            "ort_run_us": statistics.median(runs) if runs else None,
            "ort_kernels_us": sum(per_op.values()) / n_calls, "ort_nodes": len(node_op), "ort_ops": ort_ops[:top],
            "torch_self_us": sum(e.self_cpu_time_total for e in averages) / calls, "torch_ops": torch_ops}


if __name__ == "__main__":
    sys.exit(main())
