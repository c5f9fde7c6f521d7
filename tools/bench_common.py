"""Shared helpers of the benchmark suite (tools/bench_*.py): statistics, interleaved runs of
fresh processes with their own rusage, and a description of the machine.

Imports only the standard library, so a benchmark's own imports are what it measures.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
SPECS = ROOT / "specs"

# PYTHONDONTWRITEBYTECODE=1 (set in this sandbox) makes every fresh process compile archspec from
# source; a normal `pip install` ships compiled bytecode. The "cached bytecode" variant keeps
# .pyc files out of the tree under a temporary prefix, so both situations can be measured.
PYCACHE_PREFIX = Path(tempfile.gettempdir()) / "archspec-bench-pycache"


def env_as_is() -> dict[str, str]:
    return dict(os.environ)


def env_pyc_cached() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE_PREFIX)
    return env


# -- statistics -----------------------------------------------------------------------------

def summarize(samples: list[float]) -> dict:
    """Median and spread of a list of samples: IQR (q1..q3), min, max and the IQR relative to
    the median, the figure quoted as noise."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        return {"n": 0}
    med = statistics.median(xs)
    if n >= 4:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1, q3 = xs[0], xs[-1]
    return {"n": n, "median": med, "q1": q1, "q3": q3, "min": xs[0], "max": xs[-1],
            "iqr_rel": (q3 - q1) / med if med else 0.0}


def fmt_time(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_stat(st: dict | None, key: str = "median") -> str:
    """`median (q1–q3)`, the form every table uses."""
    if not st or not st.get("n"):
        return "n/a"
    if st["n"] == 1:
        return fmt_time(st[key])
    return f"{fmt_time(st['median'])} ({fmt_time(st['q1'])}–{fmt_time(st['q3'])})"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_count(n: float | None) -> str:
    if n is None:
        return "n/a"
    return f"{round(n):,}"


# -- fresh processes --------------------------------------------------------------------------

def run_process(cmd: list[str], env: dict | None = None, cwd: Path = ROOT, capture: bool = False) -> dict:
    """Runs one command; returns wall time, CPU time (user+sys) and peak RSS (ru_maxrss) of that
    child alone, from wait4, plus its exit status and (if asked) stdout."""
    out = tempfile.TemporaryFile() if capture else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        text = ""
        if capture:
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
    finally:
        if capture:
            out.close()
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss": ru.ru_maxrss * 1024,
            "rc": proc.returncode, "stdout": text}


def interleaved(commands: dict[str, tuple[list[str], dict | None]], reps: int, warmup: int = 1,
                capture: bool = False, progress: str = "") -> dict[str, dict]:
    """Runs every command once per round, A B C A B C ..., rotating the order each round so no
    command always follows the same one; `warmup` rounds are discarded. Returns per command the
    summaries of wall time, CPU time and peak RSS, the raw samples and (if captured) each stdout."""
    names = list(commands)
    raw: dict[str, dict[str, list]] = {n: {"wall": [], "cpu": [], "maxrss": [], "rc": []} for n in names}
    outs: dict[str, list[str]] = {n: [] for n in names}
    for r in range(warmup + reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            cmd, env = commands[name]
            res = run_process(cmd, env, capture=capture)
            if r >= warmup:
                outs[name].append(res["stdout"])
                for k in ("wall", "cpu", "maxrss", "rc"):
                    raw[name][k].append(res[k])
        if progress:
            print(f"  {progress}: round {r + 1}/{warmup + reps}", file=sys.stderr, flush=True)
    result = {}
    for name in names:
        s = raw[name]
        result[name] = {"cmd": " ".join(commands[name][0]), "wall": summarize(s["wall"]),
                        "cpu": summarize(s["cpu"]), "maxrss": summarize(s["maxrss"]),
                        "failures": sum(1 for rc in s["rc"] if rc != 0), "samples_wall": s["wall"],
                        "stdout": outs[name] if capture else None}
    return result


# -- in-process memory --------------------------------------------------------------------------

def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Resets this process's RSS high-water mark (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# -- the machine ----------------------------------------------------------------------------

def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def busy_processes(limit: int = 5) -> list[str]:
    """Other processes using CPU (ps's %CPU, averaged over each one's lifetime), to say what the
    noise was."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args", "--sort=-pcpu", "--no-headers"],
                             capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or os.getpid() in (int(parts[0]), int(parts[1])) or float(parts[2]) < 5:
            continue
        rows.append(f"{parts[2]}% {parts[3][:110]}")
        if len(rows) >= limit:
            break
    return rows


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    git = {}
    try:
        git["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "archspec"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        git["archspec_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    hyperfine = shutil.which("hyperfine")
    hf_version = None
    if hyperfine:
        hf_version = subprocess.run([hyperfine, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total": mem_total(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "python_executable": PY,
        "env": {k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "versions": {d: _version(d) for d in ("archspec", "torch", "pydantic", "pydantic_core", "PyYAML",
                                              "torchinfo", "fvcore", "thop", "ptflops", "onnx", "onnxruntime",
                                              "numpy")},
        "hyperfine": hf_version,
        "git": git,
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
