"""The checker's own speed: `archspec check` as a fresh process (one spec, the whole zoo) against
the targets (<= 0.25 s one spec, <= 0.5 s the zoo), where the time goes, and what to change.

    python tools/bench_check.py [--reps 10] [--spec-reps 10] [--json out.json]

Measures:
- a ladder of fresh processes, interleaved (every command once per round, order rotated): the
  bare interpreter, `import yaml`, pydantic as archspec imports it, `import archspec`,
  `import archspec.cli`, `archspec check <one spec>`, `archspec check specs/`; each archspec step
  as this environment runs it and with cached bytecode (see bench_common.env_pyc_cached);
- `archspec check <spec>` for every spec in specs/, interleaved, with cached bytecode;
- inside one process: load / resolve (validation included) / analyze per spec, warm;
- the import: `python -X importtime` grouped by the package that pulled each module in, and
  direct timers around pydantic model-class creation, dataclass creation and pydantic's plugin
  loader; a cProfile of checking the zoo after imports; PyYAML's pure-Python parser against
  libyaml's on the zoo's text (events and marks compared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc

TARGET_ONE, TARGET_ZOO = 0.25, 0.5
ONE_SPEC = "resnet50"
PYDANTIC_AS_USED = ("from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, "
                    "WithJsonSchema; from pydantic_core import PydanticCustomError")


def spec_files() -> list[Path]:
    return sorted(bc.SPECS.glob("*.yaml"))


# -- fresh processes ---------------------------------------------------------------------------

def ladder(reps: int) -> dict:
    cli = str(bc.BIN / "archspec")
    one = str(bc.SPECS / f"{ONE_SPEC}.yaml")
    asis, cached = bc.env_as_is(), bc.env_pyc_cached()
    cmds = {
        "python -c pass": ([bc.PY, "-c", "pass"], asis),
        "import yaml": ([bc.PY, "-c", "import yaml"], asis),
        "import pydantic (as archspec uses it)": ([bc.PY, "-c", PYDANTIC_AS_USED], asis),
        "import yaml + pydantic": ([bc.PY, "-c", "import yaml; " + PYDANTIC_AS_USED], asis),
    }
    for label, env in (("", asis), (" (cached .pyc)", cached)):
        cmds["import archspec" + label] = ([bc.PY, "-c", "import archspec"], env)
        cmds["import archspec.cli" + label] = ([bc.PY, "-c", "import archspec.cli"], env)
        cmds[f"archspec check specs/{ONE_SPEC}.yaml" + label] = ([cli, "check", one], env)
        cmds["archspec check specs/" + label] = ([cli, "check", str(bc.SPECS)], env)
    bc.run_process([bc.PY, "-c", "import archspec.cli"], cached)  # write the cached bytecode once
    return bc.interleaved(cmds, reps=reps, warmup=1, progress="check ladder")


def per_spec(reps: int) -> dict:
    cli = str(bc.BIN / "archspec")
    cmds = {f.stem: ([cli, "check", str(f)], bc.env_pyc_cached()) for f in spec_files()}
    res = bc.interleaved(cmds, reps=reps, warmup=1, progress="check per spec")
    for r in res.values():
        r.pop("samples_wall", None)
    return res


# -- inside one process -------------------------------------------------------------------------

def stages(reps: int = 7) -> dict:
    from archspec.analyze import analyze
    from archspec.load import load_file
    from archspec.resolve import resolve

    out = {}
    for f in spec_files():
        ts: dict[str, list[float]] = {"load": [], "resolve": [], "analyze": []}
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            doc = load_file(f)
            t1 = time.perf_counter()
            graph = resolve(doc)
            t2 = time.perf_counter()
            report = analyze(graph)
            t3 = time.perf_counter()
            for k, dt in zip(ts, (t1 - t0, t2 - t1, t3 - t2)):
                ts[k].append(dt)
        out[f.stem] = {k: statistics.median(v[1:]) for k, v in ts.items()}
        out[f.stem]["nodes"] = len(report.nodes)
        out[f.stem]["bytes"] = f.stat().st_size
    return out


def instrument() -> dict:
    """Run in a fresh process: import step by step with timers around the costly constructions."""
    t0 = time.perf_counter()
    import yaml  # noqa: F401

    t1 = time.perf_counter()
    exec(PYDANTIC_AS_USED, {})  # noqa: S102 (the ladder's import line, verbatim)
    t2 = time.perf_counter()
    import dataclasses

    import pydantic._internal._model_construction as mc

    acc = {"pydantic_classes": [0, 0.0], "pydantic_archspec_classes": [0, 0.0], "dataclasses": [0, 0.0],
           "dataclasses_archspec": [0, 0.0], "plugin_loader_import": [0, 0.0], "plugin_scan": [0, 0.0]}

    depths: dict[str, list[int]] = {}

    per_class: dict[str, float] = {}

    def timed(fn, key, module_of=None, archspec_key=None, name_of=None):
        depth = depths.setdefault(key, [0])  # only the outermost call of each kind is timed

        def wrapper(*a, **k):
            depth[0] += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    dt = time.perf_counter() - t
                    acc[key][0] += 1
                    acc[key][1] += dt
                    mod = module_of(a) if module_of else ""
                    if archspec_key and mod.startswith("archspec"):
                        acc[archspec_key][0] += 1
                        acc[archspec_key][1] += dt
                        if name_of:
                            name = name_of(a)
                            per_class[name] = per_class.get(name, 0.0) + dt
        return wrapper

    orig_new = mc.ModelMetaclass.__new__
    mc.ModelMetaclass.__new__ = timed(orig_new, "pydantic_classes",
                                      lambda a: a[3].get("__module__", "") if len(a) > 3 else "",
                                      "pydantic_archspec_classes", lambda a: f"{a[3].get('__module__')}.{a[1]}")
    orig_complete = mc.complete_model_class
    mc.complete_model_class = timed(orig_complete, "pydantic_classes",
                                    lambda a: getattr(a[0], "__module__", ""), "pydantic_archspec_classes",
                                    lambda a: f"{a[0].__module__}.{a[0].__name__}")
    dataclasses._process_class = timed(dataclasses._process_class, "dataclasses",
                                       lambda a: getattr(a[0], "__module__", ""), "dataclasses_archspec")
    t = time.perf_counter()
    import pydantic.plugin._loader as loader  # what the first schema validator imports (importlib.metadata)

    acc["plugin_loader_import"] = [1, time.perf_counter() - t]
    loader.get_plugins = timed(loader.get_plugins, "plugin_scan")
    t3 = time.perf_counter()
    import archspec.cli  # noqa: F401

    t4 = time.perf_counter()
    from archspec import check

    one = bc.SPECS / f"{ONE_SPEC}.yaml"
    check(one)
    t5 = time.perf_counter()
    check(one)
    t6 = time.perf_counter()
    for f in spec_files():
        check(f)
    t7 = time.perf_counter()
    layer_params = {k: v for k, v in per_class.items() if k.startswith("archspec.layers.")}
    return {"yaml": t1 - t0, "pydantic": t2 - t1, "archspec_import": t4 - t3,
            "pydantic_layer_params": {"count": len(layer_params), "seconds": sum(layer_params.values())},
            "pydantic_slowest": sorted(per_class.items(), key=lambda kv: -kv[1])[:5],
            "first_check": t5 - t4, "second_check": t6 - t5, "zoo_check": t7 - t6,
            **{k: {"count": v[0], "seconds": v[1]} for k, v in acc.items()}}


def run_instrument(reps: int) -> dict:
    out = {}
    for label, env in (("as_is", bc.env_as_is()), ("cached_pyc", bc.env_pyc_cached())):
        runs = []
        for _ in range(reps):
            res = bc.run_process([bc.PY, __file__, "--instrument"], env, capture=True)
            try:
                runs.append(json.loads(res["stdout"].strip().splitlines()[-1]))
            except (ValueError, IndexError):
                pass
        med = {}
        for key in runs[0] if runs else []:
            if key == "pydantic_slowest":
                med[key] = runs[0][key]
            elif isinstance(runs[0][key], dict):
                med[key] = {"count": runs[0][key]["count"],
                            "seconds": statistics.median(r[key]["seconds"] for r in runs)}
            else:
                med[key] = statistics.median(r[key] for r in runs)
        out[label] = med
    return out


def importtime(reps: int) -> dict:
    """`-X importtime` of `import archspec.cli` (cached bytecode): the median self time of each
    module, grouped by the non-stdlib package that pulled it in."""
    stdlib = set(sys.stdlib_module_names)
    per_module: dict[str, list[int]] = {}
    cum_module: dict[str, list[int]] = {}
    owners: dict[str, str] = {}
    cum_total = []
    import subprocess

    for _ in range(reps):
        proc = subprocess.run([bc.PY, "-X", "importtime", "-c", "import archspec.cli"], capture_output=True,
                              text=True, env=bc.env_pyc_cached(), cwd=bc.ROOT, check=False)
        pending: dict[int, list[dict]] = {}
        entries = []
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cum_us, name = line[len("import time:"):].split("|")
            level = (len(name) - len(name.lstrip(" "))) // 2
            e = {"name": name.strip(), "self": int(self_us), "cum": int(cum_us), "children": pending.pop(level + 1, [])}
            pending.setdefault(level, []).append(e)
            entries.append(e)
        roots = [e for lvl in sorted(pending) for e in pending[lvl]]

        def assign(e, owner):
            top = e["name"].split(".")[0]
            mine = top if top not in stdlib else owner
            owners.setdefault(e["name"], mine or "python startup (site, encodings)")
            for c in e["children"]:
                assign(c, mine)

        for r in roots:
            assign(r, None)
        for e in entries:
            per_module.setdefault(e["name"], []).append(e["self"])
            cum_module.setdefault(e["name"], []).append(e["cum"])
        cum_total.append(sum(e["self"] for e in entries))
    med = {m: statistics.median(v) / 1e6 for m, v in per_module.items()}
    groups: dict[str, float] = {}
    for m, s in med.items():
        g = owners.get(m, "?")
        if g.startswith("__editable__"):
            g = "editable-install finder (site)"
        groups[g] = groups.get(g, 0.0) + s
    top = sorted(med.items(), key=lambda kv: -kv[1])[:15]
    return {"total": statistics.median(cum_total) / 1e6, "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "top_self": [{"module": m, "self": s, "pulled_in_by": owners.get(m)} for m, s in top],
            "modules": len(med),
            "cumulative": {m: statistics.median(v) / 1e6 for m, v in cum_module.items()
                           if m.count(".") <= 1 and statistics.median(v) >= 1000}}


def profile_zoo() -> dict:
    """cProfile of checking every spec once, after imports (and one warm-up pass)."""
    import cProfile
    import pstats

    from archspec import check

    files = spec_files()
    for f in files:
        check(f)
    pr = cProfile.Profile()
    pr.enable()
    for f in files:
        check(f)
    pr.disable()
    st = pstats.Stats(pr)
    groups: dict[str, float] = {}
    rows = []
    for (file, line, func), (cc, nc, tt, ct, callers) in st.stats.items():
        if "/yaml/" in file:
            g = "PyYAML (its Python code)"
        elif "pydantic" in file:
            g = "pydantic"
        elif "archspec/load.py" in file:
            g = "archspec/load.py (events -> tree)"
        elif any(s in file for s in ("archspec/resolve/", "archspec/schema.py", "archspec/expr.py")):
            g = "archspec resolve/schema/expr"
        elif "archspec/analyze.py" in file or "archspec/layers" in file:
            g = "archspec analyze + layer rules"
        elif "archspec" in file:
            g = "archspec other"
        else:
            g = "builtins/stdlib"
        groups[g] = groups.get(g, 0.0) + tt
        rows.append({"function": f"{Path(file).name}:{line}({func})", "ncalls": nc, "tottime": tt, "cumtime": ct})
    rows.sort(key=lambda r: -r["tottime"])
    return {"total": sum(groups.values()), "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "top": rows[:12]}


def profile_analyze(models: tuple[str, ...] = ("resnet50", "vgg16"), calls: int = 200) -> dict:
    """The analysis walk alone on an already resolved graph (what the 1000x target compares):
    its time per call and per node, and a cProfile of `calls` calls."""
    import cProfile
    import pstats

    from archspec.analyze import analyze
    from archspec.load import load_file
    from archspec.resolve import resolve

    out = {}
    for name in models:
        graph = resolve(load_file(bc.SPECS / f"{name}.yaml"))
        nodes = len(analyze(graph).nodes)
        for _ in range(20):
            analyze(graph)
        samples = []
        for _ in range(calls):
            t = time.perf_counter()
            analyze(graph)
            samples.append(time.perf_counter() - t)
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(calls):
            analyze(graph)
        pr.disable()
        st = pstats.Stats(pr)
        total = sum(v[2] for v in st.stats.values())
        rows = [{"function": f"{Path(f).name}:{line}({fn})", "calls_per_analyze": v[1] / calls,
                 "share": v[2] / total, "cum_share": v[3] / total}
                for (f, line, fn), v in st.stats.items()]
        rows.sort(key=lambda r: -r["share"])
        str_rows = [r for r in rows if r["function"].startswith("base.py") and "(__str__)" in r["function"]]
        out[name] = {"nodes": nodes, "time": bc.summarize(samples), "per_node": statistics.median(samples) / nodes,
                     "top": rows[:10], "tensortype_str": str_rows[0] if str_rows else None}
    return out


def _archspec_loader() -> str | None:
    """The Loader class archspec/load.py hands to yaml.parse, seen by wrapping yaml.parse once."""
    import yaml

    from archspec.load import load_file

    seen: list[str] = []
    orig = yaml.parse

    def spy(stream, Loader=yaml.Loader):
        seen.append(Loader.__name__)
        return orig(stream, Loader)

    yaml.parse = spy
    try:
        load_file(bc.SPECS / f"{ONE_SPEC}.yaml")
    finally:
        yaml.parse = orig
    return seen[0] if seen else None


def yaml_parsers(reps: int = 5) -> dict:
    import yaml

    texts = [f.read_text() for f in spec_files()]

    def events(loader):
        return [(type(e).__name__, e.start_mark.line, e.start_mark.column, e.end_mark.line, e.end_mark.column,
                 getattr(e, "value", None), getattr(e, "tag", None), getattr(e, "implicit", None),
                 getattr(e, "style", None) or None, getattr(e, "flow_style", None), getattr(e, "anchor", None))
                for t in texts for e in yaml.parse(t, Loader=loader)]

    out = {"libyaml": bool(getattr(yaml, "__with_libyaml__", False)), "archspec_loader": _archspec_loader()}
    loaders = {"python": yaml.SafeLoader}
    if out["libyaml"]:
        loaders["libyaml"] = yaml.CSafeLoader
    names = [f.stem for f in spec_files()]
    per_file: dict[str, dict[str, list[float]]] = {k: {n: [] for n in names} for k in loaders}
    timings: dict[str, list[float]] = {k: [] for k in loaders}
    for _ in range(reps):  # interleaved
        for name, loader in loaders.items():
            total, n = 0.0, 0
            for stem, text in zip(names, texts):
                t = time.perf_counter()
                n += sum(1 for _ in yaml.parse(text, Loader=loader))
                dt = time.perf_counter() - t
                per_file[name][stem].append(dt)
                total += dt
            timings[name].append(total)
    out["per_file"] = {k: {stem: statistics.median(v) for stem, v in d.items()} for k, d in per_file.items()}
    out["events"] = n
    out["timing"] = {k: bc.summarize(v) for k, v in timings.items() if v}
    if out["libyaml"]:  # a plain scalar's style is None from the Python parser and "" from libyaml
        out["identical_events_and_marks"] = events(yaml.SafeLoader) == events(yaml.CSafeLoader)
        out["compared"] = "event type, start/end line and column, value, tag, implicit, style (None == ''), flow_style, anchor"
    return out


def _in_fresh(mode: str, env=None) -> dict:
    res = bc.run_process([bc.PY, __file__, mode], env or bc.env_pyc_cached(), capture=True)
    return json.loads(res["stdout"].strip().splitlines()[-1])


def run_all(reps: int = 10, spec_reps: int = 10, skip_specs: bool = False) -> dict:
    out: dict = {"config": {"reps": reps, "spec_reps": spec_reps, "one_spec": ONE_SPEC,
                            "targets": {"one_spec": TARGET_ONE, "zoo": TARGET_ZOO}},
                 "load": {"start": bc.loadavg()}, "busy_start": bc.busy_processes()}
    out["ladder"] = ladder(reps)
    out["load"]["after_ladder"] = bc.loadavg()
    if not skip_specs:
        out["per_spec"] = per_spec(spec_reps)
    out["load"]["after_specs"] = bc.loadavg()
    print("  check: stages, instrumentation, importtime, profile", file=sys.stderr, flush=True)
    out["stages"] = _in_fresh("--stages")
    out["instrument"] = run_instrument(7)
    out["importtime"] = importtime(7)
    out["profile_zoo"] = _in_fresh("--profile-zoo")
    out["yaml_parsers"] = _in_fresh("--yaml-parsers")
    out["profile_analyze"] = _in_fresh("--profile-analyze")
    out["load"]["end"] = bc.loadavg()
    out["busy_end"] = bc.busy_processes()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=10, help="measured rounds of the fresh-process ladder")
    ap.add_argument("--spec-reps", type=int, default=10, help="measured rounds of the per-spec checks")
    ap.add_argument("--skip-specs", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--instrument", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--stages", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--profile-zoo", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--yaml-parsers", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--profile-analyze", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    for flag, fn in (("instrument", instrument), ("stages", stages), ("profile_zoo", profile_zoo),
                     ("yaml_parsers", yaml_parsers), ("profile_analyze", profile_analyze)):
        if getattr(a, flag):
            print(json.dumps(fn()))
            return 0
    data = run_all(a.reps, a.spec_reps, a.skip_specs)
    if a.json:
        bc.write_json(a.json, data)
    else:
        print(json.dumps(data, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
