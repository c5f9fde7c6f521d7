#!/usr/bin/env python3
"""The graph forms the shape kinds emit, measured in onnxruntime against the alternatives:

    python tools/bench_shape_emit.py            # about 1 min on one core

1. channel_shuffle: archspec's one Gather vs reshape-transpose-reshape, at ShuffleNet V2's stage shapes.
2. upsample, bilinear: one Resize (what archspec emits for a power-of-two scale, e.g. FCN's 65 -> 520)
   vs torch's taps as Gather + weighted sum (what it emits otherwise), latency at FCN's head.
3. upsample, bilinear: the error of a plain Resize and of archspec's emission against
   torch.nn.functional.interpolate at uneven ratios, relative to max(1, |output|) (the export tolerance is 1e-5).

Single-threaded sessions, interleaved rounds; medians in microseconds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import archspec  # noqa: E402
from archspec.exporter import export_model  # noqa: E402

TMP = Path(tempfile.mkdtemp())


def session(model_or_path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    data = model_or_path if isinstance(model_or_path, (str, Path)) else model_or_path.SerializeToString()
    return ort.InferenceSession(str(data) if isinstance(data, Path) else data, so, providers=["CPUExecutionProvider"])


def one_layer(inp: str, layer: str) -> ort.InferenceSession:
    path = TMP / "s.yaml"
    path.write_text(f"archspec: 1\nname: s\ninput: {{x: {inp}}}\nnetwork:\n  - {layer}\n")
    return session(export_model(archspec.check(path), TMP / "m.onnx").path)


def hand_built(nodes: list, inits: dict, shape: tuple) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["n", *shape])],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return session(model)


def median_us(sessions: dict, x: np.ndarray, rounds: int = 7, calls: int = 30) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {s.get_inputs()[0].name: x})
    for _ in range(rounds):
        for name, s in sessions.items():
            feed = {s.get_inputs()[0].name: x}
            t = time.perf_counter()
            for _ in range(calls):
                s.run(None, feed)
            times[name].append((time.perf_counter() - t) / calls * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def shuffle() -> None:
    print("| channel_shuffle input | Gather (archspec) | reshape-transpose-reshape |\n|---|---|---|")
    for n, c, h in ((1, 116, 28), (1, 232, 14), (1, 464, 7), (8, 116, 28)):
        ours = one_layer(f"[{c}, {h}, {h}]", "{channel_shuffle: {groups: 2}}")
        rtr = hand_built([helper.make_node("Reshape", ["x", "s1"], ["a"]),
                          helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1, 3, 4]),
                          helper.make_node("Reshape", ["b", "s2"], ["y"])],
                         {"s1": np.array([0, 2, c // 2, h, h], np.int64), "s2": np.array([0, c, h, h], np.int64)}, (c, h, h))
        x = np.random.default_rng(0).standard_normal((n, c, h, h), dtype=np.float32)
        assert np.array_equal(ours.run(None, {"x": x})[0], rtr.run(None, {"x": x})[0])
        t = median_us({"ours": ours, "rtr": rtr}, x)
        print(f"| {n}x{c}x{h}x{h} | {t['ours']:.0f} | {t['rtr']:.0f} |")


def upsample_speed() -> None:
    x = np.random.default_rng(0).standard_normal((1, 21, 65, 65), dtype=np.float32)
    resize = one_layer("[21, 65, 65]", "{upsample: {size: [520, 520], mode: bilinear}}")
    taps = one_layer("[21, 65, 65]", "{upsample: {size: [521, 521], mode: bilinear}}")
    t = median_us({"resize": resize, "taps": taps}, x, rounds=5, calls=5)
    print(f"\nFCN head 1x21x65x65, bilinear: Resize to 520x520 {t['resize']:.0f} us, "
          f"torch's taps (Gather + weighted sum) to 521x521 {t['taps']:.0f} us")


def upsample_error() -> None:
    print("\n| bilinear H in -> out | plain Resize vs torch | archspec vs torch |\n|---|---|---|")
    rng = np.random.default_rng(0)
    for hin, hout in ((65, 520), (100, 517), (300, 451), (1000, 333)):
        x = rng.standard_normal((1, 2, hin, 3), dtype=np.float32)
        want = F.interpolate(torch.from_numpy(x), size=(hout, 3), mode="bilinear", align_corners=False).numpy()
        plain = hand_built([helper.make_node("Resize", ["x", "", "", "s"], ["y"], mode="linear",
                                             coordinate_transformation_mode="half_pixel")],
                           {"s": np.array([1, 2, hout, 3], np.int64)}, (2, hin, 3))
        ours = one_layer(f"[2, {hin}, 3]", f"{{upsample: {{size: [{hout}, 3], mode: bilinear}}}}")
        scale = max(1.0, float(np.abs(want).max()))
        errs = [float(np.abs(s.run(None, {"x": x})[0] - want).max()) / scale for s in (plain, ours)]
        print(f"| {hin} -> {hout} | {errs[0]:.1e} | {errs[1]:.1e} |")


if __name__ == "__main__":
    shuffle()
    upsample_speed()
    upsample_error()
