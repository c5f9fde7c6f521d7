#!/usr/bin/env python3
"""`archspec serve` under load vs onnxruntime in this process, as a Markdown table (and JSON).

    python tools/bench_serve.py                                   # ResNet-18, concurrency 1, 8, 32
    python tools/bench_serve.py specs/lenet.yaml --concurrency 1,16 --seconds 10 --protocol json

The model is exported (verified) once, served on a local Ray instance (the same code as
`archspec serve`: one replica, one onnxruntime session with the physical cores' threads, requests
gathered by @serve.batch), and driven by closed-loop clients in this process: each of N threads
sends a request, waits for the answer, sends the next, over one kept-alive HTTP connection.
Request bodies are encoded once before timing (the client's encoding cost is not the server's).

Per concurrency, --rounds blocks of load (--seconds in all, after a warm-up), each followed, with
the server idle, by onnxruntime in a separate process (a session as `archspec run` makes it, same
threads; the faster of spinning and non-spinning pool threads) at the batch size that block
formed, so that both figures of each ratio see the same background load of a shared machine.
Reported: throughput, p50/p99 latency, requests per model run and the model's own time and busy
share (the server's statistics endpoint), and served / in-process throughput, the median over
the blocks. Overhead per request: the p50 at concurrency 1 minus the in-process batch-1 latency
(HTTP, the Ray Serve proxy and its actor calls, request parsing, response encoding).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def request_bodies(contract, batch: int, protocol: str, seed: int) -> tuple[bytes, dict[str, str]]:
    import numpy as np

    from archspec.serve import HEADER_LENGTH

    rng = np.random.default_rng(seed)
    inputs, blobs = [], []
    for t in contract.inputs:
        shape = [batch] + [d if d > 0 else 1 for d in t.shape[1:]]
        x = rng.standard_normal(shape).astype(t.dtype) if t.dtype.startswith("float") else \
            rng.integers(0, 2, shape).astype(t.dtype)
        if protocol == "binary":
            inputs.append({"name": t.name, "shape": shape, "datatype": t.datatype,
                           "parameters": {"binary_data_size": x.nbytes}})
            blobs.append(x.tobytes())
        else:
            inputs.append({"name": t.name, "shape": shape, "datatype": t.datatype, "data": x.ravel().tolist()})
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": protocol == "binary"}}).encode()
    headers = {"Content-Type": "application/octet-stream" if protocol == "binary" else "application/json"}
    if protocol == "binary":
        headers[HEADER_LENGTH] = str(len(head))
    return head + b"".join(blobs), headers


def get_json(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def load(port: int, name: str, bodies: list[tuple[bytes, dict]], seconds: float, warmup: float) -> dict:
    """Closed-loop clients, one thread and connection each; latencies of requests that started
    after the warm-up and ended before the deadline."""
    start = time.perf_counter()
    t_measure, t_end = start + warmup, start + warmup + seconds
    latencies: list[list[float]] = [[] for _ in bodies]
    errors: list[str] = []

    def client(k: int) -> None:
        content, headers = bodies[k]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                conn.request("POST", f"/v2/models/{name}/infer", body=content, headers=headers)
                r = conn.getresponse()
                data = r.read()
                t1 = time.perf_counter()
                if r.status != 200:
                    errors.append(f"{r.status}: {data[:200]!r}")
                    return
                if t0 >= t_measure and t1 <= t_end:
                    latencies[k].append(t1 - t0)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(len(bodies))]
    stats0: dict = {}

    def snapshot_at_measure() -> None:
        time.sleep(max(0.0, t_measure - time.perf_counter()))
        stats0.update(get_json(port, f"/v2/models/{name}/stats")["model_stats"][0])

    snap = threading.Thread(target=snapshot_at_measure)
    for t in threads + [snap]:
        t.start()
    for t in threads + [snap]:
        t.join()
    if errors:
        raise SystemExit(f"server errors: {errors[:3]}")
    stats1 = get_json(port, f"/v2/models/{name}/stats")["model_stats"][0]
    flat = sorted(x for lat in latencies for x in lat)
    runs = stats1["execution_count"] - stats0["execution_count"]
    reqs = stats1["request_count"] - stats0["request_count"]
    before = {b["batch_size"]: b["compute_infer"] for b in stats0["batch_stats"]}
    formed = {b["batch_size"]: b["compute_infer"]["count"] - before.get(b["batch_size"], {}).get("count", 0)
              for b in stats1["batch_stats"]}
    busy_ns = sum(b["compute_infer"]["ns"] - before.get(b["batch_size"], {}).get("ns", 0)
                  for b in stats1["batch_stats"])
    return {"requests": len(flat), "seconds": seconds, "throughput": len(flat) / seconds, "latencies": flat,
            "server_requests": reqs, "runs": runs, "model_seconds": busy_ns / 1e9,
            "p50": percentile(flat, 50), "p99": percentile(flat, 99),
            "requests_per_run": reqs / runs if runs else 0.0,
            "model_seconds_per_run": busy_ns / 1e9 / runs if runs else 0.0,
            "model_busy": busy_ns / 1e9 / seconds,
            "batch_histogram": {b: n for b, n in sorted(formed.items()) if n}}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (Hyndman & Fan definition 1)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, -(-len(sorted_values) * q // 100) - 1))
    return sorted_values[int(k)]


class Reference:
    """onnxruntime in a separate, long-lived process (`--reference`), as `archspec run` makes a
    session: asked for one batch size at a time, between the load blocks."""

    def __init__(self, model: Path, threads: int):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, __file__, "--reference", str(model), "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def measure(self, batch: int, seconds: float) -> dict:
        self.proc.stdin.write(f"{batch} {seconds}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def reference(model: str, threads: int) -> None:
    """The reference process: per request line "BATCH SECONDS", the median latency with pool
    threads spinning during a run (archspec's default) and without (as a replica), the faster."""
    import numpy as np

    from archspec.contract import read_contract
    from archspec.runtime import Session

    contract = read_contract(model)
    sessions = {spinning: Session(model, threads=threads, spinning=spinning) for spinning in ("during_run", "never")}
    for line in sys.stdin:
        batch, seconds = int(line.split()[0]), float(line.split()[1])
        rng = np.random.default_rng(0)
        feeds = {t.name: rng.standard_normal([batch] + [d if d > 0 else 1 for d in t.shape[1:]]).astype(t.dtype)
                 for t in contract.inputs}
        best: dict = {}
        for spinning, session in sessions.items():
            run = session.run_fn(feeds)
            run()
            times, deadline = [], time.perf_counter() + seconds / 2
            while time.perf_counter() < deadline or len(times) < 3:
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            if not best or med < best["latency"]:
                best = {"batch": batch, "latency": med, "throughput": batch / med, "runs": len(times),
                        "spinning": spinning}
        print(json.dumps(best), flush=True)


def pooled(blocks: list[tuple[dict, dict]]) -> dict:
    """One row from the blocks of a load level: throughput and latencies over all blocks; the
    efficiency is the median of the blocks' (served / in-process right after it)."""
    flat = sorted(x for r, _ in blocks for x in r["latencies"])
    seconds = sum(r["seconds"] for r, _ in blocks)
    runs = sum(r["runs"] for r, _ in blocks)
    busy = sum(r["model_seconds"] for r, _ in blocks)
    ratios = [r["throughput"] / ref["throughput"] for r, ref in blocks]
    return {"requests": len(flat), "seconds": seconds, "throughput": len(flat) / seconds,
            "p50": percentile(flat, 50), "p99": percentile(flat, 99),
            "requests_per_run": sum(r["server_requests"] for r, _ in blocks) / runs if runs else 0.0,
            "model_seconds_per_run": busy / runs if runs else 0.0, "model_busy": busy / seconds,
            "efficiency": statistics.median(ratios),
            "blocks": [{"throughput": r["throughput"], "requests_per_run": r["requests_per_run"],
                        "in_process": ref, "ratio": r["throughput"] / ref["throughput"]} for r, ref in blocks]}


def main(argv: list[str] | None = None) -> int:
    from bench_common import busy_processes, loadavg, machine_info

    import archspec
    from archspec.runtime import physical_cores
    from archspec.serve import ServeOptions, load_model, start, stop

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default=str(ROOT / "specs" / "resnet18.yaml"), help="a spec or .onnx file")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--seconds", type=float, default=30.0, help="measured time per concurrency (all blocks)")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: physical cores)")
    p.add_argument("--protocol", choices=("binary", "json"), default="binary",
                   help="tensors as raw bytes (binary tensor data extension) or JSON numbers")
    p.add_argument("--port", type=int, default=8123)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--render", metavar="JSON", help="print the report of a saved --json run")
    p.add_argument("--reference", help=argparse.SUPPRESS)  # internal: the in-process figures, as JSON
    p.add_argument("--rounds", type=int, default=3, help="load blocks per concurrency, each followed by the "
                   "in-process reference, so that both see the same background load")
    p.add_argument("--reference-seconds", type=float, default=4.0, help="in-process time after each block")
    args = p.parse_args(argv)
    if args.render:
        print(markdown(json.loads(Path(args.render).read_text())))
        return 0
    if args.reference:
        reference(args.reference, args.threads)
        return 0
    levels = [int(c) for c in args.concurrency.split(",")]
    threads = args.threads or physical_cores()

    model = archspec.check(args.model) if args.model.endswith((".yaml", ".yml")) else args.model
    data, contract = load_model(model)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_before = loadavg()
    options = ServeOptions(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, threads=threads,
                           port=args.port, num_cpus=max(threads, physical_cores()))
    t0 = time.perf_counter()
    start(data, options)
    startup = time.perf_counter() - t0
    # the reference runs after each load block (the server idle), so that both figures of a ratio
    # see the same background load of this shared machine
    folder = tempfile.mkdtemp(prefix="bench-serve-")
    model_file = Path(folder) / "model.onnx"
    model_file.write_bytes(data if isinstance(data, bytes) else Path(data).read_bytes())
    ref = Reference(model_file, threads)
    served, batch1 = {}, None
    try:
        for c in levels:
            bodies = [request_bodies(contract, 1, args.protocol, seed=k) for k in range(c)]
            blocks = []
            for k in range(args.rounds):
                r = load(args.port, contract.name, bodies, args.seconds / args.rounds, args.warmup if k == 0 else 1.0)
                blocks.append((r, ref.measure(max(1, round(r["requests_per_run"])), args.reference_seconds)))
            served[c] = pooled(blocks)
            if c == 1:
                batch1 = statistics.median(b["in_process"]["latency"] for b in served[c]["blocks"])
            print(f"concurrency {c}: {served[c]['throughput']:.2f} req/s, p50 {served[c]['p50'] * 1e3:.1f} ms, "
                  f"p99 {served[c]['p99'] * 1e3:.1f} ms, {served[c]['requests_per_run']:.2f} requests per run, "
                  f"served / in-process {served[c]['efficiency']:.0%}", file=sys.stderr, flush=True)
    finally:
        stop()
        ref.close()
        shutil.rmtree(folder, ignore_errors=True)
    load_after = loadavg()

    data = {"started": started, "model": contract.name, "protocol": args.protocol, "threads": threads,
            "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms, "seconds": args.seconds,
            "rounds": args.rounds, "warmup": args.warmup, "served": {str(c): r for c, r in served.items()},
            "overhead_s": served[1]["p50"] - batch1 if batch1 is not None else None,
            "overhead_own_s": served[1]["p50"] - served[1]["model_seconds_per_run"] if 1 in served else None,
            "startup_s": startup, "loadavg_before": load_before, "loadavg_after": load_after,
            "busy_processes": busy_processes(), "machine": machine_info()}
    data["markdown"] = markdown(data)
    print(data["markdown"])
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


def markdown(d: dict) -> str:
    """The report of one run (also `--render JSON` for a saved one)."""
    lines = [f"`archspec serve` {d['model']} ({d['protocol']} tensors; 1 replica, {d['threads']} onnxruntime threads, "
             f"--max-batch {d['max_batch']}, --batch-wait-ms {d['batch_wait_ms']:g}); closed-loop clients in the "
             f"benchmark process on the same machine; per concurrency {d['rounds']} blocks of "
             f"{d['seconds'] / d['rounds']:g} s (after {d['warmup']:g} s warm-up), each followed by in-process "
             f"onnxruntime at the batch size that block formed. Load average (1, 5, 15 min) before: "
             f"{d['loadavg_before']}, after: {d['loadavg_after']}.", "",
             "| concurrency | throughput (req/s) | p50 | p99 | requests per run | model time per run | model busy | "
             "in-process ORT after each block (samples/s) | served / in-process (median of blocks) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c, r in d["served"].items():
        refs = ", ".join(f"{b['in_process']['throughput']:.1f} (batch {b['in_process']['batch']})"
                         for b in r["blocks"])
        ratios = ", ".join(f"{b['ratio']:.0%}" for b in r["blocks"])
        lines.append(f"| {c} | {r['throughput']:.2f} | {r['p50'] * 1e3:.1f} ms | {r['p99'] * 1e3:.1f} ms | "
                     f"{r['requests_per_run']:.2f} | {r['model_seconds_per_run'] * 1e3:.1f} ms | "
                     f"{r['model_busy']:.0%} | {refs} | {r['efficiency']:.0%} ({ratios}) |")
    if "32" in d["served"]:
        eff = d["served"]["32"]["efficiency"]
        ratios = [b["ratio"] for b in d["served"]["32"]["blocks"]]
        lines += ["", f"Target (issue #18): at concurrency 32, at least 70% of in-process onnxruntime's throughput at "
                  f"the batch size the server formed: {eff:.0%} (median of the blocks), "
                  f"**{'met' if eff >= 0.7 else 'missed'}**"
                  + (f"; but the blocks range {min(ratios):.0%}–{max(ratios):.0%}, so under this background load the "
                     "verdict is not robust." if min(ratios) < 0.7 <= max(ratios) else ".")]
    lines.append("")
    if d.get("overhead_s") is not None:
        lines.append(f"- overhead per request at concurrency 1: p50 minus in-process batch 1 (median of the blocks) = "
                     f"{d['overhead_s'] * 1e3:.1f} ms; p50 minus the server's own model time per run = "
                     f"{d['overhead_own_s'] * 1e3:.1f} ms")
    lines.append(f"- server start-up (Ray, Serve, replica): {d['startup_s']:.1f} s")
    lines.append("- model time per run and busy share come from the server's statistics (the replica's own clock "
                 "around each onnxruntime run); runs straddling a block's edges can put the share a little over 100%.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
