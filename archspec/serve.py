"""Stage 8, serve: an exported model on Ray Serve, speaking the Open Inference Protocol (KServe v2).

Everything that is a server is Ray Serve's: its HTTP proxy and FastAPI ingress take the requests,
`@serve.batch` gathers concurrent ones into one onnxruntime run, replicas are Ray actors, and
`--address` joins an existing Ray cluster, which is how one command grows past one machine. This
module adds only the protocol: parsing and validating requests against the model's contract
(`contract.py`), and encoding responses.

Protocol: https://github.com/kserve/open-inference-protocol (REST), with Triton's binary tensor
data extension (an `Inference-Header-Content-Length` header, raw little-endian tensors after the
JSON) and part of its statistics extension (request, sample and run counts, model time), which
is how a client sees that batching took place. Errors: a 4xx status and `{"error": "<message>"}`.
Ray, FastAPI and onnxruntime are imported on use, so the protocol functions test without them.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations at run time
import asyncio
import json
import math
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .contract import Contract, Tensor, read_contract
from .errors import ArchspecError, did_you_mean

if TYPE_CHECKING:
    import numpy as np

VERSION = "1"  # the one model version served
HEADER_LENGTH = "Inference-Header-Content-Length"  # Triton binary tensor data extension
DEFAULT_MAX_BODY = 64 << 20


class ServeError(ArchspecError):
    """The server cannot be started as asked."""


class RequestError(Exception):
    """A request the protocol rejects: answered with `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InferRequest:
    """A validated request: arrays by input name (the contract's order), the outputs asked for and
    whether each comes back binary, and the client's id."""

    feeds: Mapping[str, "np.ndarray"]
    outputs: tuple[tuple[str, bool], ...]
    id: str | None
    batch: int  # samples on axis 0 (1 for a model without a batch axis)


@dataclass(frozen=True)
class RequestLimits:
    max_batch: int  # samples per request, and requests per model run
    max_body_bytes: int


# -- the protocol, free of Ray (unit-tested directly) ---------------------------------------------

def model_metadata(contract: Contract) -> dict[str, Any]:
    """`GET /v2/models/{name}`: names, datatypes and shapes (-1 = symbolic) of the exported graph."""
    def rows(tensors: tuple[Tensor, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]
    return {"name": contract.name, "versions": [VERSION], "platform": "onnxruntime_onnx",
            "inputs": rows(contract.inputs), "outputs": rows(contract.outputs)}


def parse_request(body: bytes, header_length: str | None, contract: Contract,
                  limits: RequestLimits) -> InferRequest:
    """Validates an infer request against the contract; RequestError(400) names the first problem."""
    import numpy as np

    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise RequestError(400, f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise RequestError(400, f"{HEADER_LENGTH} {n} is outside the body of {len(body)} bytes")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    try:
        doc = json.loads(head, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, f"the request must be a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - {"id", "parameters", "inputs", "outputs"}
    if unknown:
        raise RequestError(400, f"unknown request field(s) {', '.join(sorted(unknown))}")
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise RequestError(400, "'id' must be a string")
    params = _object(doc.get("parameters", {}), "parameters")
    entries = doc.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise RequestError(400, "'inputs' must be a non-empty list")

    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for k, entry in enumerate(entries):
        entry = _object(entry, f"inputs[{k}]")
        name = entry.get("name")
        if not isinstance(name, str):
            raise RequestError(400, f"inputs[{k}] needs a 'name' string")
        tensor = contract.input(name)
        if tensor is None:
            names = [t.name for t in contract.inputs]
            hint = did_you_mean(name, names) or f"its inputs: {', '.join(names)}"
            raise RequestError(400, f"model '{contract.name}' has no input '{name}'; {hint}")
        if name in feeds:
            raise RequestError(400, f"input '{name}' is given twice")
        if entry.get("datatype") != tensor.datatype:
            raise RequestError(400, f"input '{name}' has datatype {tensor.datatype}, got {entry.get('datatype')!r}")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise RequestError(400, f"input '{name}' needs 'shape', a list of integers")
        _check_shape(tensor, shape, limits)
        size = math.prod(shape)
        iparams = _object(entry.get("parameters", {}), f"input '{name}' parameters")
        if "binary_data_size" in iparams:
            nbytes = iparams["binary_data_size"]
            itemsize = np.dtype(tensor.dtype).itemsize
            if not isinstance(nbytes, int) or nbytes != size * itemsize:
                raise RequestError(400, f"input '{name}' of shape {shape} and {tensor.datatype} needs binary_data_size "
                                   f"{size * itemsize}, got {nbytes!r}")
            if "data" in entry:
                raise RequestError(400, f"input '{name}' has both 'data' and binary_data_size")
            if offset + nbytes > len(binary):
                raise RequestError(400, f"input '{name}' needs {nbytes} bytes of binary data after the JSON header; "
                                   f"{len(binary) - offset} remain")
            array = np.frombuffer(binary[offset:offset + nbytes], dtype=np.dtype(tensor.dtype).newbyteorder("<"))
            array = array.astype(tensor.dtype, copy=False).reshape(shape)
            offset += nbytes
        else:
            if "data" not in entry:
                raise RequestError(400, f"input '{name}' has no 'data' (nor binary_data_size)")
            array = _json_array(entry["data"], tensor, shape)
        feeds[name] = array
    if offset != len(binary):
        raise RequestError(400, f"{len(binary) - offset} bytes of binary data after the JSON header belong to no input")
    missing = [t.name for t in contract.inputs if t.name not in feeds]
    if missing:
        raise RequestError(400, f"missing input(s) {', '.join(missing)}")
    _check_shared_axes(contract, feeds)
    batch = next(iter(feeds.values())).shape[0] if contract.batched else 1
    if contract.batched and any(a.shape[0] != batch for a in feeds.values()):
        raise RequestError(400, "inputs disagree on the batch size (axis 0): "
                           + ", ".join(f"{n} {a.shape[0]}" for n, a in feeds.items()))

    binary_default = params.get("binary_data_output", False) is True
    wanted = doc.get("outputs")
    if wanted is None:
        outputs = tuple((t.name, binary_default) for t in contract.outputs)
    else:
        if not isinstance(wanted, list) or not wanted:
            raise RequestError(400, "'outputs' must be a non-empty list")
        chosen = []
        for k, entry in enumerate(wanted):
            entry = _object(entry, f"outputs[{k}]")
            name = entry.get("name")
            if not isinstance(name, str) or contract.output(name) is None:
                names = [t.name for t in contract.outputs]
                hint = did_you_mean(str(name), names) or f"its outputs: {', '.join(names)}"
                raise RequestError(400, f"model '{contract.name}' has no output {name!r}; {hint}")
            oparams = _object(entry.get("parameters", {}), f"output '{name}' parameters")
            chosen.append((name, oparams.get("binary_data", binary_default) is True))
        outputs = tuple(chosen)
    ordered = {t.name: feeds[t.name] for t in contract.inputs}
    return InferRequest(ordered, outputs, req_id, batch)


def encode_response(contract: Contract, request: InferRequest, results: Mapping[str, "np.ndarray"]) \
        -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers: JSON, then the binary outputs in order if any."""
    import numpy as np

    entries, blobs = [], []
    for name, binary in request.outputs:
        y = np.ascontiguousarray(results[name])
        entry: dict[str, Any] = {"name": name, "datatype": contract.output(name).datatype, "shape": list(y.shape)}
        if binary:
            blob = y.astype(y.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = y.reshape(-1).tolist()
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": contract.name, "model_version": VERSION, "outputs": entries}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {HEADER_LENGTH: str(len(head)), "content-type": "application/octet-stream"}


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise RequestError(400, f"{what} must be a JSON object")
    return value


def _check_shape(tensor: Tensor, shape: list[int], limits: RequestLimits) -> None:
    want = "[" + ", ".join(map(str, tensor.shape)) + "]"
    if len(shape) != len(tensor.shape):
        raise RequestError(400, f"input '{tensor.name}' has shape {want} (-1: any size), got {shape}: "
                           f"{len(shape)} axes instead of {len(tensor.shape)}")
    for axis, (got, need) in enumerate(zip(shape, tensor.shape)):
        if need >= 0 and got != need:
            raise RequestError(400, f"input '{tensor.name}' has shape {want} (-1: any size), got {shape}: "
                               f"axis {axis} must be {need}")
        if got < 1:
            raise RequestError(400, f"input '{tensor.name}' axis {axis} must be >= 1, got {got}")
    if tensor.axis_names and tensor.axis_names[0] and shape[0] > limits.max_batch:
        raise RequestError(400, f"input '{tensor.name}' carries {shape[0]} samples; this server takes at most "
                           f"{limits.max_batch} per request (--max-batch)")


def _check_shared_axes(contract: Contract, feeds: Mapping[str, "np.ndarray"]) -> None:
    """Two inputs whose axes share a symbolic name (say `time`) must agree on its size."""
    sizes: dict[str, tuple[int, str]] = {}
    for tensor in contract.inputs:
        for axis, axis_name in enumerate(tensor.axis_names):
            if not axis_name or axis_name == "?":
                continue
            n = feeds[tensor.name].shape[axis]
            seen = sizes.setdefault(axis_name, (n, tensor.name))
            if seen[0] != n:
                raise RequestError(400, f"axis '{axis_name}' is {seen[0]} in input '{seen[1]}' but {n} in "
                                   f"input '{tensor.name}'")


def _json_array(data: Any, tensor: Tensor, shape: list[int]) -> "np.ndarray":
    import numpy as np

    if not isinstance(data, list):
        raise RequestError(400, f"input '{tensor.name}' 'data' must be a list")
    try:
        array = np.asarray(data)
    except ValueError:
        raise RequestError(400, f"input '{tensor.name}' 'data' is a ragged nested list") from None
    kind = np.dtype(tensor.dtype).kind
    allowed = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}[kind] if array.size else "biuf"  # [] is float64
    if array.dtype.kind not in allowed:
        raise RequestError(400, f"input '{tensor.name}' is {tensor.datatype}; its data holds "
                           f"{_kind_name(array.dtype)} values")
    if array.size != math.prod(shape):
        raise RequestError(400, f"input '{tensor.name}' of shape {shape} needs {math.prod(shape)} values, "
                           f"got {array.size}")
    if kind in "iu":
        info = np.iinfo(tensor.dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise RequestError(400, f"input '{tensor.name}' has values outside {tensor.datatype}")
    return array.astype(tensor.dtype).reshape(shape)


def _kind_name(dtype: "np.dtype") -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point", "U": "string",
            "O": "mixed or out-of-range"}.get(dtype.kind, str(dtype))


def run_batch(session: Any, contract: Contract,
              requests: list[InferRequest]) -> list[dict[str, "np.ndarray"] | Exception]:
    """One onnxruntime run per group of requests whose non-batch axes agree (a `time` axis may
    differ between requests); a model without a batch axis runs each request alone."""
    import numpy as np

    results: list[dict[str, np.ndarray] | Exception] = [{} for _ in requests]
    groups: dict[tuple, list[int]] = {}
    for i, req in enumerate(requests):
        key = tuple(a.shape[1:] for a in req.feeds.values()) if contract.batched else (i,)
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        feeds = {name: np.concatenate([requests[i].feeds[name] for i in members]) if len(members) > 1
                 else requests[members[0]].feeds[name] for name in requests[members[0]].feeds}
        try:
            out = session.run(feeds)
        except Exception as exc:  # an onnxruntime failure on valid input: a server error, for this group only
            for i in members:
                results[i] = RuntimeError(f"onnxruntime failed: {str(exc).strip().splitlines()[0]}")
            continue
        bounds = np.cumsum([requests[i].batch for i in members])[:-1]
        split = {name: np.split(y, bounds) if len(members) > 1 else [y] for name, y in out.items()}
        for j, i in enumerate(members):
            results[i] = {name: parts[j] for name, parts in split.items()}
    return results


# -- Ray Serve -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServeOptions:
    name: str | None = None  # served model name; default the spec's
    replicas: int = 1
    max_batch: int = 8  # requests per model run (@serve.batch) and samples per request
    batch_wait_ms: float = 5.0  # how long a partial batch waits for more requests
    threads: int | None = None  # onnxruntime intra-op threads per replica; default cores // replicas
    max_body_bytes: int = DEFAULT_MAX_BODY
    host: str = "127.0.0.1"
    port: int = 8000
    address: str | None = None  # an existing Ray cluster ("auto", "HEAD:6379"); None: a local one
    num_cpus: int | None = None  # for the local Ray instance; default the physical cores

    def check(self) -> None:
        for what, value, low in (("--replicas", self.replicas, 1), ("--max-batch", self.max_batch, 1),
                                 ("--threads", self.threads or 1, 1), ("--num-cpus", self.num_cpus or 1, 1),
                                 ("--max-body-mb", self.max_body_bytes, 1), ("--port", self.port, 0)):
            if value < low:
                raise ServeError(f"{what} must be >= {low}, got {value}")
        if not 0 <= self.batch_wait_ms <= 60_000:
            raise ServeError(f"--batch-wait-ms must be between 0 and 60000, got {self.batch_wait_ms}")
        if self.port > 65535:
            raise ServeError(f"--port must be <= 65535, got {self.port}")


def _deployment_class() -> Any:
    """The Ray Serve deployment, defined on first use so that `import archspec.serve` needs no Ray."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from ray import serve
    from starlette.exceptions import HTTPException

    api = FastAPI(title="archspec Open Inference Protocol server")

    @api.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:  # unknown path, bad method
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @serve.deployment
    @serve.ingress(api)
    class OpenInferenceModel:
        """One replica: one onnxruntime session, requests gathered by @serve.batch."""

        def __init__(self, model: bytes | str, name: str, max_batch: int, batch_wait_s: float, threads: int,
                     max_body_bytes: int):
            from . import __version__
            from .runtime import Session

            # no spinning: idle pool threads that busy-wait between a run's tasks would take the CPU
            # the event loop needs to accept the requests of the next batch
            self.session = Session(model, device="cpu", threads=threads, spinning="never")
            self.contract = read_contract(model, name)
            self.limits = RequestLimits(max_batch, max_body_bytes)
            self.version = __version__
            self.infer_batch.set_max_batch_size(max_batch)
            self.infer_batch.set_batch_wait_timeout_s(batch_wait_s)
            self.executions = self.requests = self.samples = 0
            self.batch_counts: dict[int, tuple[int, int]] = {}  # requests per run -> (runs, nanoseconds)

        def _unknown(self, model_name: str) -> JSONResponse | None:
            if model_name == self.contract.name:
                return None
            return error(404, f"unknown model '{model_name}'; this server has '{self.contract.name}'")

        @api.get("/v2/health/live")
        async def live(self) -> dict:
            return {"live": True}

        @api.get("/v2/health/ready")
        async def ready(self) -> dict:
            return {"ready": True}

        @api.get("/v2")
        async def server_metadata(self) -> dict:
            return {"name": "archspec", "version": self.version, "extensions": ["binary_tensor_data", "statistics"]}

        @api.get("/v2/models/{model_name}")
        @api.get("/v2/models/{model_name}/versions/{model_version}")
        async def metadata(self, model_name: str, model_version: str = VERSION) -> Any:
            return self._unknown(model_name) or self._version(model_version) or model_metadata(self.contract)

        @api.get("/v2/models/{model_name}/ready")
        @api.get("/v2/models/{model_name}/versions/{model_version}/ready")
        async def model_ready(self, model_name: str, model_version: str = VERSION) -> Any:
            return self._unknown(model_name) or self._version(model_version) or {"name": model_name, "ready": True}

        @api.get("/v2/models/{model_name}/stats")
        async def stats(self, model_name: str) -> Any:
            """Triton's statistics extension, in part: counts, and the model's time per number of
            requests gathered (`batch_stats`); per replica (the one that answers)."""
            return self._unknown(model_name) or {"model_stats": [{
                "name": self.contract.name, "version": VERSION, "inference_count": self.samples,
                "execution_count": self.executions, "request_count": self.requests,
                "batch_stats": [{"batch_size": b, "compute_infer": {"count": n, "ns": ns}}
                                for b, (n, ns) in sorted(self.batch_counts.items())]}]}

        @api.post("/v2/models/{model_name}/infer")
        @api.post("/v2/models/{model_name}/versions/{model_version}/infer")
        async def infer(self, model_name: str, request: Request, model_version: str = VERSION) -> Any:
            bad = self._unknown(model_name) or self._version(model_version)
            if bad is not None:
                return bad
            try:
                body = await _read_body(request, self.limits.max_body_bytes)
                parsed = parse_request(body, request.headers.get(HEADER_LENGTH), self.contract, self.limits)
            except RequestError as exc:
                return error(exc.status, exc.message)
            result = await self.infer_batch(parsed)
            if isinstance(result, Exception):
                return error(500, str(result))
            content, headers = encode_response(self.contract, parsed, result)
            return Response(content=content, headers=headers)

        def _version(self, model_version: str) -> JSONResponse | None:
            return None if model_version == VERSION else \
                error(404, f"model '{self.contract.name}' has only version {VERSION}, not {model_version!r}")

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
        async def infer_batch(self, requests: list[InferRequest]) -> list[Any]:
            t0 = time.perf_counter_ns()
            results = await asyncio.to_thread(run_batch, self.session, self.contract, requests)
            ns = time.perf_counter_ns() - t0
            self.executions += len({tuple(a.shape[1:] for a in r.feeds.values()) for r in requests}) \
                if self.contract.batched else len(requests)  # one run per group of equal non-batch axes
            self.requests += len(requests)
            self.samples += sum(r.batch for r in requests)
            count, total = self.batch_counts.get(len(requests), (0, 0))
            self.batch_counts[len(requests)] = (count + 1, total + ns)
            return results

    return OpenInferenceModel


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes, by its declared length or as it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, f"bad Content-Length {declared!r}")
        if int(declared) > limit:
            raise RequestError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes "
                               "(--max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes (--max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def application(model: bytes | str, contract: Contract, options: ServeOptions) -> Any:
    """The Ray Serve application for one model (bound deployment), not yet running."""
    from .runtime import physical_cores

    threads = options.threads or max(1, physical_cores() // options.replicas)
    deployment = _deployment_class().options(
        name=contract.name, num_replicas=options.replicas, ray_actor_options={"num_cpus": threads},
        # requests admitted to a replica: a batch running while the next ones' bodies arrive (through
        # the proxy, in several actor calls each); measured with ResNet-18 at 32 clients on 2 cores:
        # admitting 2x max_batch (16) left the model idle 38% of the time, admitting all 32 kept it
        # busy (tools/bench_serve.py)
        max_ongoing_requests=4 * options.max_batch)
    return deployment.bind(model, contract.name, options.max_batch, options.batch_wait_ms / 1000, threads,
                           options.max_body_bytes)


def load_model(model: Any, *, limits: Any = None) -> tuple[bytes | str, Contract]:
    """The model to ship to replicas: an ONNX file's bytes (a spec is exported and verified first;
    bytes pass as they are);
    a model with external data (over 2 GB) is shipped as its path, which every node must see."""
    from .runtime import is_spec

    if isinstance(model, bytes):
        return model, read_contract(model)
    if is_spec(model):
        from .api import check
        from .exporter import export_model

        report = check(model, limits=limits)
        with tempfile.TemporaryDirectory(prefix="archspec-serve-") as tmp:
            result = export_model(report, Path(tmp) / f"{report.graph.name}.onnx")
            if result.external_data is not None:
                raise ServeError(f"'{report.graph.name}' exports with external data (over 2 GB); export it to a "
                                 "file every node can read and serve that file")
            data = result.path.read_bytes()
        return data, read_contract(data, report.graph.name)
    path = Path(model)
    if not path.is_file():
        raise ServeError(f"no such model file: {model}")
    contract = read_contract(path)
    import onnx

    header = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in header.graph.initializer):
        return str(path.resolve()), contract
    return path.read_bytes(), contract


def start(model: Any, options: ServeOptions = ServeOptions(), *, limits: Any = None,
          sigterm_interrupts: bool = False) -> tuple[Contract, str]:
    """Starts (or joins) Ray, then the application; returns the contract and the base URL.
    sigterm_interrupts: SIGTERM raises KeyboardInterrupt from then on (ray.init installs a handler
    that aborts the process, which would leave no chance to shut down cleanly)."""
    import ray
    from ray import serve

    from .runtime import physical_cores

    options.check()
    data, contract = load_model(model, limits=limits)
    if options.name:
        contract = replace(contract, name=options.name)
    if options.address:
        ray.init(address=options.address, logging_level="warning", log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=options.num_cpus or physical_cores(), include_dashboard=False,
                 object_store_memory=256 << 20, logging_level="warning", log_to_driver=False)
    if sigterm_interrupts and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve.start(http_options={"host": options.host, "port": options.port})
        serve.run(application(data, contract, options), name=contract.name, route_prefix="/",
                  logging_config={"enable_access_log": False, "log_level": "WARNING"})
    except Exception as exc:
        stop()
        text = str(exc).strip()
        raise ServeError(f"Ray Serve could not start '{contract.name}': "
                         f"{text.splitlines()[0] if text else type(exc).__name__}") from exc
    except BaseException:
        stop()
        raise
    return contract, f"http://{options.host}:{options.port}"


def stop() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_forever(model: Any, options: ServeOptions, *, limits: Any = None) -> None:
    """`archspec serve`: runs until Ctrl-C or SIGTERM, then shuts Serve and Ray down."""
    import sys

    try:
        contract, url = start(model, options, limits=limits, sigterm_interrupts=True)
    except KeyboardInterrupt:  # stopped while starting: start() has shut down what it started
        return
    try:
        print(f"serving '{contract.name}' at {url}/v2/models/{contract.name} (infer: POST .../infer); "
              f"{options.replicas} replica(s), up to {options.max_batch} requests per run, "
              f"batch wait {options.batch_wait_ms:g} ms. Ctrl-C stops.", flush=True)
        for t in contract.inputs:
            print(f"  input  {t.name}: {t.datatype} {list(t.shape)}", flush=True)
        for t in contract.outputs:
            print(f"  output {t.name}: {t.datatype} {list(t.shape)}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr, flush=True)
    finally:
        stop()
