#!/usr/bin/env python3
"""Export by emission, measured: fresh-process `archspec export` time above the imports it cannot
avoid, peak RSS, export without torch, onnxruntime latency of emitted vs traced graphs, and the
size and time of the torch-free install. Writes its section of docs/benchmarks.md (between the
`bench_export` markers; tools/bench_report.py keeps it) and docs/benchmarks_export.json.

    python tools/bench_export.py                                   # export times, RSS, no-torch (a few minutes)
    python tools/bench_export.py --latency lenet,resnet18,rnn_classifier --install

Timing: fresh processes, interleaved (floor, export, floor, export, ...), median of --reps. The
floor is `python -c "import torch, onnx, onnxruntime"`, what an export verified against PyTorch
must import anyway. Latency: both graphs of a spec in one onnxruntime configuration, interleaved
(runtime.time_interleaved) in the order emitted, traced, traced, emitted each round, so each graph
runs once right after the other and once after itself (the first block after a switch pays for the
other session's spinning threads and caches), and each graph's two blocks are two sessions (sessions
of one file differ by up to 5% at batch 1 here: weight and buffer placement); the ratio is the
geometric mean of the two pairs'.
Batch 1 and 8; the traced graph is torch.onnx's (dynamo for the CNNs, TorchScript for recurrent
specs, as archspec exported before emission), from the same weights.
The machine's load average is recorded with every figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench_export begin -->", "<!-- bench_export end -->"
NO_TORCH = ("import sys; sys.modules['torch'] = None; from archspec.cli import main; "
            "sys.exit(main(sys.argv[1:]))")  # an install without torch, as far as archspec can tell


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def fresh(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=None if env is None else {**os.environ, **env})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {err}")
    return seconds, usage.ru_maxrss / 1024


def export_times(specs: list[str], reps: int, out: Path, omp: bool) -> list[dict]:
    py = sys.executable
    floor_cmd = [py, "-c", "import torch, onnx, onnxruntime"]
    rows = []
    for name in specs:
        floor, full, no_torch, rss, rss_nt, active = [], [], [], [], [], []
        before = load()
        for _ in range(reps):
            floor.append(fresh(floor_cmd)[0])
            cmd = [py, "-m", "archspec.cli", "export", f"specs/{name}.yaml", "-o", str(out)]
            s, r = fresh(cmd)
            full.append(s)
            rss.append(r)
            if omp:  # torch's OpenMP workers spinning, as before `archspec export` asked for passive ones
                active.append(fresh(cmd, {"OMP_WAIT_POLICY": "ACTIVE"})[0])
            s, r = fresh([py, "-c", NO_TORCH, "export", f"specs/{name}.yaml", "-o", str(out)])
            no_torch.append(s)
            rss_nt.append(r)
        med = statistics.median
        rows.append({"spec": name, "reps": reps, "floor_s": med(floor), "export_s": med(full),
                     "above_floor_s": med(e - f for e, f in zip(full, floor)), "peak_rss_mb": max(rss),
                     "no_torch_s": med(no_torch), "no_torch_peak_rss_mb": max(rss_nt),
                     **({"omp_active_s": med(active), "omp_active_above_floor_s": med(a - f for a, f in zip(active, floor))}
                        if omp else {}),
                     "load": f"{before} -> {load()}"})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def traced(module, report, x, path: Path) -> None:
    """torch.onnx's export of the same module, as archspec did before emission."""
    import torch

    from archspec.exporter import iter_layers

    recurrent = any(node.kind in ("rnn", "gru", "lstm") for _, node in iter_layers(report.graph))
    axes = {0: "batch", **{i + 1: d.name for i, d in enumerate(report.graph.input.dims) if d.name}}
    ex = torch.from_numpy(x)
    if recurrent:
        torch.onnx.export(module, (ex,), str(path), dynamo=False, input_names=["in"], output_names=["out"],
                          dynamic_axes={"in": axes}, opset_version=17)
    else:
        spec = {a: torch.export.Dim(n) for a, n in axes.items()}  # forward(*inputs): one entry for the varargs
        torch.onnx.export(module, (ex,), dynamo=True, input_names=["in"], output_names=["out"],
                          dynamic_shapes=((spec,),), optimize=True).save(str(path))


def latency(specs: list[str], rounds: int, tmp: Path) -> list[dict]:
    import contextlib
    import io
    import warnings

    import archspec
    from archspec.exporter import example_input, export_model
    from archspec.runtime import Session, time_interleaved

    rows = []
    for name in specs:
        report = archspec.check(ROOT / "specs" / f"{name}.yaml")
        module = archspec.build(report, seed=0).eval()
        emitted = export_model(report, tmp / f"{name}.emitted.onnx").path
        x2 = example_input(report, (2, *report.graph.input.shape))
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            traced(module, report, x2, tmp / f"{name}.traced.onnx")
        a, b = Session(emitted), Session(tmp / f"{name}.traced.onnx")
        a2, b2 = Session(emitted), Session(tmp / f"{name}.traced.onnx")
        for batch in (1, 8):
            x = example_input(report, (batch, *report.graph.input.shape), seed=1)
            import numpy as np

            np.testing.assert_allclose(a.run({report.graph.input.name: x})[report.graph.output_name],
                                       b.run({"in": x})["out"], rtol=1e-4, atol=1e-4)
            before = load()
            feeds = {report.graph.input.name: x}
            e1, t1, t2, e2 = time_interleaved([a.run_fn(feeds), b.run_fn({"in": x}), b2.run_fn({"in": x}),
                                               a2.run_fn(feeds)], rounds=rounds)
            pairs = (e1.median / t1.median, e2.median / t2.median)
            rows.append({"spec": name, "batch": batch, "emitted_ms": statistics.mean([e1.median, e2.median]) * 1e3,
                         "traced_ms": statistics.mean([t1.median, t2.median]) * 1e3,
                         "ratio": statistics.geometric_mean(pairs), "pair_ratios": pairs,
                         "emitted_iqr_ms": max(e1.iqr, e2.iqr) * 1e3, "traced_iqr_ms": max(t1.iqr, t2.iqr) * 1e3,
                         "load": f"{before} -> {load()}"})
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def install(tmp: Path) -> dict:
    """pip install of the export extra into a fresh venv: seconds and installed MB."""
    venv = tmp / "venv"
    before = load()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    t0 = time.perf_counter()
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{ROOT}[export]"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    site = next((venv / "lib").glob("python*/site-packages"))
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 1e6
    freeze = [line.split(" @ ")[0] for line in  # "archspec @ file:///..." -> archspec
              subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True).stdout.splitlines()]
    t0 = time.perf_counter()
    r = subprocess.run([str(venv / "bin" / "archspec"), "export", str(ROOT / "specs" / "resnet50.yaml"), "-o",
                        str(tmp / "r50.onnx")], capture_output=True, text=True)
    return {"seconds": seconds, "site_packages_mb": size, "packages": freeze, "load": f"{before} -> {load()}",
            "export_resnet50_s": time.perf_counter() - t0, "export_ok": r.returncode == 0,
            "export_output": r.stdout.strip().splitlines()[-3:]}


def render(data: dict) -> str:
    out = [BEGIN, "## Export by emission (tools/bench_export.py)", "",
           f"Run {data['date']} on this shared machine; load average (1/5/15 min) before -> after each row. "
           f"Fresh processes, interleaved, median of {data['reps']}.", "", *(f"- {n}" for n in data.get("notes", ())), ""]
    if data.get("export"):
        out += ["| spec | `import torch, onnx, onnxruntime` | `archspec export` (verified vs PyTorch) | above the imports "
                "| peak RSS | export without torch | its peak RSS | load |", "|---|---|---|---|---|---|---|---|"]
        out += [f"| {r['spec']} | {r['floor_s']:.2f} s | {r['export_s']:.2f} s | **{r['above_floor_s']:.2f} s** | "
                f"{r['peak_rss_mb']:.0f} MB | {r['no_torch_s']:.2f} s | {r['no_torch_peak_rss_mb']:.0f} MB | {r['load']} |"
                for r in data["export"]]
        out += [""]
        spin = [r for r in data["export"] if "omp_active_s" in r]
        if spin:
            out += ["The same exports in the same rounds with torch's OpenMP workers spinning (`OMP_WAIT_POLICY=ACTIVE`, "
                    "the default before `archspec export` asked for passive ones): "
                    + "; ".join(f"{r['spec']} {r['omp_active_s']:.2f} s, {r['omp_active_above_floor_s']:.2f} s above the "
                                f"imports ({r['omp_active_above_floor_s'] / r['above_floor_s']:.1f}x passive)" for r in spin)
                    + ".", ""]
    carried = data.get("carried", {})
    if data.get("latency"):
        out += ["onnxruntime latency, emitted vs traced (torch.onnx) graph of the same weights, same run"
                + (f" (the run of {carried['latency']})" if "latency" in carried else "") + ":", "",
                "| spec | batch | emitted | traced | emitted / traced | the two pairs | load |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {r['spec']} | {r['batch']} | {r['emitted_ms']:.3f} ms | {r['traced_ms']:.3f} ms | "
                f"**{r['ratio']:.3f}** | {' / '.join(f'{q:.3f}' for q in r.get('pair_ratios', ()))} | {r['load']} |"
                for r in data["latency"]]
        worst = max(data["latency"], key=lambda r: r["ratio"])
        within = sum(r["ratio"] <= 1.02 for r in data["latency"])
        out += ["", f"{within} of {len(data['latency'])} rows at most 1.02; the largest ratio {worst['ratio']:.3f} "
                f"({worst['spec']}, batch {worst['batch']}).", ""]
    if data.get("install"):
        i = data["install"]
        out += [(f"From the run of {carried['install']}: " if "install" in carried else "") +
                f"`pip install '.[export]'` into a fresh venv (local package index): {i['seconds']:.1f} s, "
                f"{i['site_packages_mb']:.0f} MB of site-packages ({', '.join(i['packages'])}); then "
                f"`archspec export specs/resnet50.yaml` there, no torch installed: {i['export_resnet50_s']:.2f} s "
                f"({'ok' if i['export_ok'] else 'FAILED'}). Load {i['load']}.", ""]
    return "\n".join(out + [END])


def main() -> int:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--specs", default="lenet,resnet50", help="specs for the fresh-process export times")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--latency", default="", help="comma-separated specs for emitted-vs-traced latency")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--install", action="store_true", help="also measure the torch-free install")
    p.add_argument("--omp", action="store_true", help="also time each export with OMP_WAIT_POLICY=ACTIVE")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    a = p.parse_args()
    data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "reps": a.reps}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        tmp = Path(tmp)
        if a.specs:
            data["export"] = export_times(a.specs.split(","), a.reps, tmp / "m.onnx", a.omp)
        if a.latency:
            data["latency"] = latency(a.latency.split(","), a.rounds, tmp)
        if a.install:
            data["install"] = install(tmp)
    previous = a.docs / "benchmarks_export.json"
    if previous.exists():  # parts not measured now stay, marked with the run they come from
        old = json.loads(previous.read_text())
        for key in ("export", "latency", "install"):
            if key not in data and key in old:
                data[key] = old[key]
                data.setdefault("carried", {})[key] = old.get("carried", {}).get(key, old["date"])
    (a.docs / "benchmarks_export.json").write_text(json.dumps(data, indent=2) + "\n")
    md = a.docs / "benchmarks.md"
    text = md.read_text() if md.exists() else ""
    section = render(data)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    md.write_text(text)
    print(section)
    return 0

if __name__ == "__main__":
    sys.exit(main())
