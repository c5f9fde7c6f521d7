"""The Ray Serve application: one FastAPI ingress per model, replicas that each hold one
onnxruntime session and gather concurrent requests with `@serve.batch`, and starting, joining
and stopping Ray. Ray, FastAPI and onnxruntime are imported on use.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations at run time
import asyncio
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..contract import Contract, read_contract
from ..errors import ArchspecError
from .protocol import (
    HEADER_LENGTH,
    VERSION,
    InferRequest,
    RequestError,
    RequestLimits,
    encode_response,
    model_metadata,
    parse_request,
    run_batch,
)

DEFAULT_MAX_BODY = 64 << 20


class ServeError(ArchspecError):
    """The server cannot be started as asked."""


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
            from .. import __version__
            from ..runtime import Session

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
    from ..runtime import physical_cores

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
    from ..runtime import is_spec

    if isinstance(model, bytes):
        return model, read_contract(model)
    if is_spec(model):
        from ..api import check
        from ..exporter import export_model

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

    from ..runtime import physical_cores

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
