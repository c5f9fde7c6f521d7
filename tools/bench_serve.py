#!/usr/bin/env python3
"""`archspec serve` under load vs onnxruntime in this process, as a Markdown table (and JSON).

    python tools/bench_serve.py                                   # ResNet-18, concurrency 1, 8, 32
    python tools/bench_serve.py specs/lenet.yaml --concurrency 1,16 --seconds 10 --protocol json

The model is exported (verified) once, served on a local Ray instance (the same code as
`archspec serve`: one replica, one onnxruntime session with the physical cores' threads, requests
gathered by @serve.batch), and driven by closed-loop clients in this process: each of N threads
sends a request, waits for the answer, sends the next, over one kept-alive HTTP connection, for
--seconds after a warm-up. Request bodies are encoded once before timing (the client's encoding
cost is not the server's). Per concurrency: throughput, p50/p99 latency, and the batch sizes the
server formed (its statistics endpoint: requests per model run).

After each load level, with the server idle, onnxruntime runs in this process (a session as
`archspec run` makes it, same threads) at batch 1 and at the batch size the server formed
(median of repeated runs), so both figures of a row see the same background load: the ratio of the
server's throughput to that is the serving efficiency, and the server's p50 at concurrency 1
minus the in-process batch-1 latency is the overhead per request (HTTP, Ray proxy and actor hops,
request parsing, response encoding).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import shutil
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
    return {"requests": len(flat), "seconds": seconds, "throughput": len(flat) / seconds,
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


def in_process(model: Path, batches: list[int], threads: int, seconds: float) -> dict[int, dict]:
    """onnxruntime in a fresh process (`--reference`), as `archspec run` makes a session, with pool
    threads spinning during a run (archspec's default) and without (as a replica): the faster."""
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--reference", str(model), "--batches",
                          ",".join(map(str, batches)), "--threads", str(threads), "--seconds", str(seconds)],
                         capture_output=True, text=True, check=True, timeout=600)
    return {int(b): v for b, v in json.loads(out.stdout).items()}


def reference(model: str, batches: list[int], threads: int, seconds: float) -> dict[int, dict]:
    import numpy as np

    from archspec.contract import read_contract
    from archspec.runtime import Session

    contract = read_contract(model)
    rows: dict[int, dict] = {}
    for spinning in ("during_run", "never"):
        session = Session(model, threads=threads, spinning=spinning)
        for b in batches:
            rng = np.random.default_rng(0)
            feeds = {t.name: rng.standard_normal([b] + [d if d > 0 else 1 for d in t.shape[1:]]).astype(t.dtype)
                     for t in contract.inputs}
            run = session.run_fn(feeds)
            run()
            times, deadline = [], time.perf_counter() + seconds
            while time.perf_counter() < deadline or len(times) < 5:
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            if b not in rows or med < rows[b]["latency"]:
                rows[b] = {"latency": med, "throughput": b / med, "runs": len(times), "spinning": spinning}
    return rows


def main(argv: list[str] | None = None) -> int:
    from bench_common import busy_processes, loadavg, machine_info

    import archspec
    from archspec.runtime import physical_cores
    from archspec.serve import ServeOptions, load_model, start, stop

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default=str(ROOT / "specs" / "resnet18.yaml"), help="a spec or .onnx file")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per concurrency")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: physical cores)")
    p.add_argument("--protocol", choices=("binary", "json"), default="binary",
                   help="tensors as raw bytes (binary tensor data extension) or JSON numbers")
    p.add_argument("--port", type=int, default=8123)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--reference", help=argparse.SUPPRESS)  # internal: the in-process figures, as JSON
    p.add_argument("--batches", default="1", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reference:
        print(json.dumps(reference(args.reference, [int(b) for b in args.batches.split(",")], args.threads,
                                   args.seconds)))
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
    # the reference, measured right after each load level (the server idle), so that both figures of a
    # row see the same background load of this shared machine
    folder = tempfile.mkdtemp(prefix="bench-serve-")
    model_file = Path(folder) / "model.onnx"
    model_file.write_bytes(data if isinstance(data, bytes) else Path(data).read_bytes())
    served, local = {}, {}
    try:
        for c in levels:
            bodies = [request_bodies(contract, 1, args.protocol, seed=k) for k in range(c)]
            served[c] = load(args.port, contract.name, bodies, args.seconds, args.warmup)
            b = max(1, round(served[c]["requests_per_run"]))
            local[c] = in_process(model_file, sorted({1, b}), threads, min(args.seconds, 5.0))
            print(f"concurrency {c}: {served[c]['throughput']:.2f} req/s, p50 {served[c]['p50'] * 1e3:.1f} ms, "
                  f"p99 {served[c]['p99'] * 1e3:.1f} ms, {served[c]['requests_per_run']:.2f} requests per run; "
                  f"in-process batch {b}: {local[c][b]['throughput']:.2f} samples/s", file=sys.stderr, flush=True)
    finally:
        stop()
        shutil.rmtree(folder, ignore_errors=True)
    load_after = loadavg()

    lines = [f"`archspec serve` {contract.name} ({args.protocol} tensors; 1 replica, {threads} onnxruntime threads, "
             f"--max-batch {args.max_batch}, --batch-wait-ms {args.batch_wait_ms:g}); closed-loop clients in the "
             f"benchmark process on the same machine; {args.seconds:g} s measured per row after {args.warmup:g} s "
             "warm-up.", "",
             "| concurrency | throughput (req/s) | p50 | p99 | requests per run | model time per run | model busy | "
             "in-process ORT at that batch (samples/s) | served / in-process |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c, r in served.items():
        b = max(1, round(r["requests_per_run"]))
        ref = local[c][b]["throughput"]
        r["in_process_batch"], r["in_process_throughput"], r["efficiency"] = b, ref, r["throughput"] / ref
        lines.append(f"| {c} | {r['throughput']:.2f} | {r['p50'] * 1e3:.1f} ms | {r['p99'] * 1e3:.1f} ms | "
                     f"{r['requests_per_run']:.2f} | {r['model_seconds_per_run'] * 1e3:.1f} ms | {r['model_busy']:.0%} | "
                     f"{ref:.2f} (batch {b}, {local[c][b]['spinning']}) | {r['efficiency']:.0%} |")
    overhead = served[1]["p50"] - local[1][1]["latency"] if 1 in served else None
    overhead_own = served[1]["p50"] - served[1]["model_seconds_per_run"] if 1 in served else None
    lines.append("")
    for c, rows in local.items():
        lines.append(f"in-process onnxruntime after concurrency {c}: " + ", ".join(
            f"batch {b}: {v['latency'] * 1e3:.1f} ms ({v['throughput']:.2f} samples/s)" for b, v in rows.items()))
    if overhead is not None:
        lines.append(f"overhead per request at concurrency 1: p50 minus in-process batch 1 = {overhead * 1e3:.1f} ms; "
                     f"p50 minus the server's own model time per run = {overhead_own * 1e3:.1f} ms")
    lines.append(f"server start-up (Ray, Serve, replica): {startup:.1f} s; load average before "
                 f"{load_before}, after {load_after}")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({
            "started": started, "markdown": "\n".join(lines), "model": contract.name, "protocol": args.protocol,
            "threads": threads, "max_batch": args.max_batch,
            "batch_wait_ms": args.batch_wait_ms, "seconds": args.seconds, "warmup": args.warmup,
            "served": {str(c): r for c, r in served.items()},
            "in_process": {str(c): {str(b): v for b, v in rows.items()} for c, rows in local.items()},
            "overhead_s": overhead, "overhead_own_s": overhead_own, "startup_s": startup,
            "loadavg_before": load_before, "loadavg_after": load_after, "busy_processes": busy_processes(),
            "machine": machine_info()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
