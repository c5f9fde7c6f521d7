"""The `archspec` command: a thin layer over the API. Exit codes: 0 ok, 1 spec errors, 2 usage errors."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import __version__
from .api import check
from .errors import ArchspecError, Diagnostic, SpecError
from .limits import Limits
from .render import github_diagnostic, human_diagnostic, json_results, print_summary, summary_dict
from .schema import parse_amount

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A malformed command line (exit 2), as opposed to a bad spec (exit 1)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` unwinds like Ctrl-C: exports clean up
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.command(args)
    except UsageError as exc:
        print(f"archspec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SpecError as exc:
        _print_diagnostics(exc.diagnostics, getattr(args, "format", "human"))
        return EXIT_SPEC
    except ArchspecError as exc:
        print(f"archspec: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `archspec summary ... | head`: the reader left; that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# -- commands ---------------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    limits = _limits(args)
    results = []
    files = list(_spec_files(args.paths))
    if not files:
        print("archspec: error: no .yaml/.yml specs found in " + ", ".join(args.paths), file=sys.stderr)
        return EXIT_USAGE
    for file in files:
        try:
            results.append((file, check(file, limits=limits), ()))
        except SpecError as exc:
            results.append((file, None, exc.diagnostics))
    failed = [r for r in results if r[2]]
    if args.format == "json":
        print(json_results(results))
    else:
        for _, report, diags in results:  # warnings (unused inputs, dead layers) do not fail a check
            if report is not None and report.graph.warnings and not args.quiet:
                _print_diagnostics(report.graph.warnings, args.format)
        for _, _, diags in failed:
            _print_diagnostics(diags, args.format)
        if args.format == "human" and not args.quiet:
            n_err = sum(len(d) for _, _, d in failed)
            status = f"{len(results) - len(failed)} of {len(results)} specs ok"
            print(status + (f", {n_err} error{'s' * (n_err != 1)}" if n_err else ""),
                  file=sys.stderr if failed else sys.stdout)
    return EXIT_SPEC if failed else EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    import json

    report = check(args.spec, limits=_limits(args), input_shape=_shape(args.input))
    if args.format == "json":
        print(json.dumps(summary_dict(report, args.depth), indent=2))
    else:
        print_summary(report, args.depth, weights=args.weights)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from .render import compare_table

    rows = []
    for item in args.specs:
        file, _, path = item.partition("#")  # FILE#PATH picks one block, e.g. googlenet_paper.yaml#inception3a
        report = check(file, limits=_limits(args))
        nodes = {n.path: n for n in report.nodes}
        if path not in nodes:
            from .errors import did_you_mean

            raise UsageError(f"{file} has no layer or block '{path}'; {did_you_mean(path, nodes) or 'see archspec summary'}")
        rows.append((f"{report.graph.name}#{path}" if path else report.graph.name, nodes[path]))
    print(compare_table(rows))
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from .api import build

    report = check(args.spec, limits=_limits(args))
    module = build(report, seed=args.seed)
    print_summary(report, args.depth)
    if args.output:
        from .lower import save_state

        save_state(module, report, Path(args.output))
        print(f"wrote {args.output} (and {args.output}.json with the spec's hash)")
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from .diagram import write

    write(check(args.spec, limits=_limits(args)), Path(args.output), args.depth)
    print(f"wrote {args.output}")
    return EXIT_OK


TEMPLATES = ("cnn", "vgg", "resnet", "inception", "lstm")


def cmd_init(args: argparse.Namespace) -> int:
    from importlib.resources import files

    from .files import atomic_write_text

    target = Path(args.path)
    if target.exists() and not args.force:
        print(f"archspec: error: {target} exists; use --force to overwrite it", file=sys.stderr)
        return EXIT_USAGE
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in target.stem) or "model"
    text = files("archspec.templates").joinpath(f"{args.template}.yaml").read_text(encoding="utf-8")
    atomic_write_text(target, text.replace("name: NAME", f"name: {name}"))
    print(f"wrote {target}; next: archspec summary {target}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .editor_schema import json_schema_text

    text = json_schema_text()
    if args.output:
        from .files import atomic_write_text

        atomic_write_text(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .export_onnx import export_model

    report = check(args.spec, limits=_limits(args))
    result = export_model(report, Path(args.output), weights=args.weights, opset=args.opset,
                          dynamic=args.dynamic, verbose=args.verbose, exporter=args.exporter)
    print(result.summary())
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import is_spec, run_model

    if args.batch < 1:
        print(f"archspec: error: --batch must be >= 1, got {args.batch}", file=sys.stderr)
        return EXIT_USAGE
    model = args.model
    if is_spec(model):
        model = check(model, limits=_limits(args))
    inputs, shapes = _run_inputs(args.input), _run_shapes(args.shape)
    result = run_model(model, inputs, device=args.device, batch=args.batch, threads=args.threads,
                       seed=args.seed, shapes=shapes)
    if result.notice:
        print(f"archspec: notice: {result.notice}", file=sys.stderr)
    print(result.summary(top=args.top))
    return EXIT_OK


def _run_inputs(items: list[str] | None) -> Any:
    """`--input FILE.npy` (the first input) or `--input NAME=FILE.npy`, once per input."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        return items[0]
    named = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise UsageError(f"--input {item!r}: with several inputs write NAME=FILE.npy for each")
        if name in named:
            raise UsageError(f"--input names '{name}' twice")
        named[name] = file
    return named


def _run_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """`--shape NAME=3x7`: the whole shape of a random input, batch included."""
    shapes = {}
    for item in items or []:
        name, _, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not name or not shape or min(shape) < 1:
            raise UsageError(f"--shape expects NAME=3x7 (positive sizes, batch first), got {item!r}")
        shapes[name] = shape
    return shapes


def cmd_bench(args: argparse.Namespace) -> int:
    from .runtime import bench_model, bench_table

    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        print(f"archspec: error: --batch expects positive sizes such as 1,8, got {args.batch!r}", file=sys.stderr)
        return EXIT_USAGE
    rows = []
    for spec in _progress(list(_spec_files(args.specs)), "benchmarking"):
        rows += bench_model(check(spec, limits=_limits(args)), batches=batches, rounds=args.rounds,
                            warmup=args.warmup, threads=args.threads, device=args.device)
    print(bench_table(rows))
    return EXIT_OK


# -- plumbing ---------------------------------------------------------------------------------

def _progress(items: list[str], what: str) -> Iterator[str]:
    """A progress bar on a terminal (stderr, so stdout stays clean for pipes); nothing otherwise."""
    if len(items) < 2 or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(what, total=len(items))
        for item in items:
            progress.update(task, description=f"{what} {Path(item).stem}")
            yield item
            progress.advance(task)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _spec_files(paths: Sequence[str]) -> Iterator[str]:
    for p in paths:
        if os.path.isdir(p):
            yield from sorted(str(f) for f in Path(p).rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            yield p


def _print_diagnostics(diags: Sequence[Diagnostic], fmt: str) -> None:
    if fmt == "json":
        print(json_results([(diags[0].loc.file if diags else "", None, tuple(diags))]))
        return
    lines: dict[str, list[str]] = {}
    for d in diags:
        if fmt == "github":
            print(github_diagnostic(d))
            continue
        if d.loc.file not in lines:
            lines[d.loc.file] = _read_lines(d.loc.file)
        src = lines[d.loc.file]
        print(human_diagnostic(d, src[d.loc.line - 1] if 0 < d.loc.line <= len(src) else ""), file=sys.stderr)


def _read_lines(file: str) -> list[str]:
    try:
        if os.path.getsize(file) > Limits().max_file_bytes:
            return []
        with open(file, encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except OSError:
        return []


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input expects sizes such as 3,224,224, got {text!r}") from None
    if any(d < 1 for d in dims):
        raise UsageError(f"--input sizes must be positive, got {text!r}")
    return dims


def _limits(args: argparse.Namespace) -> Limits:
    values = {name: getattr(args, name) for name in Limits.names() if getattr(args, name, None) is not None}
    return Limits(**values)


def _amount(text: str) -> int:
    try:
        return parse_amount(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archspec", description="Declarative neural-network architectures: "
                                     "check shapes and costs statically, build PyTorch modules, export ONNX.")
    parser.add_argument("--version", action="version", version=f"archspec {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    with_limits: list[argparse.ArgumentParser] = []

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(command=fn)
        with_limits.append(p)
        return p

    p = command("check", cmd_check, "Validate and shape-check specs (files or folders).")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--format", choices=("human", "json", "github"), default="human")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when every spec is valid")

    p = command("summary", cmd_summary, "Per-layer table of output shapes, parameters and MACs.")
    p.add_argument("spec")
    p.add_argument("--depth", type=int, default=None, help="collapse blocks below this depth")
    p.add_argument("--input", default=None, help="override the input shape, e.g. 3,299,299")
    p.add_argument("--weights", action="store_true", help="add a column of weights without biases, "
                   "as papers count them (GoogLeNet's Table 1)")
    p.add_argument("--format", choices=("human", "json"), default="human")

    p = command("compare", cmd_compare, "Side-by-side parameters, MACs and output shapes of specs or blocks.")
    p.add_argument("specs", nargs="+", metavar="SPEC[#PATH]", help="a spec, or one block of it: FILE#inception3a")
    p.add_argument("--format", choices=("human",), default="human")

    p = command("graph", cmd_graph, "Draw the architecture: .svg/.png (Graphviz), .dot, or .mmd (Mermaid).")
    p.add_argument("spec")
    p.add_argument("-o", "--output", required=True, help="arch.svg, arch.png, arch.dot or arch.mmd")
    p.add_argument("--depth", type=int, default=None, help="collapse blocks deeper than this")

    p = sub.add_parser("init", help="Write a new, valid, commented spec from a template.")
    p.set_defaults(command=cmd_init)
    p.add_argument("path")
    p.add_argument("--template", choices=TEMPLATES, default="cnn")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = sub.add_parser("schema", help="Print (or write with -o) the JSON Schema of the spec format, for editors.")
    p.set_defaults(command=cmd_schema)
    p.add_argument("-o", "--output", default=None)

    p = command("build", cmd_build, "Build the PyTorch module; optionally save its initial state dict.")
    p.add_argument("spec")
    p.add_argument("-o", "--output", default=None, help="write the state dict here (torch.save)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--format", choices=("human",), default="human")

    p = command("export", cmd_export, "Export to ONNX and verify it: checker, dynamic axes, shape inference, "
                "onnxruntime = PyTorch at two sizes of each dynamic axis.")
    p.add_argument("spec")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write (atomically)")
    p.add_argument("--weights", default=None, help="a torch.save(module.state_dict()) file of the built module")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--dynamic", default=None, metavar="AXES",
                   help="comma-separated dynamic axes, e.g. batch,time (default: batch and every symbolic "
                        "input axis; 'none' for a static model)")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
                   help="torch.onnx exporter (default: chosen from the layer kinds)")
    p.add_argument("--verbose", action="store_true", help="show the exporters' own output")

    p = command("run", cmd_run, "Run an ONNX model (or a spec, exported first) with onnxruntime.")
    p.add_argument("model", metavar="MODEL", help="a .onnx file, or a .yaml spec")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", action="append", default=None, metavar="[NAME=]FILE.npy",
                        help="input array (one sample or a batch); NAME=FILE.npy once per input of a model with several")
    source.add_argument("--random", action="store_true", help="random inputs of the model's shapes (the default)")
    p.add_argument("--shape", action="append", default=None, metavar="NAME=3x7",
                   help="with random inputs: an input's whole shape, batch first, for its dynamic axes")
    p.add_argument("--batch", type=int, default=1, help="batch size of the random input")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="cuda fails when onnxruntime cannot use CUDA; auto falls back to the CPU with a notice")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    p.add_argument("--top", type=int, default=5, help="top-k classes shown for classifier outputs")
    p.add_argument("--seed", type=int, default=0)

    p = command("bench", cmd_bench, "Latency and throughput: PyTorch eager vs onnxruntime (Markdown table).")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,8")
    p.add_argument("--rounds", type=int, default=15, help="interleaved measuring rounds after warm-up")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="threads for both (default: physical cores)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="onnxruntime's device")
    for p in with_limits:  # after each command's own options, so `--help` reads in that order
        limits = p.add_argument_group("limits (accept 30M, 5G, ...)")
        for field in Limits.names():
            limits.add_argument(Limits.flag(field), dest=field, type=_amount, metavar="N",
                                help=f"default {getattr(Limits(), field):,}")
    return parser


if __name__ == "__main__":
    sys.exit(main())
