"""Runs the whole benchmark suite and writes docs/benchmarks.md and docs/benchmarks.json.

    pip install -e '.[bench]' -c tools/constraints.txt     # the peers: torchinfo, fvcore, thop, ptflops
    python tools/bench_report.py                            # everything (about 8-10 minutes on 2 cores,
                                                            # plus bench_inference.py's own time)
    python tools/bench_report.py --quick                    # fewer repetitions, a smoke test
    python tools/bench_report.py --from-json docs/benchmarks.json   # re-render the Markdown only
    python tools/bench_report.py --from-json docs/benchmarks.json --inference-json inf.json
                                                            # ... with a newer bench_inference.py --json run
    python tools/bench_report.py --from-json docs/benchmarks.json --inference-notes notes.md
                                                            # ... with findings shown under its table

Sections: the machine; the targets; (1) archspec's static analysis against forward-pass tools
(tools/bench_peers.py); the checker's fresh-process speed and its profile (tools/bench_check.py);
(4) serving, tools/bench_serve.py (`--serve-json PATH` includes a saved run);
(2/3) inference, when tools/bench_inference.py exists: if its --help lists `--json`, it is run as
`python tools/bench_inference.py --json PATH` and that JSON goes under "inference" in
docs/benchmarks.json; it may carry "markdown" (a string, included verbatim) or
"tables": [{"title", "columns", "rows", "notes"}] (rendered here), plus "notes". Otherwise it is
run without arguments and its stdout (Markdown) is included verbatim.
`--inference-json PATH` includes such a file without running anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc
from bench_common import fmt_bytes, fmt_count, fmt_stat, fmt_time

DOCS = bc.ROOT / "docs"
INFERENCE_SCRIPT = bc.ROOT / "tools" / "bench_inference.py"
LABELS = {
    "archspec.analyze": "archspec analyze (resolved graph)", "archspec.check": "archspec.check(path)",
    "archspec.summary": "archspec summary (check + table)", "torchinfo": "torchinfo.summary",
    "fvcore": "fvcore FlopCountAnalysis", "thop": "thop.profile", "flopcounter": "torch FlopCounterMode",
    "ptflops": "ptflops (pytorch backend)", "ptflops_aten": "ptflops (aten backend)",
    "forward": "plain forward, no tool (reference)", "archspec": "python: archspec.check(path)",
}
FORWARD_TOOLS = ["torchinfo", "fvcore", "thop", "flopcounter", "ptflops"]
UNITS = {"torchinfo": ("mult-adds", 1), "fvcore": ("flops = MACs", 1), "thop": ("MACs", 1),
         "flopcounter": ("FLOPs = 2·MACs", 2), "ptflops": ("MACs", 1), "ptflops_aten": ("MACs", 1)}
POOLS = {"maxpool2d", "avgpool2d", "adaptive_avgpool2d", "global_avgpool", "global_maxpool"}


def run_json(script: str, args: list[str], timeout: float | None = None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    try:
        t = time.perf_counter()
        proc = subprocess.run([bc.PY, str(bc.ROOT / "tools" / script), *args, "--json", str(out)], cwd=bc.ROOT,
                              check=False, timeout=timeout)
        if proc.returncode != 0 or not out.stat().st_size:
            return {"error": f"{script} exited {proc.returncode}"}
        data = json.loads(out.read_text())
        data["suite_seconds"] = time.perf_counter() - t
        return data
    finally:
        out.unlink(missing_ok=True)


def run_inference(timeout: float) -> dict:
    """tools/bench_inference.py belongs to the export work: with `--json` (if its --help lists it)
    its JSON is kept; otherwise its stdout (a Markdown table) is included verbatim."""
    t = time.perf_counter()
    try:
        helptext = subprocess.run([bc.PY, str(INFERENCE_SCRIPT), "--help"], cwd=bc.ROOT, capture_output=True,
                                  text=True, timeout=120, check=False).stdout
        if "--json" in helptext:
            data = run_json(INFERENCE_SCRIPT.name, [], timeout=timeout)
        else:
            proc = subprocess.run([bc.PY, str(INFERENCE_SCRIPT)], cwd=bc.ROOT, capture_output=True, text=True,
                                  timeout=timeout, check=False)
            data = {"markdown": proc.stdout, "stderr_tail": proc.stderr[-2000:], "returncode": proc.returncode}
            if proc.returncode != 0:
                data["error"] = f"exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    except subprocess.TimeoutExpired:
        data = {"error": f"did not finish within {timeout:.0f} s"}
    data["suite_seconds"] = time.perf_counter() - t
    return data


# -- Markdown helpers ---------------------------------------------------------------------------

def table(columns: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def med(st: dict | None) -> float | None:
    return st.get("median") if st and st.get("n") else None


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    r = a / b
    return f"{r:,.0f}×" if r >= 100 else f"{r:.1f}×" if r >= 10 else f"{r:.2f}×"


def noise(st: dict | None) -> str:
    return f"±{100 * st['iqr_rel'] / 2:.0f}%" if st and st.get("n", 0) >= 4 else "n/a"


def fastest_tool(t: dict) -> tuple[str | None, dict | None, str]:
    """The fastest forward tool of an in-process timing table, over both thread settings."""
    best = None
    for k in FORWARD_TOOLS:
        for key, how in ((k, "default threads"), (f"{k}@1", "1 thread")):
            st = (t.get(key) or {}).get("wall")
            if med(st) is not None and (best is None or med(st) < med(best[1])):
                best = (k, st, how)
    return best or (None, None, "")


def ok(flag: bool | None) -> str:
    return "n/a" if flag is None else ("**met**" if flag else "**missed**")


# -- sections -------------------------------------------------------------------------------------

def obstacles_section(data: dict) -> list[str]:
    """What stands between archspec and the 1000x target, from the profiles."""
    peers, check = data.get("peers") or {}, data.get("check") or {}
    pa, stg, yp = check.get("profile_analyze") or {}, check.get("stages") or {}, check.get("yaml_parsers") or {}
    if not pa:
        return []
    out = ["### What stands in the way of 1000×", ""]
    rows = []
    for model, v in pa.items():
        r = (peers.get("inproc") or {}).get(model) or {}
        t = r.get("timing") or {}
        fastest, fst, how = fastest_tool(t)
        f = med(fst)
        s = stg.get(model) or {}
        pf = yp.get("per_file") or {}
        py, cy = (pf.get("python") or {}).get(model), (pf.get("libyaml") or {}).get(model)
        rows.append([model, v["nodes"], fmt_stat(v["time"]), f"{v['per_node'] * 1e6:.1f} µs",
                     f"{fmt_time(f)} ({LABELS.get(fastest, '')}, {how})" if f else "n/a",
                     fmt_time(f / 1000) if f else "n/a",
                     f"{fmt_time(s.get('load'))} / {fmt_time(s.get('resolve'))} / {fmt_time(s.get('analyze'))}",
                     f"{fmt_time(py)} → {fmt_time(cy)}" if py and cy else "n/a"])
    out += ["The analysis walk alone (200 calls on the resolved graph, in a process of the check suite), the "
            "budget 1000× leaves against the fastest forward tool of the in-process table, and the stages of the "
            "full `archspec.check(path)` (median of 7, warm):", ""]
    out += table(["model", "nodes", "analyze, median (q1–q3)", "per node", "fastest forward tool", "1000× budget",
                  "check: load / resolve / analyze", "YAML parse of the file: Python → libyaml"], rows)
    first = next(iter(pa.values()))
    out += ["Where the walk's time goes (cProfile, share of its own time; `layer`, `node` and `sequence` are "
            "analyze.py's recursive walker):", ""]
    out += table(["function", "calls per analyze", "share"],
                 [[f"`{r['function']}`", f"{r['calls_per_analyze']:.0f}", f"{100 * r['share']:.0f}%"] for r in first["top"]])
    strrow = first.get("tensortype_str")
    notes = [f"The walk costs about {first['per_node'] * 1e6:.0f} µs per node in pure Python: one dataclass per node "
             "(NodeReport, TensorType, Cost), `_add` for every child's cost, `numel` recomputed several times per "
             "layer, and a registry lookup plus shape rule per layer."]
    if strrow:
        notes.append(f"`analyze.py:_Walker.layer` formats its diagnostic context eagerly on every layer, also when "
                     f"nothing is wrong: `related = ((f\"its input {{x}} comes from ...\", ...),)` calls "
                     f"`TensorType.__str__` {strrow['calls_per_analyze']:.0f} times per resnet50 walk "
                     f"({100 * strrow['cum_share']:.0f}% of the walk with the join, plus the f-string itself). Build it only "
                     "when an error is reported (build `related` inside the error branches).")
    cnt = (peers.get("counts") or {}).get("resnet50") or {}
    if cnt.get("kinds"):
        leaves = sum(k["layers"] for k in cnt["kinds"].values())
        notes.append(f"Repeated blocks are re-walked: resnet50's {leaves} layers are only {cnt.get('distinct_leaves')} "
                     "distinct (kind, parameters, input shape) combinations. Caching a layer's (output type, cost) on "
                     "that key was tried and measured: no gain (resnet50 1.14 → 1.22 ms, vgg16 0.27 → 0.32 ms) — "
                     "hashing the key (frozen pydantic parameters and the input type) costs as much as the shape and "
                     "cost rules it skips, and the per-node records still have to be made.")
    loader = yp.get("archspec_loader") or ""
    if loader.startswith("C"):
        notes.append("The full `archspec.check(path)` is load + resolve + analyze; load already reads libyaml's events "
                     f"(`{loader}`), so what remains is resolve (pydantic validation of every item, expansion of "
                     "blocks and repeats) and the walk, each of the same order as the walk.")
    else:
        notes.append("The full `archspec.check(path)` cannot reach 1000× an in-process forward tool on these models: "
                     "its load stage is mostly pure-Python YAML parsing (the last column); with libyaml it drops by "
                     "that much, and resolve (pydantic validation, expansion) and the walk remain.")
    fresh = peers.get("fresh") or {}
    cold = []
    for model in pa:
        res = fresh.get(model) or {}
        tools = {k: med(((res.get(k) or {}).get("phases") or {}).get("analysis")) for k in FORWARD_TOOLS}
        tools = {k: v for k, v in tools.items() if v}
        a = med(((res.get("archspec") or {}).get("phases") or {}).get("analysis"))
        if tools and a:
            k = min(tools, key=tools.get)
            cold.append(f"{model}: {LABELS[k]} {fmt_time(tools[k])} against archspec.check {fmt_time(a)}, "
                        f"{ratio(tools[k], a)}")
    if cold:
        notes.append("A tool's first call in a fresh process is far slower than its warm call (oneDNN kernels "
                     "created, caches filled; the 'analysis' column of the fresh-process tables): fastest first call "
                     "against archspec's first check — " + "; ".join(cold) + ". For 1000× the analysis walk needs "
                     "a tool call of at least " + ", ".join(f"{fmt_time(1000 * med(v['time']))} ({m})" for m, v in pa.items())
                     + ": tools slowed by a cold start or by contention reach that, warm in-process calls on a quiet "
                     "machine do not.")
    out += [f"- {n}" for n in notes] + [""]
    return out


def machine_section(m: dict, data: dict) -> list[str]:
    v = m["versions"]
    rows = [["CPU", f"{m['cpu_model']} ({m['cpu_count']} logical cores, {m['cpu_affinity']} usable)"],
            ["memory", fmt_bytes(m["mem_total"])], ["OS", m["os"]], ["Python", m["python"]],
            ["torch threads (intra-op)", _torch_threads(data)],
            ["archspec", f"{v['archspec']} (git {m['git'].get('commit')}"
                         f"{', archspec/ modified in the working tree' if m['git'].get('archspec_dirty') else ''})"],
            ["torch", v["torch"]], ["pydantic / pydantic-core", f"{v['pydantic']} / {v['pydantic_core']}"],
            ["PyYAML", v["PyYAML"]],
            ["peers", ", ".join(f"{k} {v[k]}" for k in ("torchinfo", "fvcore", "thop", "ptflops"))],
            ["onnx / onnxruntime", f"{v['onnx']} / {v['onnxruntime']}"],
            ["hyperfine", m.get("hyperfine") or "not installed"],
            ["PYTHONDONTWRITEBYTECODE", m["env"].get("PYTHONDONTWRITEBYTECODE") or "unset"],
            ["date", m["date"]]]
    out = ["## Machine", ""] + table(["", ""], rows)
    loads = []
    for name in ("check", "peers"):
        sec = data.get(name) or {}
        if sec.get("load"):
            loads.append(f"{name}: " + ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in sec["load"].items()))
    if loads:
        out += ["Load average (1/5/15 min) through the run: " + "; ".join(loads) + ". It counts the suite's own "
                "processes too (a forward pass on 2 threads is 2 runnable threads), so with 2 cores it says "
                "little by itself; the processes below are the others seen.", ""]
    busy = []
    for name in ("check", "peers"):
        for key in ("busy_start", "busy_end"):
            for row in (data.get(name) or {}).get(key, []):
                if row not in busy and "tools/bench_" not in row:
                    busy.append(row)
    out += ["Other processes seen using CPU at the start and end of each part (ps, lifetime %CPU): "
            + ("; ".join(f"`{b}`" for b in busy[:6]) if busy else "none") + ".", ""]
    return out


def _torch_threads(data: dict) -> str:
    for r in ((data.get("peers") or {}).get("inproc") or {}).values():
        if isinstance(r, dict) and r.get("torch_threads"):
            return str(r["torch_threads"])
    return "n/a"


def targets(data: dict) -> tuple[list[str], list[dict]]:
    rows, found = [], []
    peers = data.get("peers") or {}
    for model in ("resnet50", "vgg16"):
        r = (peers.get("inproc") or {}).get(model)
        if not r or "timing" not in r:
            continue
        t = r["timing"]
        fastest, f, how = fastest_tool(t)
        for variant in ("archspec.analyze", "archspec.check"):
            a = t[variant]["wall"]
            speed = f["median"] / a["median"]
            worst = f["q1"] / a["q3"]
            met = speed >= 1000
            rows.append([f"{model}: {LABELS[variant]} ≥ 1000× faster than the fastest forward tool "
                         f"({LABELS[fastest]}, {how}, {fmt_stat(f)})",
                         f"{fmt_stat(a)} → **{speed:,.0f}×** (conservative: tool q1 / archspec q3 = {worst:,.0f}×)", ok(met)])
            found.append({"target": f"{model} {variant} >= 1000x", "speedup": speed, "conservative": worst, "met": met})
    check = data.get("check") or {}
    lad = check.get("ladder") or {}
    one = (check.get("config") or {}).get("one_spec", "resnet50")
    for label, key, limit in ((f"`archspec check specs/{one}.yaml`, fresh process", f"archspec check specs/{one}.yaml", 0.25),
                              ("`archspec check specs/` (whole zoo), fresh process", "archspec check specs/", 0.5)):
        for variant, suffix in (("as this environment runs it", ""), ("with cached bytecode", " (cached .pyc)")):
            st = (lad.get(key + suffix) or {}).get("wall")
            if not st:
                continue
            met = st["median"] <= limit
            rows.append([f"{label} ≤ {limit} s ({variant})", f"{fmt_stat(st)}; {noise(st)} noise", ok(met)])
            found.append({"target": f"{key}{suffix} <= {limit}s", "median": st["median"], "met": met})
    ort_rows, ort_found = ort_targets(data.get("inference") or {})
    rows += ort_rows
    found += ort_found
    return ["## Targets", ""] + table(["target", "measured: median (q1–q3)", ""], rows), found


# (spec, batch, target): onnxruntime latency / eager torch latency at most `ratio`, at the spec's nominal size
ORT_RATIO_TARGETS = [("resnet50", 1, 0.55), ("rnn_classifier", 1, 0.2), ("gru_classifier", 1, 0.2),
                     ("lstm_classifier", 1, 0.2)]
GEMM_SHARE_TARGET = ("resnet50", 8, 0.8)  # onnxruntime GFLOP/s at least this share of the measured GEMM


def inference_row(inf: dict, spec: str, batch: int) -> dict | None:
    """The benchmark row of `spec` at `batch` and its nominal input size (the first one measured)."""
    return next((r for r in inf.get("rows", []) if r["spec"] == spec and r["batch"] == batch), None)


def row_gflops(r: dict, engine: str) -> float:
    return 2 * r["macs"] * r["batch"] / r[engine]["median"] / 1e9


def ort_targets(inf: dict) -> tuple[list[list], list[dict]]:
    rows, found = [], []
    for spec, batch, limit in ORT_RATIO_TARGETS:
        r = inference_row(inf, spec, batch)
        if r is None:
            continue
        t, o = r["torch"], r["ort"]
        got, worst = o["median"] / t["median"], o["q3"] / t["q1"]
        met = got <= limit
        rows.append([f"{spec} batch {batch} ({'x'.join(map(str, r['input_shape']))}): onnxruntime ≤ {limit}× eager "
                     "PyTorch latency",
                     f"{fmt_time(o['median'])} ({fmt_time(o['q1'])}–{fmt_time(o['q3'])}) vs torch {fmt_time(t['median'])} "
                     f"({fmt_time(t['q1'])}–{fmt_time(t['q3'])}) → **{got:.2f}×** (conservative: ORT q3 / torch q1 = "
                     f"{worst:.2f}×)", ok(met)])
        found.append({"target": f"{spec} b{batch} ort/torch <= {limit}", "ratio": got, "conservative": worst,
                      "met": met})
    spec, batch, share = GEMM_SHARE_TARGET
    r = inference_row(inf, spec, batch)
    gemm = r and (r.get("gemm_gflops") or inf.get("gemm_gflops"))  # a merged run's rows carry their own
    if r is not None and gemm:
        got = row_gflops(r, "ort") / gemm
        met = got >= share
        rows.append([f"{spec} batch {batch}: onnxruntime ≥ {share:.0%} of the measured float32 GEMM throughput",
                     f"{row_gflops(r, 'ort'):.1f} GFLOP/s of {gemm:.1f} → **{got:.0%}**", ok(met)])
        found.append({"target": f"{spec} b{batch} ort >= {share:.0%} gemm", "share": got, "met": met})
    return rows, found


def ort_obstacles_section(inf: dict) -> list[str]:
    """Why an onnxruntime ratio target is missed: the latency it needs, as GFLOP/s against the
    machine's measured GEMM, and where each engine's time goes (the profiles of bench_inference)."""
    gemm = inf.get("gemm_gflops")
    profiles = inf.get("profiles") or {}
    if not inf.get("rows"):
        return []
    best = max(inf["rows"], key=lambda r: row_gflops(r, "ort"))
    best_gflops = row_gflops(best, "ort")
    rows = []
    for spec, batch, limit in ORT_RATIO_TARGETS:
        r = inference_row(inf, spec, batch)
        if r is None or r["ort"]["median"] / r["torch"]["median"] <= limit:
            continue
        need = limit * r["torch"]["median"]
        need_gflops = 2 * r["macs"] * batch / need / 1e9
        p = profiles.get(spec) or {}
        top = (p.get("ort_ops") or [{}])[0]
        share = top.get("us_per_call", 0) / p["ort_kernels_us"] if p.get("ort_kernels_us") else None
        run_gemm = r.get("gemm_gflops") or gemm
        rows.append([spec, f"{fmt_time(r['torch']['median'])} / {fmt_time(r['ort']['median'])}",
                     f"{row_gflops(r, 'torch'):.1f} / {row_gflops(r, 'ort'):.1f}", fmt_time(need),
                     f"{need_gflops:.0f}" + (f" ({need_gflops / run_gemm:.0%} of GEMM, " if run_gemm else " (")
                     + f"{need_gflops / best_gflops:.0%} of ORT's best)",
                     f"{top.get('op', 'n/a')} ×{top.get('nodes', '?')}: {share:.0%}" if share is not None else "n/a"])
    if not rows:
        return []
    out = ["### What stands in the way of the onnxruntime targets", "",
           "The latency each missed ratio target asks of onnxruntime, as the throughput it would need (2·MACs per "
           "sample / latency), against the machine's measured float32 GEMM"
           + (f" ({gemm:.1f} GFLOP/s, same run)" if gemm and not inf.get("runs") else
              " (measured by each row's own run)" if gemm else "") + " and against the most onnxruntime reached on "
           f"any model measured ({best_gflops:.1f} GFLOP/s, {best['spec']} batch {best['batch']}); "
           "and the operator that dominates onnxruntime's kernel time (its own per-node profiler, batch 1):", ""]
    out += table(["spec", "torch / ORT", "GFLOP/s torch / ORT", "ORT latency needed", "GFLOP/s needed",
                  "ORT's dominant operator: share of kernel time"], rows)
    out += ["- The ratio targets are relative to eager PyTorch, which is itself fast here: its LSTM runs oneDNN's "
            "fused RNN kernel (`aten::mkldnn_rnn_layer` in the profile below) and its convolutions oneDNN's. Where "
            "the latency needed asks for more GFLOP/s than onnxruntime reaches on any model (the GEMM-shaped work "
            "of large batches included), no float32 graph can meet the target on this machine; the remaining lever "
            "would be lower precision (int8/bf16), which changes the numbers the export promises to reproduce "
            "(≤ 1e-5 relative error).",
            "- At batch 1 a recurrent layer is a chain of T matrix–vector products (one per time step, each waiting "
            "for the previous one), so its speed is the latency of a small GEMV plus a thread-pool hand-off per "
            "step, not the GEMM's throughput. Our part of the graph — the nodes around the recurrent kernels — is "
            "a few microseconds per node: the GRU and LSTM build no zero initial states (the operators' default), "
            "the RNN's Scan builds one (N, H) zero state from the input's shape (3 nodes), and the "
            "classifier reads the top layer's final state rather than transposing the output sequence.",
            "- The RNN is not ONNX's RNN operator but a Scan over the steps (MatMul, Add, Tanh), after the input "
            "projection of every step as one MatMul: onnxruntime's RNN kernel took 8× as long at batch 8 as at "
            "batch 1 (3.9 ms against eager PyTorch's 2.6 ms); `python tools/bench_rnn_forms.py` measures the forms "
            "(section 2/3).",
            "- onnxruntime's pool threads spin while a run is in progress and stop when it returns "
            "(`session.force_spinning_stop`), which cut the recurrent classifiers' latency by 15–50% against no "
            "spinning without stealing the cores torch uses next (`python tools/bench_inference.py "
            "specs/lstm_classifier.yaml --batch 1 --spinning never`, against the default `during_run`); and the "
            "benchmark lets the cores settle for 10 ms between the engines' blocks, because torch's OpenMP threads "
            "busy-wait after its call returns and slowed the onnxruntime call right after it by about 15%.", ""]
    return out


def profiles_section(inf: dict) -> list[str]:
    profiles = inf.get("profiles") or {}
    if not profiles:
        return []
    out = ["### Where the time goes (batch 1)", "",
           "onnxruntime: kernel time per operator type from its per-node profiler (`enable_profiling`); torch: self "
           "CPU time per aten operator from `torch.profiler`; both per call, averaged over 30 calls after a warm-up, "
           "same weights and input. The profilers add their own overhead, so the totals exceed the latencies above.",
           ""]
    rows = []
    for spec, p in profiles.items():
        ort_ops = "; ".join(f"{o['op']} ×{o['nodes']} {fmt_time(o['us_per_call'] / 1e6)}" for o in p["ort_ops"][:4])
        torch_ops = "; ".join(f"{o['op'].removeprefix('aten::')} ×{o['calls_per_run']} {fmt_time(o['us_per_call'] / 1e6)}"
                              for o in p["torch_ops"][:4])
        rows.append([spec, "x".join(map(str, p["input_shape"])),
                     f"{fmt_time(p['ort_kernels_us'] / 1e6)} in {p['ort_nodes']} nodes", ort_ops,
                     fmt_time(p["torch_self_us"] / 1e6), torch_ops])
    return out + table(["spec", "input", "ORT kernels", "ORT top operators", "torch ops", "torch top operators"], rows)


def peers_section(p: dict) -> list[str]:
    out = ["## 1. Static analysis against forward-pass tools", ""]
    cfg = p.get("config", {})
    out += [f"Models are built from the spec with `archspec.build(report, seed=0).eval()` on CPU; every forward tool "
            "runs the model once at batch 1 on the spec's input size, under `torch.no_grad()`. "
            f"In-process: the analysis call only, after imports and with the model built; one discarded warm-up round, then "
            f"{cfg.get('rounds')} rounds (10 for lstm_classifier) in which every tool runs once, in an order that rotates "
            f"each round; archspec's calls take milliseconds, so each round times them {cfg.get('arch_inner')} times ({(cfg.get('arch_inner') or 0) // 4} for summary). "
            "Each forward tool runs with torch's default intra-op threads and, in the same rounds, with one thread. "
            "Figures are median (q1–q3) wall time; CPU time is user+system of the process (all torch threads). "
            "The ratios divide medians measured in the same rounds of the same process.", ""]
    for model, r in (p.get("inproc") or {}).items():
        if "timing" not in r:
            out += [f"### {model}: failed ({r.get('error')})", ""]
            continue
        t = r["timing"]
        a_an, a_ch = med(t["archspec.analyze"]["wall"]), med(t["archspec.check"]["wall"])
        n_thr = r.get("torch_threads")
        rows = []
        for k in ["archspec.analyze", "archspec.check", "archspec.summary"] + FORWARD_TOOLS + ["forward"]:
            w, one = t[k]["wall"], (t.get(f"{k}@1") or {}).get("wall")
            heap = (r.get("memory") or {}).get(k, {}).get("python_heap_peak")
            fast = min(x for x in (med(w), med(one)) if x is not None) if med(w) is not None else None
            rows.append([LABELS[k], fmt_stat(w), fmt_time(med(t[k]["cpu"])),
                         fmt_stat(one) if one else "", fmt_time(med((t.get(f"{k}@1") or {}).get("cpu"))) if one else "",
                         fmt_bytes(heap),
                         "" if k.startswith("archspec") else ratio(fast, a_an),
                         "" if k.startswith("archspec") else ratio(fast, a_ch)])
        out += [f"### {model} — in-process ({r['archspec']['params']:,} params, {r['archspec']['macs']:,} MACs; "
                f"weights {fmt_bytes(r.get('weights_bytes'))})", ""]
        out += table(["", f"wall, {n_thr} threads: median (q1–q3)", "CPU", "wall, 1 thread", "CPU, 1 thread",
                      "Python heap peak", "÷ archspec analyze (faster setting)", "÷ archspec.check"], rows)
        fw, fw1 = med(t["forward"]["wall"]), med((t.get("forward@1") or {}).get("wall"))
        if fw and fw1 and n_thr and n_thr > 1 and fw > fw1:
            out += [f"With {n_thr} threads the plain forward pass was slower than with one ({fmt_time(fw)} against "
                    f"{fmt_time(fw1)}): the cores were oversubscribed at times (other processes, the suite's own "
                    "parent, or CPU steal on this VM), and torch's OpenMP barriers wait on descheduled threads. "
                    "The single-threaded column is the one that contention cannot blow up.", ""]
        mem = r.get("memory") or {}
        if mem.get("archspec.check", {}).get("rss_peak_over_imports") is not None:
            out += [f"archspec's RSS high-water mark above the process's RSS after imports: analyze "
                    f"{fmt_bytes(mem['archspec.analyze']['rss_peak_over_imports'])}, check "
                    f"{fmt_bytes(mem['archspec.check']['rss_peak_over_imports'])}, summary "
                    f"{fmt_bytes(mem['archspec.summary']['rss_peak_over_imports'])} (page granularity). "
                    "The forward tools' RSS is in the fresh-process table below: in this process the heap left "
                    "by earlier rounds stays resident and would blur it.", ""]
        unstable = [k for k, v in (r.get("counts_stable") or {}).items() if not v]
        if unstable:
            out += [f"Counts changed between rounds for: {', '.join(unstable)}.", ""]
    fresh = p.get("fresh") or {}
    if fresh:
        out += ["### Whole fresh processes", "",
                f"Each command starts a new interpreter: `archspec summary <spec>` (the console script), a script "
                f"calling `archspec.check`, and per tool a script that imports torch, archspec and the tool, builds the "
                f"model and runs the tool once. Interleaved, {cfg.get('fresh_reps')} rounds per model; wall, CPU and "
                "ru_maxrss from wait4 for that child alone. Inside each script: time of the imports, the build and the "
                "analysis, and the RSS high-water mark during the analysis (reset just before it) above the RSS after "
                "imports — for a forward tool this includes the model's weights, which stay resident.", ""]
        for model, res in fresh.items():
            rows = []
            a_sum = med((res.get("archspec summary (cached .pyc)") or res.get("archspec summary") or {}).get("wall"))
            for k, v in res.items():
                ph = v.get("phases") or {}
                rows.append([LABELS.get(k, f"`{k}`" if k.startswith("archspec") else k), fmt_stat(v["wall"]),
                             fmt_time(med(v["cpu"])), fmt_bytes(med(v["maxrss"])),
                             fmt_time(med(ph.get("import"))) if ph else "", fmt_time(med(ph.get("build"))) if ph else "",
                             fmt_time(med(ph.get("analysis"))) if ph else "",
                             fmt_bytes(med(ph.get("peak_analysis"))) if ph else "",
                             "" if k.startswith("archspec") else ratio(med(v["wall"]), a_sum),
                             v.get("failures") or ""])
            out += [f"#### {model}", ""]
            out += table(["command", "wall, median (q1–q3)", "CPU", "ru_maxrss", "imports", "build", "analysis",
                          "analysis peak RSS over imports", "÷ archspec summary (cached .pyc)", "failed runs"], rows)
    return out


def counts_section(p: dict) -> list[str]:
    counts = p.get("counts") or {}
    if not counts:
        return []
    out = ["### Counts each tool reports", "",
           "Whole model, in each tool's own unit; the ratio divides by archspec's MACs times the unit's multiple "
           "(FlopCounterMode counts 2 FLOPs per multiply-accumulate, the others 1). archspec's MACs exclude bias, "
           "normalisation, activations and pooling (README, 'Conventions').", ""]
    tools = FORWARD_TOOLS + ["ptflops_aten"]
    rows = []
    for model, c in counts.items():
        if "whole" not in c:
            continue
        a = c["archspec"]
        row = [model, fmt_count(a["params"]), fmt_count(a["macs"])]
        for t in tools:
            v = c["whole"].get(t)
            row.append(v if isinstance(v, str) else f"{fmt_count(v)} ({ratio(v, a['macs'] * UNITS[t][1])})")
        rows.append(row)
    out += table(["model", "archspec params", "archspec MACs"] + [f"{LABELS[t]} [{UNITS[t][0]}]" for t in tools], rows)
    out += ["Per layer kind: each distinct layer of the model runs through each tool on its own (wrapped in "
            "`nn.Sequential(...).eval()`), summed over the model's layers of that kind. Where archspec counts MACs "
            "the cell shows the ratio to them; where it counts none, the count as a multiple of the layer's "
            "elements (n = output elements, n_in = input elements for pooling). 'merges and glue' is the "
            "whole-model count minus the sum of the layers: the residual adds and concats.", ""]
    for model, c in counts.items():
        if "kinds" not in c:
            continue
        rows = []
        for kind, k in c["kinds"].items():
            row = [kind, k["layers"], fmt_count(k["archspec_macs"])]
            for t in tools:
                v = k.get(t)
                row.append(_kind_cell(v, k, kind, UNITS[t][1]))
            rows.append(row)
        g = c.get("glue") or {}
        rows.append(["merges and glue", "", fmt_count(g.get("archspec_macs"))] +
                     [fmt_count(g.get(t)) if g.get(t) is not None else "n/a" for t in tools])
        out += [f"#### {model}", ""]
        out += table(["kind", "layers", "archspec MACs"] + [LABELS[t] for t in tools], rows)
    return out


def _kind_cell(v, k: dict, kind: str, unit: int) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return "n/a"
    if k["archspec_macs"]:
        return f"{fmt_count(v)} ({ratio(v, k['archspec_macs'] * unit) if v else '0×'})"
    if not v:
        return "0"
    n, sym = (k["n_in"], "n_in") if kind in POOLS else (k["n_out"], "n")
    return f"{fmt_count(v)} ({v / n:.2f}·{sym})" if n else fmt_count(v)


def claims_section(p: dict) -> list[str]:
    c = p.get("counts") or {}
    pr = p.get("probes") or {}
    out = ["### Why the counts disagree — the claims, checked here", ""]

    def kind(model, k):
        return ((c.get(model) or {}).get("kinds") or {}).get(k)

    bullets = []
    # 1. fvcore recurrent
    rec = {k: (kind(f"{k}_classifier", k) or {}).get("fvcore") for k in ("rnn", "gru", "lstm")}
    plain = {k: ((pr.get("recurrent") or {}).get(k) or {}).get("fvcore", {}).get("plain_torch") for k in ("rnn", "gru", "lstm")}
    if any(v is not None for v in rec.values()):
        verdict = "confirmed" if all(v == 0 for v in rec.values()) else "not reproduced"
        bullets.append(f"**fvcore reports 0 for RNN/GRU/LSTM** — {verdict}: rnn {fmt_count(rec['rnn'])}, gru "
                       f"{fmt_count(rec['gru'])}, lstm {fmt_count(rec['lstm'])} for archspec's layers, and "
                       f"{', '.join(f'{k} {fmt_count(v)}' for k, v in plain.items())} for plain torch.nn modules: "
                       "fvcore has no handler for aten::rnn_tanh, aten::gru or aten::lstm and skips them as unsupported.")
    # 2. FlopCounterMode
    fl = {k: (kind(f"{k}_classifier", k) or {}).get("flopcounter") for k in ("rnn", "gru", "lstm")}
    meta = pr.get("meta") or {}
    if fl.get("lstm") is not None:
        verdict = "confirmed" if fl["lstm"] == 0 else "not reproduced"
        mtxt = ", ".join(f"{k} {fmt_count(v['flopcounter_meta'])} = {v['flopcounter_meta'] / v['archspec_macs']:.2f}× archspec MACs"
                         for k, v in meta.items())
        bullets.append(f"**FlopCounterMode reports 0 for LSTM on CPU** — {verdict}: lstm {fmt_count(fl['lstm'])}, while "
                       f"gru {fmt_count(fl['gru'])} and rnn {fmt_count(fl['rnn'])} are 2× archspec's MACs "
                       f"({ratio(fl['gru'], 2 * kind('gru_classifier', 'gru')['archspec_macs'])}, "
                       f"{ratio(fl['rnn'], 2 * kind('rnn_classifier', 'rnn')['archspec_macs'])}); a plain nn.LSTM gives "
                       f"{fmt_count(((pr.get('recurrent') or {}).get('lstm') or {}).get('flopcounter', {}).get('plain_torch'))} too. "
                       "On CPU torch runs the LSTM as oneDNN's aten::mkldnn_rnn_layer, which has no FLOP formula; the GRU and RNN decompose into "
                       f"matmuls. On the meta device every model counts (whole model, FLOPs): {mtxt}.")
    # 3. thop BN
    bn = kind("resnet50", "batchnorm")
    if bn:
        f = bn["thop"] / bn["n_out"] if bn["n_out"] else None
        verdict = "confirmed" if f is not None and abs(f - 4) < 1e-9 else f"measured {f:.2f}n"
        bullets.append(f"**thop counts BatchNorm as 4n** — {verdict}: resnet50's 53 BatchNorms have n = "
                       f"{fmt_count(bn['n_out'])} output elements and thop reports {fmt_count(bn['thop'])} "
                       f"({f:.2f}n; its normalisation rule is 2n, doubled for affine). For the same layers fvcore reports "
                       f"{bn['fvcore'] / bn['n_out']:.2f}n, ptflops {bn['ptflops'] / bn['n_out']:.2f}n, torchinfo "
                       f"{fmt_count(bn['torchinfo'])} (the 2·C affine parameters, once per sample) and FlopCounterMode "
                       f"{fmt_count(bn['flopcounter'])}; archspec counts 0 MACs and {bn['archspec_flops'] / bn['n_out']:.0f}n FLOPs.")
    # 4. ptflops relu / pooling
    relu, mp = kind("resnet50", "relu"), kind("resnet50", "maxpool2d")
    gp = kind("resnet50", "global_avgpool")
    if relu and mp:
        fr, fm = relu["ptflops"] / relu["n_out"], mp["ptflops"] / mp["n_in"]
        verdict = "confirmed" if abs(fr - 2) < 1e-9 and abs(fm - 2) < 1e-9 else f"measured relu {fr:.2f}n, maxpool {fm:.2f}n_in"
        extra = (f"; archspec's global average pool is a module ptflops has no hook for, calling "
                 f"F.adaptive_avg_pool2d, so only the patched functional counts it: {gp['ptflops'] / gp['n_in']:.2f}·n_in") if gp else ""
        avg = kind("inception_v3", "avgpool2d")
        if avg:
            extra += f"; inception_v3's avgpool2d layers: {avg['ptflops'] / avg['n_in']:.2f}·n_in"
        bullets.append(f"**ptflops double-counts ReLU and pooling** — {verdict}: resnet50's ReLUs {fmt_count(relu['ptflops'])} = "
                       f"{fr:.2f}n, its max pool {fmt_count(mp['ptflops'])} = {fm:.2f}·n_in. The module hook counts them once "
                       "and the patched torch.nn.functional call inside the module's forward counts them again" + extra + ".")
    # 5. torchinfo linear on sequences
    lin = kind("bilstm_tagger", "linear")
    if lin:
        t_len = lin["n_in"] // 256 if lin["n_in"] % 256 == 0 else None
        r = lin["archspec_macs"] / lin["torchinfo"] if lin["torchinfo"] else None
        verdict = "confirmed" if r and t_len and abs(r - t_len) / t_len < 0.05 else "see numbers"
        bullets.append(f"**torchinfo undercounts a linear layer on sequences by the sequence length** — {verdict}: "
                       f"bilstm_tagger's per-token classifier (50 steps × 256 → 17) is {fmt_count(lin['archspec_macs'])} MACs; "
                       f"torchinfo reports {fmt_count(lin['torchinfo'])}, {r:.1f}× fewer: it multiplies a layer's parameter "
                       "count (bias included) by the batch size only, not by the positions the layer is applied at.")
    # found here
    found = []
    recp = pr.get("recurrent") or {}
    if recp:
        cells = []
        for k, v in recp.items():
            cells.append(f"{k}: thop {fmt_count(v['thop']['archspec_module'])} vs {fmt_count(v['thop']['plain_torch'])} plain, "
                         f"ptflops {fmt_count(v['ptflops']['archspec_module'])} vs {fmt_count(v['ptflops']['plain_torch'])} plain")
        found.append("**thop and ptflops report 0 for archspec's RNN/GRU/LSTM layers**, but count plain torch modules of the "
                     "same shape (" + "; ".join(cells) + f"). archspec lowers them to subclasses ({recp['lstm']['module_class']}, "
                     "which return the output the spec asks for), and both tools look a module's exact type up in their "
                     "table of handlers. On plain modules both also count gate element-wise work, so they land above "
                     "archspec's MACs.")
        lstm = recp.get("lstm") or {}
        ti = lstm.get("torchinfo") or {}
        if ti:
            found.append(f"**torchinfo's recurrent count depends on the output the layer returns**: it multiplies the "
                         f"parameters (biases included) by output.shape[1]. A plain nn.LSTM returns (N, T, H): "
                         f"{fmt_count(ti['plain_torch'])} ({ratio(ti['plain_torch'], lstm['archspec_macs'])} archspec's "
                         f"{fmt_count(lstm['archspec_macs'])}); archspec's `output: last` returns (N, H), so the factor "
                         f"becomes H = 256 instead of T = 50: {fmt_count(ti['archspec_module'])} "
                         f"({ratio(ti['archspec_module'], lstm['archspec_macs'])}).")
    emb = kind("bilstm_tagger", "embedding")
    if emb:
        found.append(f"**torchinfo counts an embedding lookup as mult-adds** ({fmt_count(emb['torchinfo'])} for a "
                     "10000×128 table: its parameter count), and the bias of every linear layer and the affine "
                     "parameters of every BatchNorm once per sample; the other tools count the lookup as 0.")
    r50 = c.get("resnet50") or {}
    if r50.get("whole"):
        w, a = r50["whole"], r50["archspec"]["macs"]
        found.append(f"**FlopCounterMode counts only matmuls and convolutions**: on resnet50 it reports "
                     f"{fmt_count(w['flopcounter'])} = {w['flopcounter'] / a:.4f}× archspec's MACs — exactly 2 FLOPs per "
                     "MAC, with BatchNorm, ReLU, pooling and the residual adds at 0. ptflops' aten backend agrees "
                     f"with archspec's MACs up to the linear bias ({fmt_count(w['ptflops_aten'])}), but it too misses the "
                     "CPU LSTM.")
    mp3 = kind("resnet50", "maxpool2d")
    if mp3 and r50.get("glue"):
        found.append(f"**fvcore skips max pooling and the residual adds** (aten::max_pool2d and aten::add are unsupported: "
                     f"resnet50 max pool {fmt_count(mp3['fvcore'])}, merges {fmt_count(r50['glue'].get('fvcore'))}) but counts "
                     f"the global average pool ({fmt_count((gp or {}).get('fvcore'))} = n_in).")
    out += ["The issue's claims:", ""] + [f"- {b}" for b in bullets] + [""]
    out += ["Found while checking them:", ""] + [f"- {b}" for b in found] + [""]
    return out


def check_section(c: dict, found: list[dict]) -> list[str]:
    out = ["## The checker's speed: `archspec check` as a fresh process", ""]
    lad = c.get("ladder") or {}
    cfg = c.get("config") or {}
    out += [f"Each row is a fresh process; all rows ran interleaved (every command once per round, the order rotating), "
            f"one discarded warm-up round, then {cfg.get('reps')} rounds. This sandbox sets PYTHONDONTWRITEBYTECODE=1, so "
            "archspec (installed editable from the working tree) is compiled from source by every process; the "
            "'cached .pyc' rows run the same command with bytecode kept under a temporary PYTHONPYCACHEPREFIX, as after "
            "a normal `pip install`. Noise is half the interquartile range relative to the median.", ""]
    rows = []
    base = med((lad.get("python -c pass") or {}).get("wall"))
    for k, v in lad.items():
        rows.append([f"`{k}`", fmt_stat(v["wall"]), noise(v["wall"]), fmt_time(med(v["cpu"])), fmt_bytes(med(v["maxrss"])),
                     fmt_time(med(v["wall"]) - base) if base and k != "python -c pass" else "", v.get("failures") or ""])
    out += table(["command", "wall, median (q1–q3)", "noise", "CPU", "ru_maxrss", "above bare python", "failed"], rows)
    ps = c.get("per_spec") or {}
    stg = c.get("stages") or {}
    if ps:
        out += [f"Every spec alone (`archspec check specs/<name>.yaml` with cached bytecode, interleaved, "
                f"{cfg.get('spec_reps')} rounds), and "
                "inside one warm process the three stages of its check (median of 7):", ""]
        rows = []
        for name, v in ps.items():
            s = stg.get(name) or {}
            rows.append([name, fmt_stat(v["wall"]), "yes" if med(v["wall"]) <= 0.25 else "**no**", s.get("nodes", ""),
                         fmt_time(s.get("load")), fmt_time(s.get("resolve")), fmt_time(s.get("analyze"))])
        if stg:
            tot = {k: sum(s[k] for s in stg.values()) for k in ("load", "resolve", "analyze")}
            rows.append(["**all specs, in-process**", "", "", "", fmt_time(tot["load"]), fmt_time(tot["resolve"]),
                         fmt_time(tot["analyze"])])
        out += table(["spec", "fresh process, median (q1–q3)", "≤ 0.25 s", "nodes", "load (YAML → tree)",
                      "resolve (validate, expand)", "analyze"], rows)
    out += profile_section(c)
    return out


def profile_section(c: dict) -> list[str]:
    out = ["### Where a fresh `archspec check` spends its time", ""]
    inst = c.get("instrument") or {}
    it = c.get("importtime") or {}
    lad = c.get("ladder") or {}
    one = (c.get("config") or {}).get("one_spec", "resnet50")

    def L(k):
        return med((lad.get(k) or {}).get("wall"))

    if inst.get("cached_pyc"):
        a, b = inst["cached_pyc"], inst.get("as_is") or {}
        rows = [["`import yaml`", fmt_time(a["yaml"]), fmt_time(b.get("yaml"))],
                ["pydantic, as archspec imports it", fmt_time(a["pydantic"]), fmt_time(b.get("pydantic"))],
                ["`import archspec.cli` after those", fmt_time(a["archspec_import"]), fmt_time(b.get("archspec_import"))],
                [f"· of which {a['pydantic_archspec_classes']['count']} pydantic model classes (schema + validator build)",
                 fmt_time(a["pydantic_archspec_classes"]["seconds"]), fmt_time((b.get("pydantic_archspec_classes") or {}).get("seconds"))],
                [f"·· of which the {a.get('pydantic_layer_params', {}).get('count')} in archspec/layers (the layer kinds' Params)",
                 fmt_time(a.get("pydantic_layer_params", {}).get("seconds")),
                 fmt_time((b.get("pydantic_layer_params") or {}).get("seconds"))],
                [f"· of which {a['dataclasses_archspec']['count']} archspec dataclasses",
                 fmt_time(a["dataclasses_archspec"]["seconds"]), fmt_time((b.get("dataclasses_archspec") or {}).get("seconds"))],
                ["· of which pydantic's plugin scan (entry points of every installed distribution)",
                 fmt_time(a["plugin_scan"]["seconds"]), fmt_time((b.get("plugin_scan") or {}).get("seconds"))],
                [f"first `check({one})`", fmt_time(a["first_check"]), fmt_time(b.get("first_check"))],
                [f"second `check({one})`", fmt_time(a["second_check"]), fmt_time(b.get("second_check"))],
                ["`check` of every spec, warm", fmt_time(a["zoo_check"]), fmt_time(b.get("zoo_check"))]]
        out += ["Inside a fresh process, step by step, with timers around the costly constructions (median of 7 "
                "processes each; the interpreter's own start is the `python -c pass` row above):", ""]
        out += table(["step", "cached .pyc", "as this environment runs it"], rows)
        if a.get("pydantic_slowest"):
            out += ["Slowest model classes to build (cached .pyc, one process; the first one built also pays for "
                    "pydantic's lazily imported schema machinery): " + ", ".join(
                f"`{n.replace('archspec.', '')}` {fmt_time(t)}" for n, t in a["pydantic_slowest"]) + ".", ""]
    if it.get("groups"):
        out += [f"`python -X importtime -c 'import archspec.cli'` (cached .pyc, median of 7; importtime's own overhead "
                f"inflates the total to {fmt_time(it['total'])}): self time grouped by the third-party package that pulled "
                "each module in (standard-library modules count for whoever imported them first):", ""]
        out += table(["package", "self time"], [[k, fmt_time(v)] for k, v in list(it["groups"].items())[:10]])
        out += ["Largest single modules: " + ", ".join(f"`{r['module']}` {fmt_time(r['self'])} ({r['pulled_in_by']})"
                                                      for r in it["top_self"][:10]) + ".", ""]
    pz = c.get("profile_zoo") or {}
    if pz.get("groups"):
        out += [f"cProfile of checking all specs once in a warm process (profiler overhead included, total "
                f"{fmt_time(pz['total'])}), time by component:", ""]
        out += table(["component", "tottime", "share"], [[k, fmt_time(v), f"{100 * v / pz['total']:.0f}%"]
                                                          for k, v in pz["groups"].items()])
    yp = c.get("yaml_parsers") or {}
    if yp.get("timing"):
        py, cy = yp["timing"].get("python"), yp["timing"].get("libyaml")
        out += [f"PyYAML's event stream over the zoo's {yp['events']:,} events: pure-Python parser {fmt_stat(py)}, "
                f"libyaml (`yaml.CSafeLoader`) {fmt_stat(cy) if cy else 'not available'}"
                + (f"; the events and their marks are identical ({yp.get('compared')})" if yp.get('identical_events_and_marks') else
                   "; the events differ" if cy else "") + ".", ""]
    out += suggestions(c)
    return out


def suggestions(c: dict) -> list[str]:
    lad = c.get("ladder") or {}
    inst = c.get("instrument") or {}
    it = c.get("importtime") or {}
    yp = c.get("yaml_parsers") or {}
    stg = c.get("stages") or {}
    one = (c.get("config") or {}).get("one_spec", "resnet50")

    def L(k):
        return med((lad.get(k) or {}).get("wall"))

    out = ["### What stands in the way, and what to change", ""]
    items = []
    bare, yml, pyd, both = L("python -c pass"), L("import yaml"), L("import pydantic (as archspec uses it)"), L("import yaml + pydantic")
    imp, impc = L("import archspec"), L("import archspec (cached .pyc)")
    one_t, one_c = L(f"archspec check specs/{one}.yaml"), L(f"archspec check specs/{one}.yaml (cached .pyc)")
    zoo_c = L("archspec check specs/ (cached .pyc)")
    if bare and one_t:
        items.append(f"Budget of one fresh `archspec check specs/{one}.yaml` ({fmt_time(one_t)} here, {fmt_time(one_c)} with "
                     f"cached bytecode): the bare interpreter with this venv's site-packages {fmt_time(bare)}; + PyYAML "
                     f"{fmt_time(yml - bare) if yml else 'n/a'}; + pydantic as archspec imports it "
                     f"{fmt_time(pyd - bare) if pyd else 'n/a'} (both: {fmt_time(both - bare) if both else 'n/a'}); + archspec's "
                     f"own modules {fmt_time(impc - both) if impc and both else 'n/a'} with cached bytecode, "
                     f"{fmt_time(imp - both) if imp and both else 'n/a'} compiling them; + the CLI and the check itself "
                     f"{fmt_time(one_c - impc) if one_c and impc else 'n/a'}. The zoo call adds "
                     f"{fmt_time(zoo_c - one_c) if zoo_c and one_c else 'n/a'} for the other {len(stg) - 1 if stg else 'n/a'} specs.")
    if imp and impc:
        items.append(f"**Bytecode** ({fmt_time(imp - impc)} per process): with PYTHONDONTWRITEBYTECODE=1 and an editable "
                     "install, every process compiles archspec's modules from source. Not a code change: a wheel install "
                     "(`pip install .`) compiles at install time; for the editable dev install, unset "
                     "PYTHONDONTWRITEBYTECODE or set PYTHONPYCACHEPREFIX. The targets should be judged on the cached figure.")
    if yp.get("timing", {}).get("libyaml"):
        py, cy = yp["timing"]["python"]["median"], yp["timing"]["libyaml"]["median"]
        pf = yp.get("per_file") or {}
        one_py, one_cy = (pf.get("python") or {}).get(one), (pf.get("libyaml") or {}).get(one)
        load_total = sum(s["load"] for s in stg.values()) if stg else None
        loader = yp.get("archspec_loader") or "unknown"
        if loader.startswith("C"):
            items.append(f"**YAML parsing: done.** archspec/load.py now hands `yaml.{loader}` (libyaml) to `yaml.parse`: "
                         f"the zoo's events take {fmt_time(cy)} there against {fmt_time(py)} with PyYAML's pure-Python "
                         f"parser (≈{fmt_time(one_py)} → {fmt_time(one_cy)} for {one}); the whole load stage over the zoo "
                         f"is now {fmt_time(load_total)}.")
        else:
            items.append(f"**YAML parsing is the largest part of the work after imports**: archspec/load.py hands "
                         f"`yaml.{loader}` to `yaml.parse`, PyYAML's pure-Python scanner. Over the zoo that is "
                         f"{fmt_time(py)} of the {fmt_time(load_total)} load stage; libyaml's `yaml.CSafeLoader` gives "
                         f"the same events and marks in {fmt_time(cy)} (saves ≈{fmt_time(py - cy)} on the zoo call, "
                         f"≈{fmt_time((one_py or 0) - (one_cy or 0))} on {one}). libyaml's event parser is iterative "
                         "(only its composer recurses), so the event-based safety design stays. A plain scalar's "
                         "`style` is '' from libyaml and None from the Python parser: test `not ev.style`. Keep the "
                         "Python loader as the fallback when `yaml.__with_libyaml__` is false.")
    if inst.get("cached_pyc"):
        a = inst["cached_pyc"]
        pc = a["pydantic_archspec_classes"]
        meta = (it.get("cumulative") or {}).get("importlib.metadata")
        items.append(f"**pydantic** costs {fmt_time(pyd - bare) if pyd and bare else 'n/a'} to import as archspec uses it "
                     f"(of which importlib.metadata, pulled in by pydantic's plugin loader, "
                     f"{fmt_time(meta) if meta else 'n/a'} under importtime), and building archspec's {pc['count']} model "
                     f"classes at import costs {fmt_time(pc['seconds'])} (schema generation and the Rust validator; "
                     f"the {a.get('pydantic_layer_params', {}).get('count')} layer-kind classes "
                     f"{fmt_time(a.get('pydantic_layer_params', {}).get('seconds'))}, "
                     f"the Spec and its parts the rest); pydantic's plugin scan adds "
                     f"{fmt_time(a['plugin_scan']['seconds'])}. The import itself is the largest single cost of a "
                     "fresh check and goes away only if the checker's path stops importing pydantic (hand-written "
                     "validation of the layer parameters and the spec); it is "
                     "also what the ≤ 0.25 s target leaves the least room for. Smaller: `model_config = "
                     "ConfigDict(defer_build=True)` on the layer Params builds each validator on first use (a spec "
                     f"touching 6 kinds builds 6): at most the {fmt_time(a.get('pydantic_layer_params', {}).get('seconds'))} "
                     "above; PYDANTIC_DISABLE_PLUGINS=__all__ before the import removes only the scan, not the "
                     "import of importlib.metadata.")
        dc = a["dataclasses_archspec"]
        items.append(f"**dataclasses**: {dc['count']} archspec dataclasses cost {fmt_time(dc['seconds'])} to create at "
                     "import (each generates and execs its __init__/__eq__/__hash__/__repr__ source); `slots=True` "
                     "classes are created twice. Small, but cheaper as NamedTuple or hand-written __slots__ classes "
                     "where equality and hashing are not needed.")
    groups = it.get("groups") or {}
    fin = groups.get("editable-install finder (site)")
    if fin:
        items.append(f"**The editable install's import finder** ({fmt_time(fin)} under importtime, paid by every Python "
                     "process in this venv, archspec or not) disappears with a regular install.")
    if zoo_c and stg:
        items.append(f"**The zoo call** is one process: imports once, then {len(stg)} checks "
                     f"({fmt_time(inst.get('cached_pyc', {}).get('zoo_check'))} warm in-process, of which load "
                     f"{fmt_time(sum(s['load'] for s in stg.values()))}, resolve {fmt_time(sum(s['resolve'] for s in stg.values()))}, "
                     f"analyze {fmt_time(sum(s['analyze'] for s in stg.values()))}); the rest of the zoo call above "
                     "one spec is this work, the imports are paid once.")
    out += [f"- {i}" for i in items] + [""]
    return out


def inference_section(inf: dict | None) -> list[str]:
    out = ["## 2/3. ONNX export and inference", ""]
    if not inf:
        return out + ["Not measured yet: `tools/bench_inference.py` does not exist. When it does, "
                      "`python tools/bench_report.py` runs it (`--json PATH`) and includes its results here.", ""]
    if inf.get("skipped"):
        return out + ["tools/bench_inference.py exists, but this run skipped it (`--skip-inference`); "
                      "`python tools/bench_report.py` without that flag runs it and includes its results here.", ""]
    if inf.get("error"):
        return out + [f"tools/bench_inference.py failed: {inf['error']}", ""]
    if inf.get("rows") is not None:
        seconds = inf.get("seconds") or inf.get("suite_seconds")
        when = ", ".join(([f"started {inf['started']}"] if inf.get("started") else [])
                         + ([f"{seconds:.0f} s"] if seconds else [])) or "start and run time not recorded"
        return out + [f"Output of `python tools/bench_inference.py` ({when}):", "",
                      inf["markdown"].rstrip(), ""] + [f"- {n}" for n in inf.get("notes", [])] + (
                          [""] if inf.get("notes") else []) + profiles_section(inf)
    if inf.get("markdown"):
        return out + [f"Output of `python tools/bench_inference.py` ({inf.get('suite_seconds', 0):.0f} s), verbatim:", "",
                      inf["markdown"].rstrip(), ""]
    for t in inf.get("tables", []):
        out += [f"### {t.get('title', '')}", ""] if t.get("title") else []
        out += table(t["columns"], t["rows"])
        out += [n for n in t.get("notes", [])] + ([""] if t.get("notes") else [])
    out += [n for n in inf.get("notes", [])]
    return out + [""]


def serve_section(srv: dict | None) -> list[str]:
    """tools/bench_serve.py's run (`--serve-json PATH`, or run here): `archspec serve` under load."""
    if not srv:
        return []
    out = ["## 4. Serving: `archspec serve` under load", ""]
    if srv.get("error"):
        return out + [f"tools/bench_serve.py failed: {srv['error']}", ""]
    return out + [f"Output of `python tools/bench_serve.py` (started {srv.get('started', 'at an unrecorded time')}):",
                  "", srv["markdown"].rstrip(), ""]


def render(data: dict) -> str:
    m = data["machine"]
    out = ["# Benchmarks", "",
           f"Generated by `python tools/bench_report.py` on {m['date']} (suite time "
           f"{data.get('suite_seconds', 0):.0f} s); do not edit by hand — rerun it. Raw figures: "
           "[benchmarks.json](benchmarks.json).", "",
           "Measured on a shared 2-core machine: every comparison is between figures of the same run, taken "
           "interleaved (A B A B, order rotated) after a warm-up, and shown as median (q1–q3); 'noise' is half the "
           "interquartile range over the median. Other processes seen during the run are listed under 'Machine'. "
           "Under contention torch's default 2 threads can be 10–30× slower than 1 thread, so every forward tool "
           "is also timed single-threaded and the targets use whichever setting was faster.", ""]
    tgt, found = targets(data)
    out += tgt
    out += obstacles_section(data)
    out += ort_obstacles_section(data.get("inference") or {})
    out += machine_section(m, data)
    if data.get("peers") and not data["peers"].get("error"):
        out += peers_section(data["peers"]) + counts_section(data["peers"]) + claims_section(data["peers"])
    elif data.get("peers"):
        out += ["## 1. Static analysis against forward-pass tools", "", f"failed: {data['peers']['error']}", ""]
    if data.get("check") and not data["check"].get("error"):
        out += check_section(data["check"], found)
    out += inference_section(data.get("inference"))
    out += serve_section(data.get("serve"))
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke test, not for the docs)")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--skip-inference", action="store_true")
    ap.add_argument("--inference-json", type=Path, help="include this JSON instead of running bench_inference.py")
    ap.add_argument("--inference-notes", type=Path, help="findings about that run (Markdown, one paragraph per "
                    "note), kept with it in benchmarks.json and shown under its table")
    ap.add_argument("--inference-timeout", type=float, default=2400)
    ap.add_argument("--from-json", type=Path, help="re-render the Markdown from a saved benchmarks.json")
    ap.add_argument("--serve-json", type=Path, help="include this tools/bench_serve.py --json run")
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=DOCS)
    a = ap.parse_args(argv)
    if a.from_json:
        data = json.loads(a.from_json.read_text())
        if a.inference_json:  # a newer inference run replaces the saved one (its figures are self-contained)
            data["inference"] = json.loads(a.inference_json.read_text())
        if a.serve_json:
            data["serve"] = json.loads(a.serve_json.read_text())
    else:
        t0 = time.perf_counter()
        data = {"machine": bc.machine_info()}
        if not a.skip_check:
            print("bench_check ...", file=sys.stderr, flush=True)
            data["check"] = run_json("bench_check.py", ["--reps", "5", "--spec-reps", "3"] if a.quick else [])
        if not a.skip_peers:
            print("bench_peers ...", file=sys.stderr, flush=True)
            data["peers"] = run_json("bench_peers.py", ["--rounds", "1", "--fresh-reps", "1"] if a.quick else [])
        if a.inference_json:
            data["inference"] = json.loads(a.inference_json.read_text())
        elif INFERENCE_SCRIPT.exists() and not a.skip_inference:
            print("bench_inference ...", file=sys.stderr, flush=True)
            data["inference"] = run_inference(a.inference_timeout)
        elif INFERENCE_SCRIPT.exists():
            data["inference"] = {"skipped": True}
        if a.serve_json:
            data["serve"] = json.loads(a.serve_json.read_text())
        elif not a.skip_serve:
            print("bench_serve ...", file=sys.stderr, flush=True)
            data["serve"] = run_json("bench_serve.py", ["--seconds", "5"] if a.quick else [])
        data["suite_seconds"] = time.perf_counter() - t0
        data["machine"]["load_end"] = bc.loadavg()
    if a.inference_notes and data.get("inference"):
        data["inference"]["notes"] = [n.replace("\n", " ").strip() for n in a.inference_notes.read_text().split("\n\n")
                                      if n.strip()]
    bc.write_json(a.out_dir / "benchmarks.json", data)
    text = render(data)
    md = a.out_dir / "benchmarks.md"
    previous = md.read_text() if md.exists() else ""
    for tool in ("bench_export", "bench_rnn_forms"):  # the sections these tools write, kept until they rerun
        begin, end = f"<!-- {tool} begin -->", f"<!-- {tool} end -->"
        if begin in previous and end in previous:
            text += "\n" + previous[previous.index(begin):previous.index(end) + len(end)] + "\n"
    md.write_text(text)
    print(f"wrote {a.out_dir / 'benchmarks.md'} and {a.out_dir / 'benchmarks.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
