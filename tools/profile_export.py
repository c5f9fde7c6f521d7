#!/usr/bin/env python3
"""Where one `archspec export` spends its time and memory: runs the CLI command in this process
with the export's stages wrapped, and prints per stage its wall time and the RSS before, after
and at the high-water mark (ru_maxrss, which never goes down: a stage raised it if the mark
moved). Run it as a fresh process; the first stage to import torch carries torch's import.

    python tools/profile_export.py specs/resnet50.yaml
    python tools/profile_export.py specs/resnet50.yaml --no-torch     # as an install without torch
"""

from __future__ import annotations

import functools
import os
import resource
import sys
import tempfile
import time


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wrap(module: object, name: str, rows: list[str]) -> None:
    original = getattr(module, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        before, t0 = rss_mb(), time.perf_counter()
        result = original(*args, **kwargs)
        rows.append(f"| {name} | {time.perf_counter() - t0:.3f} s | {before:.0f} MB | {rss_mb():.0f} MB | {peak_mb():.0f} MB |")
        return result

    setattr(module, name, timed)


def main() -> int:
    argv = sys.argv[1:]
    if "--no-torch" in argv:
        argv.remove("--no-torch")
        sys.modules["torch"] = None  # an install without torch, as far as archspec can tell
    t0 = time.perf_counter()
    from archspec import exporter
    from archspec.cli import main as cli
    from archspec.exporter import emit, verify, write

    rows = [f"| imports (archspec, onnx) | {time.perf_counter() - t0:.3f} s |  | {rss_mb():.0f} MB | {peak_mb():.0f} MB |"]
    wrap(exporter, "initial_state", rows)
    wrap(emit, "emit_graph", rows)
    wrap(write, "save", rows)
    for name in ("torch_outputs", "check_structure", "check_numerics"):
        wrap(verify, name, rows)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="profile-export-") as tmp:
        code = cli(["export", *argv, "-o", f"{tmp}/model.onnx"])
    print("| stage | wall | RSS before | RSS after | RSS high-water mark |\n|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nexport command {time.perf_counter() - t0:.2f} s in all; load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return code


if __name__ == "__main__":
    sys.exit(main())
