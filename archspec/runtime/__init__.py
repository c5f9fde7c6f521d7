"""Stage 7, run: onnxruntime inference of exported models (`session`: one onnxruntime session;
`run`: `archspec run`) and benchmarking them against PyTorch (`bench`)."""

from .bench import NOISY_SPREAD, BenchRow, Timing, bench_model, bench_notes, bench_table, time_interleaved
from .run import RunResult, is_spec, run_model
from .session import DEVICES, SPINNING, DeviceError, RunError, Session, physical_cores, session_for

__all__ = ["DEVICES", "NOISY_SPREAD", "SPINNING", "BenchRow", "DeviceError", "RunError", "RunResult", "Session",
           "Timing", "bench_model", "bench_notes", "bench_table", "is_spec", "physical_cores", "run_model",
           "session_for", "time_interleaved"]
