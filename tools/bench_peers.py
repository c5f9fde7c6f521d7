"""Part 1 of the benchmark suite: archspec's static analysis against forward-pass counting tools
(torchinfo.summary, fvcore FlopCountAnalysis, thop.profile, torch's FlopCounterMode, ptflops) on
the same architecture, built from the spec with `archspec.build(report, seed=0).eval()`.

    python tools/bench_peers.py [--rounds 3] [--fresh-reps 3] [--json out.json]

Measures, per model (specs/<model>.yaml):
- in-process: the analysis call alone, after imports and with the model already built; every
  tool once per round, interleaved (the order rotates each round), after one discarded warm-up
  round; archspec's calls are fast, so each round times them ARCH_INNER times. Wall and CPU time.
  Each forward tool runs with torch's default intra-op threads and again with one thread.
- the Python-heap peak of each call from tracemalloc (which does not see tensor storage).
- as whole fresh processes: `archspec summary <spec>` and a script calling archspec.check against
  a script that imports torch and the tool, builds the model and runs the tool; interleaved; wall,
  CPU time and ru_maxrss of the child, and inside it the time of each phase and the RSS
  high-water mark of the analysis call (reset through /proc/self/clear_refs) above the RSS after
  imports, which for a forward tool includes the model's weights.
- the counts each tool reports, whole model and per layer kind (each distinct layer run through
  each tool in isolation, wrapped in nn.Sequential), and probes of the known disagreements.

Every figure within one table comes from the same run; nothing is compared across runs.
Needs the `bench` extra: pip install -e '.[bench]' -c tools/constraints.txt
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc

MODELS = ["resnet50", "vgg16", "googlenet", "inception_v3", "lstm_classifier"]
COUNT_EXTRA = ["bilstm_tagger", "gru_classifier", "rnn_classifier"]  # for the disagreement probes
TOOLS = ["torchinfo", "fvcore", "thop", "flopcounter", "ptflops"]
TOOL_LABELS = {
    "torchinfo": "torchinfo.summary", "fvcore": "fvcore FlopCountAnalysis", "thop": "thop.profile",
    "flopcounter": "torch FlopCounterMode", "ptflops": "ptflops (pytorch backend)",
    "ptflops_aten": "ptflops (aten backend)", "forward": "plain forward (reference)",
    "archspec.analyze": "archspec analyze (resolved graph)", "archspec.check": "archspec.check(path)",
    "archspec.summary": "archspec summary (check + table)",
}
# What each tool's number counts, and its multiple of a multiply-accumulate.
TOOL_UNITS = {"torchinfo": ("mult-adds", 1), "fvcore": ("flops, 1 per MAC", 1), "thop": ("MACs", 1),
              "flopcounter": ("FLOPs, 2 per MAC", 2), "ptflops": ("MACs", 1), "ptflops_aten": ("MACs", 1)}
POOL_KINDS = {"maxpool2d", "avgpool2d", "adaptive_avgpool2d", "global_avgpool", "global_maxpool"}
ARCH_INNER = 20


# -- models and tools (torch imported lazily: the fresh-process mode measures its own imports) ----

def spec_path(name: str) -> Path:
    return bc.SPECS / f"{name}.yaml"


def make_input(shape, dtype: str, device: str = "cpu"):
    import torch

    g = torch.Generator().manual_seed(0)
    if dtype == "int64":
        x = torch.randint(0, 100, (1, *shape), generator=g)
    else:
        x = torch.randn((1, *shape), generator=g)
    return x.to(device)


def build_model(name: str, device: str = "cpu"):
    import archspec

    report = archspec.check(spec_path(name))
    model = archspec.build(report, seed=0, device=device).eval()
    inp = report.graph.input
    x = make_input(tuple(d.size for d in inp.dims), inp.dtype, device)
    return report, model, x


def quiet_tools() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("fvcore", "fvcore.nn.jit_analysis", "iopath"):
        logging.getLogger(name).setLevel(logging.ERROR)


def count_fn(tool: str):
    """A function (model, x) -> (count, params) in the tool's own unit, as its docs show it."""
    import torch

    if tool == "torchinfo":
        import torchinfo

        def run(model, x):
            s = torchinfo.summary(model, input_data=x, verbose=0, device="cpu")
            return s.total_mult_adds, s.total_params
    elif tool == "fvcore":
        from fvcore.nn import FlopCountAnalysis, parameter_count

        def run(model, x):
            with torch.no_grad():
                a = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                return a.total(), parameter_count(model)[""]
    elif tool == "thop":
        import thop

        def run(model, x):
            with torch.no_grad():
                macs, params = thop.profile(model, inputs=(x,), verbose=False)
            return macs, params
    elif tool == "flopcounter":
        from torch.utils.flop_counter import FlopCounterMode

        def run(model, x):
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                model(x)
            return fc.get_total_flops(), None
    elif tool in ("ptflops", "ptflops_aten"):
        from ptflops import get_model_complexity_info

        backend = "aten" if tool == "ptflops_aten" else "pytorch"

        def run(model, x):
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
                return get_model_complexity_info(model, tuple(x.shape[1:]), as_strings=False, backend=backend,
                                                 print_per_layer_stat=False, input_constructor=lambda _: x)
    elif tool == "forward":
        def run(model, x):
            with torch.no_grad():
                model(x)
            return None, None
    else:
        raise ValueError(tool)
    return run


def archspec_fns(name: str) -> dict:
    """archspec's three in-process variants: analysis of an already resolved graph, the full check
    from the file, and `archspec summary` (check + table) through the CLI entry point."""
    from archspec import check
    from archspec.analyze import analyze
    from archspec.cli import main
    from archspec.load import load_file
    from archspec.resolve import resolve

    path = str(spec_path(name))
    graph = resolve(load_file(path))

    def summary():
        with contextlib.redirect_stdout(io.StringIO()):
            main(["summary", path])

    return {"archspec.analyze": lambda: analyze(graph), "archspec.check": lambda: check(path),
            "archspec.summary": summary}


# -- in-process worker ------------------------------------------------------------------------

def worker_inproc(name: str, rounds: int) -> dict:
    import gc
    import tracemalloc

    quiet_tools()
    import torch

    import archspec  # noqa: F401

    fns = {t: count_fn(t) for t in TOOLS + ["forward"]}
    arch = archspec_fns(name)  # imports archspec fully, resolves once
    gc.collect()
    base_rss = bc.rss_bytes()
    out: dict = {"model": name, "torch_threads": torch.get_num_threads(), "base_rss": base_rss, "memory": {}}

    def mem(label, call, rss=True):
        peak = None
        if rss:  # only before the model exists: later, the heap the tools' runs left behind is resident
            gc.collect()
            ok = bc.reset_peak_rss()
            call()
            peak = bc.peak_rss_bytes() - base_rss if ok else None
        gc.collect()
        tracemalloc.start()
        call()
        heap = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out["memory"][label] = {"rss_peak_over_imports": peak, "python_heap_peak": heap}

    for label, call in arch.items():  # before the model exists, so its weights are not counted
        call()
        mem(label, call)
    report, model, x = build_model(name)
    out["weights_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    out["archspec"] = {"params": report.totals.params, "macs": report.totals.macs, "flops": report.totals.flops}

    calls = {t: (lambda f=fns[t]: f(model, x)) for t in fns}
    # Every forward tool also runs with one intra-op thread: on a shared machine whose cores are busy,
    # torch's default (one thread per core) oversubscribes them and OpenMP barriers wait on
    # descheduled threads; the single-threaded figure is the one that load cannot blow up.
    default_threads = torch.get_num_threads()
    threads = {t: default_threads for t in calls}
    if default_threads > 1:
        for t in list(fns):
            calls[f"{t}@1"] = calls[t]
            threads[f"{t}@1"] = 1
    samples = {k: {"wall": [], "cpu": []} for k in list(arch) + list(calls)}
    counts: dict[str, list] = {t: [] for t in TOOLS}
    slots = list(arch) + list(calls)
    for r in range(1 + rounds):
        order = slots[r % len(slots):] + slots[: r % len(slots)]
        for slot in order:
            inner = (ARCH_INNER // 4 if slot == "archspec.summary" else ARCH_INNER) if slot.startswith("archspec") else 1
            if slot in threads:
                torch.set_num_threads(threads[slot])
            for _ in range(inner):
                w0, c0 = time.perf_counter(), time.process_time()
                res = arch[slot]() if slot in arch else calls[slot]()
                w1, c1 = time.perf_counter(), time.process_time()
                if r:
                    samples[slot]["wall"].append(w1 - w0)
                    samples[slot]["cpu"].append(c1 - c0)
                    if slot in counts:
                        counts[slot].append(res[0])
            torch.set_num_threads(default_threads)
        print(f"  in-process {name}: round {r + 1}/{1 + rounds} (first is warm-up), load {bc.loadavg()}",
              file=sys.stderr, flush=True)
    out["timing"] = {k: {"wall": bc.summarize(v["wall"]), "cpu": bc.summarize(v["cpu"])} for k, v in samples.items()}
    out["counts_stable"] = {t: len(set(map(float, c))) == 1 for t, c in counts.items()}
    for t in fns:
        mem(t, calls[t], rss=False)
    return out


# -- fresh-process mode -------------------------------------------------------------------------

def worker_fresh(tool: str, name: str) -> dict:
    """What a user's script does: import, build from the spec, run the tool once. Also the memory
    of each phase: RSS high-water marks (reset before each phase) above the RSS after imports."""
    import resource

    t0 = time.perf_counter()
    if tool == "archspec":
        from archspec import check

        t1 = time.perf_counter()
        base = bc.rss_bytes()
        bc.reset_peak_rss()
        report = check(spec_path(name))
        t3 = time.perf_counter()
        return {"count": report.totals.macs, "params": report.totals.params, "import": t1 - t0, "build": 0.0,
                "analysis": t3 - t1, "rss_imports": base, "peak_build": 0, "peak_analysis": bc.peak_rss_bytes() - base,
                "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    quiet_tools()
    run = count_fn(tool)
    import archspec  # noqa: F401
    t1 = time.perf_counter()
    base = bc.rss_bytes()
    bc.reset_peak_rss()
    report, model, x = build_model(name)
    t2 = time.perf_counter()
    peak_build = bc.peak_rss_bytes() - base
    bc.reset_peak_rss()
    count, params = run(model, x)
    t3 = time.perf_counter()
    return {"count": count, "params": params, "import": t1 - t0, "build": t2 - t1, "analysis": t3 - t2,
            "rss_imports": base, "peak_build": peak_build, "peak_analysis": bc.peak_rss_bytes() - base,
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


TARGET_MODELS = ("resnet50", "vgg16")  # the 1000x target's models get `reps` rounds, the others one fewer


def fresh_processes(models: list[str], reps: int) -> dict:
    """Whole fresh processes, interleaved per model: the `archspec summary` command (as this
    environment runs it, and with cached bytecode), a script doing archspec.check, and one script
    per forward-pass tool. The page cache is warm from the in-process phase, so no warm-up round."""
    archspec_cli = str(bc.BIN / "archspec")
    out = {}
    for name in models:
        spec = str(spec_path(name))
        cmds = {"archspec summary": ([archspec_cli, "summary", spec], bc.env_as_is()),
                "archspec summary (cached .pyc)": ([archspec_cli, "summary", spec], bc.env_pyc_cached()),
                "archspec": ([bc.PY, __file__, "--fresh", "archspec", name], bc.env_as_is())}
        for t in TOOLS:
            cmds[t] = ([bc.PY, __file__, "--fresh", t, name], None)
        bc.run_process(cmds["archspec summary (cached .pyc)"][0], cmds["archspec summary (cached .pyc)"][1])  # write the .pyc
        n = reps if name in TARGET_MODELS else max(1, reps - 1)
        res = bc.interleaved(cmds, reps=n, warmup=0, capture=True, progress=f"fresh processes {name}")
        for t in ["archspec"] + TOOLS:
            phases = []
            for text in res[t]["stdout"]:
                try:
                    phases.append(json.loads(text.strip().splitlines()[-1]))
                except (ValueError, IndexError):
                    pass
            res[t]["phases"] = {k: bc.summarize([p[k] for p in phases if p.get(k) is not None])
                                for k in ("import", "build", "analysis", "rss_imports", "peak_build", "peak_analysis")} \
                if phases else None
            res[t]["count"] = phases[-1]["count"] if phases else None
        for r in res.values():
            r.pop("stdout", None)
        out[name] = res
    return out


# -- counts and disagreements ---------------------------------------------------------------------

def _safe_count(fn, module, x):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            c = fn(module, x)[0]
        return None if c is None else float(c)
    except Exception as exc:  # noqa: BLE001 (a tool that cannot run this layer says so in the table)
        return f"error: {type(exc).__name__}: {str(exc)[:80]}"


def worker_counts(name: str) -> dict:
    """Whole-model counts of every tool, and per layer kind: each distinct leaf module run through
    each tool alone (wrapped in nn.Sequential), summed over the model's leaves of that kind."""
    from torch import nn

    from archspec.layers.base import numel

    quiet_tools()
    report, model, x = build_model(name)
    tools = TOOLS + ["ptflops_aten"]
    fns = {t: count_fn(t) for t in tools}
    whole = {}
    for t in tools:
        count = _safe_count(fns[t], model, x)
        whole[t] = count
    kinds: dict[str, dict] = {}
    cache: dict = {}
    for node in report.nodes:
        if not node.leaf:
            continue
        module = model.get_submodule(node.path)
        key = (node.kind, repr(module), node.input.shape, node.input.dtype)
        if key not in cache:
            xi = make_input(node.input.shape, node.input.dtype)
            wrapped = nn.Sequential(module).eval()  # torchinfo and thop restore the wrapper's mode recursively
            cache[key] = {t: _safe_count(fns[t], wrapped, xi) for t in tools}
        k = kinds.setdefault(node.kind, {"layers": 0, "n_in": 0, "n_out": 0, "archspec_macs": 0,
                                         "archspec_flops": 0, **{t: 0.0 for t in tools}})
        k["layers"] += 1
        k["n_in"] += numel(node.input.shape)
        k["n_out"] += numel(node.output.shape)
        k["archspec_macs"] += node.macs
        k["archspec_flops"] += node.flops
        for t in tools:
            v = cache[key][t]
            k[t] = v if isinstance(v, str) or isinstance(k[t], str) else k[t] + (v or 0)
    leaf_macs = sum(k["archspec_macs"] for k in kinds.values())
    glue = {"archspec_macs": report.totals.macs - leaf_macs}
    for t in tools:
        total = whole[t]
        parts = [k[t] for k in kinds.values()]
        glue[t] = None if isinstance(total, str) or total is None or any(isinstance(p, str) for p in parts) \
            else total - sum(parts)
    return {"model": name, "archspec": {"params": report.totals.params, "macs": report.totals.macs,
                                        "flops": report.totals.flops},
            "whole": whole, "kinds": kinds, "glue": glue, "distinct_leaves": len(cache)}


def worker_probes() -> dict:
    """The recurrent disagreements, isolated: archspec's RNN/GRU/LSTM modules (subclasses of the
    torch ones, returning the spec's chosen output) against plain torch modules of the same shape,
    on CPU; and FlopCounterMode on the meta device."""
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    import archspec

    quiet_tools()
    out: dict = {"recurrent": {}, "meta": {}}
    for kind, plain_cls in (("rnn", nn.RNN), ("gru", nn.GRU), ("lstm", nn.LSTM)):
        report, model, x = build_model(f"{kind}_classifier")
        node = next(n for n in report.nodes if n.kind == kind)
        layer = model.get_submodule(node.path)
        plain = plain_cls(layer.input_size, layer.hidden_size, num_layers=layer.num_layers, batch_first=True,
                          bidirectional=layer.bidirectional).eval()
        row = {"archspec_macs": node.macs, "spec_output": getattr(layer, "output", None),
               "module_class": f"{type(layer).__module__}.{type(layer).__qualname__}"}
        for t in TOOLS:
            fn = count_fn(t)
            row[t] = {"archspec_module": _safe_count(fn, nn.Sequential(layer).eval(), x), "plain_torch": _safe_count(fn, plain, x)}
        out["recurrent"][kind] = row
        # FlopCounterMode on meta: no kernels run, so the CPU LSTM's fused path is not taken
        meta_model = archspec.build(report, device="meta").eval()
        xm = torch.empty(x.shape, device="meta")
        with FlopCounterMode(display=False) as fc:
            meta_model(xm)
        out["meta"][kind] = {"flopcounter_meta": fc.get_total_flops(), "archspec_macs": report.totals.macs}
    return out


# -- driver ---------------------------------------------------------------------------------------

def _run_worker(args: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    try:
        import subprocess

        proc = subprocess.run([bc.PY, __file__, *args, "--json", path], cwd=bc.ROOT, check=False)
        if proc.returncode != 0:
            return {"error": f"worker {' '.join(args)} exited {proc.returncode}"}
        return json.loads(Path(path).read_text())
    finally:
        os.unlink(path)


def run_all(rounds: int = 3, fresh_reps: int = 3, models: list[str] | None = None,
            skip_fresh: bool = False) -> dict:
    models = models or MODELS
    result: dict = {"config": {"models": models, "rounds": rounds, "arch_inner": ARCH_INNER,
                               "fresh_reps": fresh_reps}, "load": {"start": bc.loadavg()},
                    "busy_start": bc.busy_processes()}
    result["inproc"] = {}
    phase = {"t": time.perf_counter()}
    result["phase_seconds"] = {}

    def done(label):
        now = time.perf_counter()
        result["phase_seconds"][label] = now - phase["t"]
        phase["t"] = now

    for name in models:
        r = rounds if name != "lstm_classifier" else max(rounds, 10)
        result["inproc"][name] = _run_worker(["--inproc", name, "--rounds", str(r)])
    result["load"]["after_inproc"] = bc.loadavg()
    done("inproc")
    print("  counts and disagreement probes", file=sys.stderr, flush=True)
    counts = _run_worker(["--counts", *dict.fromkeys(models + COUNT_EXTRA), "--probes"])
    result["counts"], result["probes"] = counts.get("models", counts), counts.get("probes")
    result["load"]["after_counts"] = bc.loadavg()
    done("counts")
    if not skip_fresh:
        result["fresh"] = fresh_processes(models, fresh_reps)
        done("fresh")
    result["load"]["end"] = bc.loadavg()
    result["busy_end"] = bc.busy_processes()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="measured in-process rounds per model (plus one warm-up)")
    ap.add_argument("--fresh-reps", type=int, default=3, help="measured fresh-process runs per tool and model")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--skip-fresh", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--inproc", metavar="MODEL")
    ap.add_argument("--counts", nargs="+", metavar="MODEL")
    ap.add_argument("--probes", action="store_true")
    ap.add_argument("--fresh", nargs=2, metavar=("TOOL", "MODEL"))
    a = ap.parse_args(argv)
    if a.fresh:
        print(json.dumps(worker_fresh(*a.fresh)))
        return 0
    if a.inproc:
        data = worker_inproc(a.inproc, a.rounds)
    elif a.counts:
        data = {"models": {m: worker_counts(m) for m in a.counts}}
        if a.probes:
            data["probes"] = worker_probes()
    elif a.probes:
        data = worker_probes()
    else:
        data = run_all(a.rounds, a.fresh_reps, a.models, a.skip_fresh)
    if a.json:
        bc.write_json(a.json, data)
    else:
        print(json.dumps(data, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
