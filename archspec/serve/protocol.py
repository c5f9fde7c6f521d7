"""The Open Inference Protocol (KServe v2) without a server: requests parsed and validated against
the model's contract, responses encoded, a batch of requests run in one onnxruntime call per
group that can share it. Free of Ray and FastAPI, so it is unit-tested directly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ..contract import Contract, Tensor
from ..errors import did_you_mean

if TYPE_CHECKING:
    import numpy as np

VERSION = "1"  # the one model version served
HEADER_LENGTH = "Inference-Header-Content-Length"  # Triton binary tensor data extension


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
