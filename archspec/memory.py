"""Memory a stage will need, estimated from the checker's report before anything is allocated.

`build`, `export` and `run` compare the estimate with the memory the machine has available and
refuse with "this needs ~N GB" instead of being killed by the kernel's OOM killer halfway or
reporting a failed allocation as archspec's bug. The estimates are upper bounds in the sense
that matters (what eager PyTorch and onnxruntime hold at their peak), not exact figures:

- build: the float32 parameters, twice (initialisers fill a temporary of a weight's size);
- export: the module, the ONNX proto, its serialised bytes and the onnxruntime session each hold
  the weights (4x), and verification runs both engines on the largest check batch, keeping every
  activation (all layer outputs, `Report.totals.activation_bytes` per sample) in the worst case;
- run: one onnxruntime session (the weights) plus every activation of the batch (a spec is
  exported first, which is estimated on its own).
"""

from __future__ import annotations

from .errors import ArchspecError

FLOAT32 = 4
EXPORT_CHECK_BATCH = 3  # exporter.plan.CHECK_BATCHES' larger size, without importing torch here


class MemoryLimitError(ArchspecError):
    """A stage would need more memory than the machine has available."""


def available() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def needed(report: object, stage: str, batch: int = 1) -> int:
    """Estimated peak bytes of `stage` ("build", "export" or "run") for a checked spec."""
    totals = report.totals  # type: ignore[attr-defined]
    weights = totals.params * FLOAT32
    acts = totals.activation_bytes
    if stage == "build":
        return 2 * weights
    if stage == "export":
        return 4 * weights + 2 * EXPORT_CHECK_BATCH * acts
    if stage == "run":
        return weights + batch * acts
    raise ValueError(f"unknown stage {stage!r}")


def require(what: str, nbytes: int) -> None:
    """Raises MemoryLimitError when `nbytes` exceed the memory available now."""
    free = available()
    if free is not None and nbytes > free:
        raise MemoryLimitError(f"{what} needs ~{gigabytes(nbytes)} of memory, and {gigabytes(free)} are available; "
                               "use a smaller model, input or batch, or a machine with more memory")


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 10**9 else f"{n / 1e6:.1f} MB"
