#!/usr/bin/env python3
"""onnxruntime latency of ONNX graph forms of the same RNN classifier, against eager PyTorch.

    python tools/bench_rnn_forms.py                                  # rnn_classifier, batch 1 and 8
    python tools/bench_rnn_forms.py specs/rnn_classifier.yaml --batch 1,8 --rounds 30 --time 50,100
    python tools/bench_rnn_forms.py --time 50,100 --docs     # also (re)write its section of docs/benchmarks.md

Why: `RNN.emit` (archspec/layers/recurrent.py) chooses the form archspec exports; this measures the
alternatives it was chosen from, on one spec of the shape (T, F) -> unidirectional `rnn` stack with
`output: last` -> `linear`, all with the same seeded weights:

- emitted: what `archspec export` writes (per layer, one MatMul + Add projecting every step, then a
  Scan whose body is MatMul, Add, Tanh);
- onnx_rnn: ONNX's RNN operator per layer (what archspec emitted before), built here by hand;
- onnx_rnn_1thread: the same graph in a session with one intra-op thread;
- scan_fused: one Scan whose body steps every layer (the upper layers' input projection per step);
- loop: a Loop over the steps of each layer, gathering the projected input by index.

Every form is first compared with the PyTorch module (max |ort - torch| <= 1e-5 * max(1, |torch|));
then all forms and eager PyTorch (the spec's module, 2 threads and 1 thread) are timed interleaved in
the same rounds (archspec.runtime.time_interleaved), median (q1-q3) per call.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench_rnn_forms begin -->", "<!-- bench_rnn_forms end -->"  # bench_report.py keeps it


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(ROOT / "specs" / "rnn_classifier.yaml"))
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--time", default="", help="sequence lengths (default: the spec's)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", action="store_true", help=f"write the table into {DOCS.relative_to(ROOT)}")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime
    import torch

    import archspec
    from archspec.runtime import Session, time_interleaved

    report = archspec.check(args.spec)
    module = archspec.build(report, seed=0).eval()
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    forms = {"emitted": emitted(report, module), **hand_built(report, weights)}
    sessions = {name: Session(model, threads=args.threads) for name, model in forms.items()}
    sessions["onnx_rnn_1thread"] = Session(forms["onnx_rnn"], threads=1)
    features = report.graph.input.shape[1]
    lengths = [int(t) for t in args.time.split(",") if t] or [report.graph.input.shape[0]]
    out = [f"{report.graph.name}: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
           f"{platform.processor() or platform.machine()}, {args.threads} threads, {os.cpu_count()} logical CPUs; "
           f"rounds {args.rounds}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average (1/5/15 min) "
           f"{load()} before", "",
           f"| T | batch | form | median ms (q1-q3) | / torch eager, {args.threads} threads | / faster torch | / onnx_rnn |",
           "|---|---|---|---|---|---|---|"]
    print("\n".join(out), flush=True)
    torch.set_num_threads(args.threads)
    for steps in lengths:
        for batch in [int(b) for b in args.batch.split(",")]:
            x = np.random.default_rng(0).standard_normal((batch, steps, features)).astype(np.float32)
            xt = torch.from_numpy(x)
            with torch.inference_mode():
                ref = module(xt).numpy()
            fns: dict[str, Callable[[], object]] = {"torch eager": lambda xt=xt: module(xt),
                                                    "torch eager, 1 thread": one_thread(torch, module, xt, args.threads)}
            for name, s in sessions.items():
                got = s.run(x)[report.graph.output_name]
                err = float(np.abs(got - ref).max()) / max(1.0, float(np.abs(ref).max()))
                if err > 1e-5:
                    raise SystemExit(f"{name} disagrees with PyTorch at T={steps}, batch {batch}: rel err {err:.2e}")
                fns[name] = s.run_fn({report.graph.input.name: x})
            with torch.inference_mode():
                times = dict(zip(fns, time_interleaved(list(fns.values()), rounds=args.rounds, warmup=3)))
            eager = times["torch eager"].median
            fastest_torch = min(eager, times["torch eager, 1 thread"].median)
            for name, t in times.items():
                out.append(f"| {steps} | {batch} | {name} | {t.median * 1e3:.3f} ({t.q1 * 1e3:.3f}-{t.q3 * 1e3:.3f}) | "
                           f"{t.median / eager:.2f} | {t.median / fastest_torch:.2f} | "
                           f"{t.median / times['onnx_rnn'].median:.2f} |")
                print(out[-1], flush=True)
    out += ["", f"load average {load()} after"]
    print(out[-1])
    if args.docs:
        command = "python tools/bench_rnn_forms.py " + " ".join(argv if argv is not None else sys.argv[1:])
        section = [BEGIN, "## The RNN's ONNX form (tools/bench_rnn_forms.py)", "",
                   f"Output of `{command}`; forms as that script's docstring describes them, each first checked "
                   "against PyTorch (relative error <= 1e-5); all timed interleaved in the same rounds, median "
                   "(q1-q3) per call. `emitted` is what `archspec export` writes (`RNN.emit`).", ""] + out + ["", END]
        text = DOCS.read_text() if DOCS.exists() else ""
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN)] + "\n".join(section) + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + "\n".join(section) + "\n"
        DOCS.write_text(text)
    return 0


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def one_thread(torch, module, x, threads: int) -> Callable[[], object]:
    def call() -> object:
        torch.set_num_threads(1)
        try:
            return module(x)
        finally:
            torch.set_num_threads(threads)
    return call


def emitted(report, module) -> bytes:
    import tempfile

    import archspec

    with tempfile.TemporaryDirectory(prefix="archspec-rnn-forms-") as tmp:
        path = Path(tmp) / "m.onnx"
        archspec.export(report, path, weights=module.state_dict())
        return path.read_bytes()


def hand_built(report, w: dict) -> dict[str, bytes]:
    """The alternative forms, from the module's weights (rnn layer `rnn`, linear `fc`, as the spec names them)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kinds = [n.kind for n in report.graph.nodes]
    rnn = next(n for n in report.graph.nodes if n.kind == "rnn")
    p = rnn.params
    if kinds != ["rnn", "linear"] or p.bidirectional or p.output != "last" or p.nonlinearity != "tanh":
        raise SystemExit("this tool measures (T, F) -> unidirectional tanh rnn (output: last) -> linear specs")
    layers, h, features = p.layers, p.hidden, report.graph.input.shape[1]
    r, fc = rnn.scope, next(n.scope for n in report.graph.nodes if n.kind == "linear")
    F32, I64 = TensorProto.FLOAT, TensorProto.INT64
    x_in, y_out = report.graph.input.name, report.graph.output_name

    def weight(k: int, name: str) -> np.ndarray:
        return w[f"{r}.{name}_l{k}"]

    def model(nodes: list, inits: dict) -> bytes:
        inits = {**inits, "fc_w": w[f"{fc}.weight"], "fc_b": w[f"{fc}.bias"]}
        nodes = nodes + [helper.make_node("Gemm", ["last", "fc_w", "fc_b"], [y_out], transB=1)]
        graph = helper.make_graph(nodes, "form", [helper.make_tensor_value_info(x_in, F32, ["N", "T", features])],
                                  [helper.make_tensor_value_info(y_out, F32, ["N", w[f"{fc}.bias"].shape[0]])],
                                  [numpy_helper.from_array(np.ascontiguousarray(a), k) for k, a in inits.items()])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        return m.SerializeToString()

    def zeros() -> tuple[list, dict]:  # h0 = zeros (N, H), N read from the input
        return ([helper.make_node("Shape", [x_in], ["n"], start=0, end=1),
                 helper.make_node("Concat", ["n", "hidden"], ["nh"], axis=0),
                 helper.make_node("Expand", ["zero", "nh"], ["h0"])],
                {"hidden": np.array([h], np.int64), "zero": np.zeros(1, np.float32)})

    def projection(k: int, v: str) -> tuple[list, dict]:  # every step's x W_ih^T + b_ih + b_hh, (T, N, H)
        return ([helper.make_node("MatMul", [v, f"wt{k}"], [f"xw{k}_"]), helper.make_node("Add", [f"xw{k}_", f"b{k}"], [f"xw{k}"])],
                {f"wt{k}": weight(k, "weight_ih").T, f"b{k}": weight(k, "bias_ih") + weight(k, "bias_hh")})

    def vi(name: str, elem: int = F32, dims: list | None = None) -> object:
        return helper.make_tensor_value_info(name, elem, dims)

    forms = {}
    # ONNX RNN operator per layer, as archspec emitted it before (initial state left out: zero)
    nodes, inits, v = [helper.make_node("Transpose", [x_in], ["v0"], perm=[1, 0, 2])], {}, "v0"
    for k in range(layers):
        inits.update({f"W{k}": weight(k, "weight_ih")[None], f"R{k}": weight(k, "weight_hh")[None],
                      f"B{k}": np.concatenate([weight(k, "bias_ih"), weight(k, "bias_hh")])[None]})
        top = k == layers - 1
        nodes.append(helper.make_node("RNN", [v, f"W{k}", f"R{k}", f"B{k}"], ["" if top else f"Y{k}", f"Yh{k}"],
                                      hidden_size=h))
        if not top:
            nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis1"], [f"v{k + 1}"]))
            v = f"v{k + 1}"
    inits.update({"axis0": np.array([0], np.int64), "axis1": np.array([1], np.int64)})
    forms["onnx_rnn"] = model(nodes + [helper.make_node("Squeeze", [f"Yh{layers - 1}", "axis0"], ["last"])], inits)

    # one Scan stepping every layer: layer k>0 projects its input per step, [h_{k-1,t}, h_{k,t-1}] @ [W; R]
    nodes, inits = zeros()
    proj, more = projection(0, "v0")
    nodes, inits = [helper.make_node("Transpose", [x_in], ["v0"], perm=[1, 0, 2])] + nodes + proj, {**inits, **more}
    inits["rt0"] = weight(0, "weight_hh").T
    body = [helper.make_node("MatMul", ["s0", "rt0"], ["r0"]), helper.make_node("Add", ["r0", "x_t"], ["z0"]),
            helper.make_node("Tanh", ["z0"], ["n0"])]
    for k in range(1, layers):
        inits[f"wr{k}"] = np.concatenate([weight(k, "weight_ih").T, weight(k, "weight_hh").T])
        inits[f"b{k}"] = weight(k, "bias_ih") + weight(k, "bias_hh")
        body += [helper.make_node("Concat", [f"n{k - 1}", f"s{k}"], [f"c{k}"], axis=1),
                 helper.make_node("MatMul", [f"c{k}", f"wr{k}"], [f"m{k}"]),
                 helper.make_node("Add", [f"m{k}", f"b{k}"], [f"z{k}"]), helper.make_node("Tanh", [f"z{k}"], [f"n{k}"])]
    graph = helper.make_graph(body, "step", [vi(f"s{k}") for k in range(layers)] + [vi("x_t")],
                              [vi(f"n{k}") for k in range(layers)])
    nodes.append(helper.make_node("Scan", ["h0"] * layers + ["xw0"], [f"f{k}" for k in range(layers - 1)] + ["last"],
                                  body=graph, num_scan_inputs=1))
    forms["scan_fused"] = model(nodes, inits)

    # a Loop per layer over the steps, the projected input gathered by the iteration number
    nodes, inits = zeros()
    nodes = [helper.make_node("Transpose", [x_in], ["v0"], perm=[1, 0, 2])] + nodes + [
        helper.make_node("Shape", [x_in], ["steps"], start=1, end=2), helper.make_node("Squeeze", ["steps", "axis0"], ["T"])]
    inits["axis0"] = np.array([0], np.int64)
    v = "v0"
    for k in range(layers):
        proj, more = projection(k, v)
        nodes, inits = nodes + proj, {**inits, **more, f"rt{k}": weight(k, "weight_hh").T}
        top = k == layers - 1
        body = [helper.make_node("Gather", [f"xw{k}", f"i{k}"], [f"x{k}"], axis=0),
                helper.make_node("MatMul", [f"h{k}", f"rt{k}"], [f"r{k}"]), helper.make_node("Add", [f"r{k}", f"x{k}"], [f"z{k}"]),
                helper.make_node("Tanh", [f"z{k}"], [f"n{k}"]), helper.make_node("Identity", [f"c{k}"], [f"co{k}"])]
        outs = [vi(f"co{k}", TensorProto.BOOL, []), vi(f"n{k}")]
        if not top:
            body.append(helper.make_node("Identity", [f"n{k}"], [f"y{k}"]))
            outs.append(vi(f"y{k}"))
        graph = helper.make_graph(body, f"loop{k}", [vi(f"i{k}", I64, []), vi(f"c{k}", TensorProto.BOOL, []), vi(f"h{k}")], outs)
        nodes.append(helper.make_node("Loop", ["T", "", "h0"], ["last" if top else f"hl{k}"] + ([] if top else [f"v{k + 1}"]),
                                      body=graph))
        v = f"v{k + 1}"
    forms["loop"] = model(nodes, inits)
    return forms


if __name__ == "__main__":
    sys.exit(main())
