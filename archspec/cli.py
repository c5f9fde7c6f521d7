"""The `archspec` command: a thin layer over the API. Exit codes: 0 ok, 1 spec errors, 2 usage errors."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from . import __version__
from .api import check
from .errors import ArchspecError, Diagnostic, MissingExtraError, SpecError, missing_extra
from .files import STDIN, PathError
from .limits import Limits
from .render import github_diagnostic, human_diagnostic, json_results, print_summary, summary_dict
from .schema import parse_amount

if TYPE_CHECKING:
    from .analyze import Report

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
    except (PathError, MissingExtraError) as exc:  # a path that cannot be used as asked; a missing extra
        print(f"archspec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SpecError as exc:
        _print_diagnostics(exc.diagnostics, getattr(args, "format", "human"), exc.sources)
        return EXIT_SPEC
    except ArchspecError as exc:
        print(f"archspec: error: {exc}", file=sys.stderr)
        return EXIT_SPEC
    except ImportError as exc:  # a command whose optional extra is not installed
        message = missing_extra(exc, f"`archspec {args.command.__name__.removeprefix('cmd_')}`")
        if message is None:
            raise
        print(f"archspec: error: {message}", file=sys.stderr)
        return EXIT_USAGE
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
    sources: dict[str, str] = {}
    for file in files:
        try:
            results.append((file, _check(file, limits), ()))
        except SpecError as exc:
            results.append(("<stdin>" if file == STDIN else file, None, exc.diagnostics))
            sources.update(exc.sources)
    failed = [r for r in results if r[2]]
    if args.format == "json":
        print(json_results(results))
    else:
        for _, report, diags in results:  # warnings (unused inputs, dead layers, fixed symbols) do not fail a check
            if report is not None and report.warnings and not args.quiet:
                _print_diagnostics(report.warnings, args.format, {report.graph.doc.file: report.graph.doc.text})
        for _, _, diags in failed:
            _print_diagnostics(diags, args.format, sources)
        if args.format == "human" and not args.quiet:
            n_err = sum(len(d) for _, _, d in failed)
            status = f"{len(results) - len(failed)} of {len(results)} specs ok"
            print(status + (f", {n_err} error{'s' * (n_err != 1)}" if n_err else ""),
                  file=sys.stderr if failed else sys.stdout)
    return EXIT_SPEC if failed else EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    import json

    report = _check(args.spec, _limits(args), input_shape=_shape(args.input))
    match = None
    if args.weights:
        from .weights import match_weights

        match = match_weights(report, args.weights)
    if args.format == "json":
        print(json.dumps(summary_dict(report, args.depth) | ({"weights": match.as_dict()} if match else {}), indent=2))
    else:
        print_summary(report, args.depth, weights=args.paper_weights)
        if match:
            kinds = ", ".join(f"{dtype} x{n}" for dtype, n in match.dtypes)
            print(f"weights {match.path} match spec '{report.graph.name}': {match.tensors} tensors, the whole state "
                  f"dict (names and shapes equal, values finite); {match.values:,} values, {match.bytes:,} bytes: {kinds}")
            for note in match.notes:
                print(f"note: {note}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from .render import compare_table

    rows = []
    for item in args.specs:
        file, _, path = item.partition("#")  # FILE#PATH picks one block, e.g. googlenet_paper.yaml#inception3a
        report = _check(file, _limits(args))
        nodes = {n.path: n for n in report.nodes}
        if path not in nodes:
            from .errors import did_you_mean

            uses = [n.path for n in report.nodes if n.kind == path]  # a block defined, invoked under other names
            hint = (f"block '{path}' is invoked as {', '.join(uses[:4])}{', ...' if len(uses) > 4 else ''}; "
                    f"compare one of them, e.g. {file}#{uses[0]}") if uses else did_you_mean(path, nodes)
            raise UsageError(f"{file} has no layer or block '{path}'; {hint or 'see archspec summary'}")
        rows.append((f"{report.graph.name}#{path}" if path else report.graph.name, nodes[path]))
    print(compare_table(rows))
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from .api import build

    report = _check(args.spec, _limits(args))
    if args.output:
        from .files import check_output

        check_output(args.output, inputs=(args.spec,))  # before the build, which may take long
    module = build(report, seed=args.seed)
    print_summary(report, args.depth)
    if args.output:
        if args.output.endswith(".safetensors"):
            from .weights import save_weights

            save_weights(module, args.output)
            print(f"wrote {args.output}")
        else:
            from .lower import save_state

            save_state(module, report, Path(args.output), inputs=(args.spec,))
            print(f"wrote {args.output} (and {args.output}.json with the spec's hash)")
    return EXIT_OK


def cmd_weights_import(args: argparse.Namespace) -> int:
    from .files import check_output
    from .weights import import_checkpoint, read_map, write_weights

    report = _check(args.spec, _limits(args))
    check_output(args.output, inputs=(args.spec, args.checkpoint))
    result = import_checkpoint(report, args.checkpoint, read_map(args.map) if args.map else None)
    write_weights(args.output, result.tensors, {"archspec.spec": report.graph.name,
                                                "archspec.spec_sha256": report.graph.sha256,
                                                "archspec.source": Path(args.checkpoint).name})
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {args.output}: {len(result.tensors)} tensors of spec '{report.graph.name}' "
          f"from {len({c for _, c in result.pairs})} of {args.checkpoint}")
    return EXIT_OK


def cmd_eject(args: argparse.Namespace) -> int:
    from .api import _needs_torch
    from .files import atomic_write_text

    report = _check(args.spec, _limits(args))
    with _needs_torch("eject"):
        from .eject import eject_source

    atomic_write_text(Path(args.output), eject_source(report), inputs=(args.spec,))
    print(f"wrote {args.output}: standalone PyTorch for spec '{report.graph.name}' "
          f"(import it and call build(), or instantiate its classes)")
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from .diagram import write

    write(_check(args.spec, _limits(args)), Path(args.output), args.depth, inputs=(args.spec,))
    print(f"wrote {args.output}")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import write

    files = list(_spec_files(args.paths))
    if not files:
        print("archspec: error: no .yaml/.yml specs found in " + ", ".join(args.paths), file=sys.stderr)
        return EXIT_USAGE
    limits = _limits(args)
    missing = write([check(f, limits=limits) for f in files], Path(args.output), args.x, args.y)
    if missing:
        print(f"archspec: notice: left out, no {args.y if args.y in ('top1', 'top5') else args.x} recorded: "
              + ", ".join(missing), file=sys.stderr)
    print(f"wrote {args.output} ({len(files) - len(missing)} specs)")
    return EXIT_OK


TEMPLATES = ("cnn", "vgg", "resnet", "inception", "lstm")


def cmd_init(args: argparse.Namespace) -> int:
    from importlib.resources import files

    from .files import atomic_write_text

    target = Path(args.path)
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in target.stem) or "model"
    from .editor_schema import schema_reference

    text = files("archspec.templates").joinpath(f"{args.template}.yaml").read_text(encoding="utf-8")
    text = text.replace("$schema=SCHEMA", f"$schema={schema_reference(target)}", 1)
    atomic_write_text(target, text.replace("name: NAME", f"name: {name}"), force=args.force)
    print(f"wrote {target}; next: archspec summary {target}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .editor_schema import installed_schema, json_schema_text

    if args.path:
        print(installed_schema())
        return EXIT_OK
    text = json_schema_text()
    if args.output:
        from .files import atomic_write_text

        atomic_write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from .exporter import export_model
    from .exporter.verify import passive_openmp

    passive_openmp()  # this process imports torch only for the verification's forward passes

    if args.triton_repo is not None:
        return cmd_export_triton(args)
    if args.output is None:
        raise UsageError("export needs -o MODEL.onnx or --triton-repo DIR")
    report = _check(args.spec, _limits(args))
    result = export_model(report, Path(args.output), weights=args.weights, opset=args.opset,
                          dynamic=args.dynamic, seed=args.seed, dtype=args.dtype, quantize=args.quantize,
                          calibration=args.calibration)
    print(result.summary())
    return EXIT_OK


def cmd_export_triton(args: argparse.Namespace) -> int:
    """`export --triton-repo DIR`: the export plus Triton's config.pbtxt (archspec/triton.py)."""
    from .triton import write_repository

    if args.output is not None:
        raise UsageError("give either -o MODEL.onnx or --triton-repo DIR, not both")
    report = _check(args.spec, _limits(args))
    repo = write_repository(report, Path(args.triton_repo), version=args.triton_version,
                            max_batch=args.triton_max_batch, device=args.triton_device, weights=args.weights,
                            opset=args.opset, dynamic=args.dynamic, seed=args.seed, dtype=args.dtype)
    print(repo.summary())
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import is_spec, run_model

    model = args.model
    if is_spec(model):
        model = _check(model, _limits(args))
    inputs, shapes = _run_inputs(args.input), _run_shapes(args.shape)
    result = run_model(model, inputs, device=args.device, batch=args.batch, threads=args.threads,
                       seed=args.seed, shapes=shapes, labels=args.labels)
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


def cmd_serve(args: argparse.Namespace) -> int:
    """`serve`: the model on Ray Serve, Open Inference Protocol over HTTP (archspec/serve/)."""
    try:
        from .serve import ServeOptions, serve_forever
    except ImportError as exc:
        from .errors import install_hint

        raise UsageError(f"`serve` needs {exc.name}, which is not installed: {install_hint('serve')}") from None
    from .runtime import is_spec

    model = _check(args.model, _limits(args)) if is_spec(args.model) else args.model
    options = ServeOptions(name=args.name, replicas=args.replicas, max_batch=args.max_batch,
                           batch_wait_ms=args.batch_wait_ms, threads=args.threads,
                           max_body_bytes=int(args.max_body_mb * (1 << 20)), host=args.host, port=args.port,
                           address=args.address, num_cpus=args.num_cpus)
    serve_forever(model, options)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from .runtime import bench_model, bench_notes, bench_table

    try:
        batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        print(f"archspec: error: --batch expects positive sizes such as 1,8, got {args.batch!r}", file=sys.stderr)
        return EXIT_USAGE
    specs = list(_spec_files(args.specs))
    if not specs:
        raise UsageError("no .yaml/.yml specs found in " + ", ".join(args.specs))
    rows = []
    for spec in _progress(specs, "benchmarking"):
        rows += bench_model(_check(spec, _limits(args)), batches=batches, rounds=args.rounds,
                            warmup=args.warmup, threads=args.threads, device=args.device)
    print(bench_table(rows))
    for note in bench_notes(rows):
        print(f"archspec: notice: {note}", file=sys.stderr)
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


def _check(spec: str, limits: Limits, input_shape: tuple[int, ...] | None = None) -> Report:
    """`archspec.check` of a command-line SPEC argument: a path, or `-` for standard input."""
    from .load import load_file

    return check(load_file(spec, limits, stdin=True), limits=limits, input_shape=input_shape)


def _spec_files(paths: Sequence[str]) -> Iterator[str]:
    """The spec files named on the command line: files as given, `-`, and the .yaml/.yml files
    below folders (regular files only). A path that does not exist is a usage error."""
    for p in paths:
        if p == STDIN:
            yield p
        elif os.path.isdir(p):
            yield from sorted(str(f) for f in Path(p).rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        elif not os.path.lexists(p):
            raise PathError(p, "no such file or folder", missing=True)
        else:
            yield p


def _print_diagnostics(diags: Sequence[Diagnostic], fmt: str, sources: Mapping[str, str]) -> None:
    """Each diagnostic with its source line, from the text the spec was read as (never read again)."""
    if fmt == "json":
        print(json_results([(diags[0].loc.file if diags else "", None, tuple(diags))]))
        return
    lines: dict[str, list[str]] = {}
    for d in diags:
        if fmt == "github":
            print(github_diagnostic(d))
            continue
        if d.loc.file not in lines:
            lines[d.loc.file] = sources.get(d.loc.file, "").splitlines()
        src = lines[d.loc.file]
        print(human_diagnostic(d, src[d.loc.line - 1] if 0 < d.loc.line <= len(src) else ""), file=sys.stderr)


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
    try:
        return Limits(**values)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], so that `--rounds 0` is a usage error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"expected an integer {allowed}, got {value}")
        return value
    return parse


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
    p.add_argument("--depth", type=_int_in(0), default=None, help="collapse blocks below this depth")
    p.add_argument("--input", default=None, help="override the input shape, e.g. 3,299,299")
    p.add_argument("--paper-weights", action="store_true", help="add a column of weights without biases, "
                   "as papers count them (GoogLeNet's Table 1)")
    p.add_argument("--weights", default=None, metavar="FILE", help="check a weights file (.safetensors, .npz, "
                   "a torch.save state dict) against the spec: tensor count, names, shapes, dtypes, bytes")
    p.add_argument("--format", choices=("human", "json"), default="human")

    p = command("compare", cmd_compare, "Side-by-side parameters, MACs and output shapes of specs or blocks.")
    p.add_argument("specs", nargs="+", metavar="SPEC[#PATH]", help="a spec, or one block of it: FILE#inception3a")
    p.add_argument("--format", choices=("human",), default="human")

    p = command("graph", cmd_graph, "Draw the architecture: .svg/.png (Graphviz), .dot, or .mmd (Mermaid).")
    p.add_argument("spec")
    p.add_argument("-o", "--output", required=True, help="arch.svg, arch.png, arch.dot or arch.mmd")
    p.add_argument("--depth", type=_int_in(0), default=None, help="collapse blocks deeper than this")

    p = command("plot", cmd_plot, "Chart specs as bubbles: MACs vs. published top-1 accuracy (from each spec's "
                "`meta:`), area = parameters (.svg, .png, .pdf; needs the plot extra).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="specs or folders")
    p.add_argument("-o", "--output", required=True, help="zoo.svg, zoo.png or zoo.pdf")
    p.add_argument("--x", choices=("macs", "flops", "params", "top1", "top5"), default="macs")
    p.add_argument("--y", choices=("top1", "top5", "macs", "flops", "params"), default="top1",
                   help="top1/top5 need a spec's `meta: {top1: ..., source: ...}`; e.g. --x params --y macs")

    text = "Write a new, valid, commented spec from a template; its first line points editors at the schema."
    p = sub.add_parser("init", help=text, description=text)
    p.set_defaults(command=cmd_init)
    p.add_argument("path")
    p.add_argument("--template", choices=TEMPLATES, default="cnn")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    text = ("Print (or write with -o) the JSON Schema of the spec format, for editors' completion and "
            "checking as you type (yaml-language-server).")
    p = sub.add_parser("schema", help=text, description=text)
    p.set_defaults(command=cmd_schema)
    p.add_argument("-o", "--output", default=None, help="write the schema to this file")
    p.add_argument("--path", action="store_true", help="print the path of the schema installed with archspec")

    p = command("build", cmd_build, "Build the PyTorch module; optionally save its initial state dict.")
    p.add_argument("spec")
    p.add_argument("-o", "--output", default=None, help="write the state dict here (.safetensors, else torch.save)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)
    p.add_argument("--depth", type=_int_in(0), default=1)
    p.add_argument("--format", choices=("human",), default="human")

    p = command("export", cmd_export, "Export to ONNX and verify it: checker, dynamic axes, shape inference, "
                "onnxruntime = PyTorch at two sizes of each dynamic axis.")
    p.add_argument("spec")
    p.add_argument("-o", "--output", default=None, help="the .onnx file to write (atomically)")
    p.add_argument("--weights", default=None, help="a .safetensors, torch.save(module.state_dict()) (needs torch) or "
                   ".npz file of the built module (see `archspec weights import` for foreign checkpoints); "
                   "default: seeded initial values")
    p.add_argument("--opset", type=_int_in(13, 23), default=None, help="ONNX opset (default 17; 13..23)")
    p.add_argument("--dynamic", default=None, metavar="AXES",
                   help="comma-separated dynamic axes, e.g. batch,time (default: batch and every symbolic "
                        "input axis; 'none' for a static model)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="seed of the initial values when no --weights are given")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="float16: weights and activations in half precision, verified against PyTorch in float16")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8: onnxruntime static quantization of the verified float32 model; prints size and error")
    p.add_argument("--calibration", nargs="+", default=None, metavar="FILE.npy",
                   help="inputs to calibrate int8 on (one sample or a batch per file; default: 32 random inputs)")
    triton = p.add_argument_group("Triton model repository (instead of -o)")
    triton.add_argument("--triton-repo", default=None, metavar="DIR",
                        help="write DIR/<name>/config.pbtxt and DIR/<name>/<version>/model.onnx")
    triton.add_argument("--triton-device", choices=("cpu", "gpu"), default="cpu", help="instance_group kind")
    triton.add_argument("--triton-max-batch", type=int, default=8, metavar="B",
                        help="max_batch_size when the batch axis is dynamic (default 8)")
    triton.add_argument("--triton-version", type=int, default=1, metavar="N", help="model version folder")

    weights = sub.add_parser("weights", help="Pretrained weights: import a torchvision/timm checkpoint.")
    weights.set_defaults(command=lambda args: weights.print_help() or EXIT_USAGE)
    weights_sub = weights.add_subparsers(metavar="ACTION")
    p = weights_sub.add_parser("import", help="Map a checkpoint (.pth/.pt, weights_only; .safetensors; .npz) onto "
                               "a spec's keys, structurally with shapes checked; write .safetensors.")
    p.set_defaults(command=cmd_weights_import)
    with_limits.append(p)
    p.add_argument("spec")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write (atomically)")
    p.add_argument("--map", default=None, metavar="FILE.yaml", help="the correspondence for hard cases: "
                   "{map: {spec.prefix: checkpoint.prefix}, ignore: [AuxLogits.*]}")

    p = command("eject", cmd_eject, "Write the network as standalone, readable PyTorch source (imports only "
                "torch): one class per block, state-dict keys and outputs equal to archspec.build's.")
    p.add_argument("spec")
    p.add_argument("-o", "--output", required=True, help="the .py file to write")

    p = command("run", cmd_run, "Run an ONNX model (or a spec, exported first) with onnxruntime.")
    p.add_argument("model", metavar="MODEL", help="a .onnx file, or a .yaml spec")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--input", action="append", default=None, metavar="[NAME=]FILE.npy",
                        help="input array (one sample or a batch); NAME=FILE.npy once per input of a model with several")
    source.add_argument("--random", action="store_true", help="random inputs of the model's shapes (the default)")
    p.add_argument("--shape", action="append", default=None, metavar="NAME=3x7",
                   help="with random inputs: an input's whole shape, batch first, for its dynamic axes")
    p.add_argument("--batch", type=_int_in(1), default=1, help="batch size of the random input")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="cuda fails when onnxruntime cannot use CUDA; auto falls back to the CPU with a notice")
    p.add_argument("--threads", type=_int_in(1, 4096), default=None, help="intra-op threads (default: physical cores)")
    p.add_argument("--top", type=_int_in(0), default=5, help="top-k classes shown for classifier outputs")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="class names, one per line (default: the spec's `meta: {labels: ...}`)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0)

    p = command("bench", cmd_bench, "Latency and throughput: PyTorch eager vs onnxruntime (Markdown table).")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,8")
    p.add_argument("--rounds", type=_int_in(1), default=15, help="interleaved measuring rounds after warm-up")
    p.add_argument("--warmup", type=_int_in(0), default=3)
    p.add_argument("--threads", type=_int_in(1, 4096), default=None, help="threads for both (default: physical cores)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="onnxruntime's device")
    p = command("serve", cmd_serve, "Serve a model (or a spec, exported first) on Ray Serve over the Open "
                "Inference Protocol (KServe v2): infer, metadata, health; concurrent requests share a run.")
    p.add_argument("model", metavar="MODEL", help="a .onnx file, or a .yaml spec")
    p.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas, one onnxruntime session each")
    p.add_argument("--max-batch", type=int, default=8, metavar="B",
                   help="requests gathered into one run (@serve.batch), and samples per request")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, metavar="T",
                   help="how long a partial batch waits for more requests")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    p.add_argument("--address", default=None, help="join this Ray cluster (auto, or HEAD:6379) "
                   "instead of starting a local Ray")
    p.add_argument("--name", default=None, help="the served model name (default: the spec's)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads per replica "
                   "(default: physical cores / replicas)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local Ray instance (default: physical cores)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="larger request bodies get 413")
    for p in with_limits:  # after each command's own options, so `--help` reads in that order
        limits = p.add_argument_group("limits (accept 30M, 5G, ...)")
        for field in Limits.names():
            limits.add_argument(Limits.flag(field), dest=field, type=_amount, metavar="N",
                                help=f"default {getattr(Limits(), field):,}")
    return parser


if __name__ == "__main__":
    sys.exit(main())
