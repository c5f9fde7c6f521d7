"""`archspec serve`: the Open Inference Protocol on Ray Serve.

The protocol layer (request validation, response encoding, batch grouping) is tested directly;
the end-to-end test starts `archspec serve` as a user would, on a local Ray instance with 2 CPUs,
every request bounded by a timeout, and stops it with SIGTERM. Outputs are compared with
`archspec run` (onnxruntime in this process) on the same inputs.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import archspec
from archspec.contract import read_contract
from archspec.exporter import export_model
from archspec.runtime import Session
from archspec.serve import (
    HEADER_LENGTH,
    RequestError,
    RequestLimits,
    encode_response,
    model_metadata,
    parse_request,
    run_batch,
)

ROOT = Path(__file__).resolve().parent.parent
LENET = ROOT / "specs" / "lenet.yaml"
TIMEOUT = 30  # seconds, any one HTTP request
START_TIMEOUT = 180  # seconds for Ray and the application to come up on a busy 2-core runner
LIMITS = RequestLimits(max_batch=4, max_body_bytes=1 << 20)


@pytest.fixture(scope="module")
def lenet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "lenet.onnx"
    export_model(archspec.check(LENET), path)
    return path


@pytest.fixture(scope="module")
def tagger_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "tagger.onnx"
    export_model(archspec.check(ROOT / "specs" / "bilstm_tagger.yaml"), path)
    return path


def body(*inputs: dict, **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def image(x: np.ndarray, name: str = "image", datatype: str = "FP32") -> dict:
    return {"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}


# -- the protocol, without Ray ------------------------------------------------------------------

def test_metadata_is_the_exported_contract(lenet_onnx: Path, tagger_onnx: Path) -> None:
    assert model_metadata(read_contract(lenet_onnx)) == {
        "name": "lenet", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]}
    meta = model_metadata(read_contract(tagger_onnx))
    assert meta["inputs"] == [{"name": "tokens", "datatype": "INT64", "shape": [-1, -1]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, -1, 17]}]


def test_parse_json_and_binary_agree(lenet_onnx: Path) -> None:
    contract = read_contract(lenet_onnx)
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    req = parse_request(body(image(x), id="r1"), None, contract, LIMITS)
    assert req.batch == 2 and req.id == "r1" and req.outputs == (("output", False),)
    np.testing.assert_array_equal(req.feeds["image"], x)
    nested = parse_request(body({**image(x), "data": x.tolist()}), None, contract, LIMITS)  # row-major nesting
    np.testing.assert_array_equal(nested.feeds["image"], x)
    head = body({"name": "image", "shape": [2, 1, 28, 28], "datatype": "FP32",
                 "parameters": {"binary_data_size": x.nbytes}},
                outputs=[{"name": "output", "parameters": {"binary_data": True}}])
    binary = parse_request(head + x.tobytes(), str(len(head)), contract, LIMITS)
    np.testing.assert_array_equal(binary.feeds["image"], x)
    assert binary.outputs == (("output", True),)

    y = Session(lenet_onnx).run(x)
    content, headers = encode_response(contract, binary, y)
    n = int(headers[HEADER_LENGTH])
    doc = json.loads(content[:n])
    assert doc["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [2, 10],
                               "parameters": {"binary_data_size": 80}}]
    np.testing.assert_array_equal(np.frombuffer(content[n:], np.float32).reshape(2, 10), y["output"])
    content, headers = encode_response(contract, req, y)
    doc = json.loads(content)
    assert headers == {"content-type": "application/json"} and doc["id"] == "r1"
    np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], np.float32).reshape(2, 10), y["output"])


X1 = np.zeros((1, 1, 28, 28), np.float32)
BAD = [
    (b"{bad", None, "malformed JSON"),
    (b"[1, 2]", None, "must be a JSON object, got list"),
    (b'{"inputs": [{"name": "image", "shape": [1,1,28,28], "datatype": "FP32", "data": [NaN]}]}', None,
     "malformed JSON: NaN is not JSON"),
    (body(), None, "'inputs' must be a non-empty list"),
    (body(image(X1), extra=1), None, "unknown request field(s) extra"),
    (body(image(X1, name="imag")), None, "no input 'imag'; did you mean 'image'?"),
    (body(image(X1), image(X1)), None, "input 'image' is given twice"),
    (body(image(X1, datatype="INT64")), None, "input 'image' has datatype FP32, got 'INT64'"),
    (body({**image(X1), "shape": [1, 28, 28]}), None, "3 axes instead of 4"),
    (body({**image(X1), "shape": [1, 1, 28, 27]}), None, "axis 3 must be 28"),
    (body({**image(X1), "shape": [0, 1, 28, 28]}), None, "axis 0 must be >= 1"),
    (body({**image(X1), "shape": "1x1x28x28"}), None, "needs 'shape', a list of integers"),
    (body({**image(X1), "data": [0.0] * 783}), None, "needs 784 values, got 783"),
    (body({**image(X1), "data": [[0.0] * 784, [0.0]]}), None, "ragged nested list"),
    (body({**image(X1), "data": ["a"] * 784}), None, "its data holds string values"),
    (body({**image(X1), "data": [True] * 784}), None, "its data holds boolean values"),
    (body({k: v for k, v in image(X1).items() if k != "data"}), None, "has no 'data'"),
    (body(image(np.zeros((5, 1, 28, 28), np.float32))), None, "carries 5 samples; this server takes at most 4"),
    (body(image(X1), outputs=[{"name": "logits"}]), None, "no output 'logits'; its outputs: output"),
    (body({"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 3136}}),
     "0", "needs 3136 bytes of binary data after the JSON header; 0 remain"),
    (body({"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 4}}),
     "0", "needs binary_data_size 3136, got 4"),
    (body(image(X1)), "x", "Inference-Header-Content-Length must be an integer"),
    (body(image(X1)) + b"\0" * 8, str(len(body(image(X1)))), "8 bytes of binary data after the JSON header belong "
                                                              "to no input"),
]


@pytest.mark.parametrize("content,header,message", BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_requests_are_named(lenet_onnx: Path, content: bytes, header: str | None, message: str) -> None:
    contract = read_contract(lenet_onnx)
    if header == "0":  # binary data announced but short: the header is the JSON's length
        header = str(len(content))
    with pytest.raises(RequestError) as info:
        parse_request(content, header, contract, LIMITS)
    assert info.value.status == 400 and message in info.value.message


def test_token_inputs_are_integers(tagger_onnx: Path) -> None:
    contract = read_contract(tagger_onnx)
    ok = parse_request(body({"name": "tokens", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}), None,
                       contract, LIMITS)
    assert ok.feeds["tokens"].dtype == np.int64 and ok.feeds["tokens"].tolist() == [[1, 2, 3]]
    with pytest.raises(RequestError, match="its data holds floating-point values"):
        parse_request(body({"name": "tokens", "shape": [1, 2], "datatype": "INT64", "data": [1.5, 2]}), None,
                      contract, LIMITS)
    with pytest.raises(RequestError, match="holds mixed or out-of-range values"):
        parse_request(body({"name": "tokens", "shape": [1, 1], "datatype": "INT64", "data": [2 ** 70]}), None,
                      contract, LIMITS)


def test_run_batch_groups_by_sequence_length(tagger_onnx: Path) -> None:
    """Requests of different lengths cannot share a run; each group runs once, results split back."""
    contract, session = read_contract(tagger_onnx), Session(tagger_onnx)
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 100, (b, t), dtype=np.int64) for b, t in ((1, 5), (2, 7), (1, 5), (3, 7))]
    reqs = [parse_request(body({"name": "tokens", "shape": list(a.shape), "datatype": "INT64",
                                "data": a.ravel().tolist()}), None, contract, LIMITS) for a in arrays]
    calls = []

    class Counting:
        def run(self, feeds):
            calls.append({k: v.shape for k, v in feeds.items()})
            return session.run(feeds)

    results = run_batch(Counting(), contract, reqs)
    assert sorted(c["tokens"] for c in calls) == [(2, 5), (5, 7)]
    for a, got in zip(arrays, results):
        np.testing.assert_allclose(got["output"], session.run(a)["output"], rtol=0, atol=1e-6)


# -- end to end: `archspec serve` on a local Ray instance -------------------------------------------

class Server:
    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, content: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=content, headers=headers or {"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()

    def json(self, method: str, path: str, content: bytes | None = None) -> tuple[int, Any]:
        status, data, _ = self.request(method, path, content)
        return status, json.loads(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model: str, name: str) -> Iterator[Server]:
    """`archspec serve MODEL` as a user starts it: 2 Ray CPUs, 1 replica with 1 onnxruntime thread,
    up to 8 requests per run, 1 MiB bodies; ready within START_TIMEOUT, stopped by SIGTERM."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "archspec.cli", "serve", model, "--port", str(port),
                             "--max-batch", "8", "--batch-wait-ms", "20", "--max-body-mb", "1", "--num-cpus", "2",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    server = Server(port)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"archspec serve exited with {proc.returncode}: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "archspec serve did not become ready in time"
            try:
                if server.request("GET", f"/v2/models/{name}/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        # the endpoint answers before `start` returns; the user sees the address once it has
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 1.0))
        assert ready, "archspec serve printed no address"
        assert f"serving '{name}' at" in proc.stdout.readline()
        yield server
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:  # a failed test must not leave Ray running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def lenet_server(lenet_onnx: Path) -> Iterator[Server]:
    yield from _serve(str(lenet_onnx), "lenet")


def test_serve_metadata_and_health(lenet_server: Server, lenet_onnx: Path) -> None:
    assert lenet_server.json("GET", "/v2/health/live") == (200, {"live": True})
    assert lenet_server.json("GET", "/v2/health/ready") == (200, {"ready": True})
    status, meta = lenet_server.json("GET", "/v2/models/lenet")
    assert status == 200 and meta == model_metadata(read_contract(lenet_onnx))
    assert meta["inputs"][0]["shape"][1:] == list(archspec.check(LENET).graph.input.shape)
    status, meta = lenet_server.json("GET", "/v2")
    assert status == 200 and meta["name"] == "archspec" and "binary_tensor_data" in meta["extensions"]


def test_serve_concurrent_requests_equal_archspec_run_and_are_batched(lenet_server: Server, lenet_onnx: Path) -> None:
    _, before = lenet_server.json("GET", "/v2/models/lenet/stats")
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((1 + i % 3, 1, 28, 28)).astype(np.float32) for i in range(48)]

    def infer(x: np.ndarray) -> np.ndarray:
        status, doc = lenet_server.json("POST", "/v2/models/lenet/infer", body(image(x)))
        assert status == 200, doc
        (out,) = doc["outputs"]
        assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [len(x), 10]
        return np.array(out["data"], np.float32).reshape(out["shape"])

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(infer, inputs))
    for x, y in zip(inputs, got):
        np.testing.assert_array_equal(y, archspec.run(lenet_onnx, x).outputs["output"])

    _, after = lenet_server.json("GET", "/v2/models/lenet/stats")
    (a,), (b,) = after["model_stats"], before["model_stats"]
    requests = a["request_count"] - b["request_count"]
    runs = a["execution_count"] - b["execution_count"]
    assert requests == 48 and a["inference_count"] - b["inference_count"] == sum(len(x) for x in inputs)
    assert requests / runs > 1, f"{requests} requests in {runs} runs: no batching took place"
    assert max(s["batch_size"] for s in a["batch_stats"]) > 1


def test_serve_binary_tensors(lenet_server: Server, lenet_onnx: Path) -> None:
    x = np.random.default_rng(3).standard_normal((3, 1, 28, 28)).astype(np.float32)
    head = body({"name": "image", "shape": [3, 1, 28, 28], "datatype": "FP32",
                 "parameters": {"binary_data_size": x.nbytes}}, parameters={"binary_data_output": True})
    status, content, headers = lenet_server.request("POST", "/v2/models/lenet/infer", head + x.tobytes(),
                                                    {HEADER_LENGTH: str(len(head))})
    assert status == 200
    n = int(headers[HEADER_LENGTH.lower()])
    assert json.loads(content[:n])["outputs"][0]["parameters"] == {"binary_data_size": 120}
    np.testing.assert_array_equal(np.frombuffer(content[n:], np.float32).reshape(3, 10),
                                  archspec.run(lenet_onnx, x).outputs["output"])


def test_serve_bad_requests_get_4xx_with_the_error_body(lenet_server: Server) -> None:
    cases = [
        ("POST", "/v2/models/lenet/infer", b"{bad", 400, "malformed JSON"),
        ("POST", "/v2/models/lenet/infer", body(image(X1, name="imag")), 400, "did you mean 'image'?"),
        ("POST", "/v2/models/lenet/infer", body(image(X1, datatype="FP64")), 400, "has datatype FP32"),
        ("POST", "/v2/models/lenet/infer", body({**image(X1), "shape": [1, 1, 28, 29]}), 400, "axis 3 must be 28"),
        ("POST", "/v2/models/lenet/infer", body({**image(X1), "data": [0.0] * 10}), 400, "needs 784 values, got 10"),
        ("POST", "/v2/models/lenet/infer", body(image(np.zeros((9, 1, 28, 28), np.float32))), 400,
         "at most 8 per request"),
        ("POST", "/v2/models/resnet/infer", body(image(X1)), 404, "unknown model 'resnet'"),
        ("POST", "/v2/models/lenet/versions/2/infer", body(image(X1)), 404, "has only version 1"),
        ("GET", "/v2/models/lenet/infer", None, 405, "Method Not Allowed"),
        ("GET", "/v2/nowhere", None, 404, "Not Found"),
    ]
    for method, path, content, status, message in cases:
        got, data, _ = lenet_server.request(method, path, content)
        doc = json.loads(data)
        assert (got, list(doc)) == (status, ["error"]) and message in doc["error"], (path, got, doc)


def test_serve_refuses_oversized_bodies(lenet_server: Server) -> None:
    """Declared too long: refused before the body is read. Streamed without a length: refused
    once it passes the limit (1 MiB here)."""
    conn = http.client.HTTPConnection("127.0.0.1", lenet_server.port, timeout=TIMEOUT)
    try:
        conn.putrequest("POST", "/v2/models/lenet/infer")
        conn.putheader("Content-Length", str(2 << 20))
        conn.endheaders()
        conn.send(b"{" * 1024)
        r = conn.getresponse()
        assert r.status == 413 and "exceeds the limit of 1048576 bytes" in json.loads(r.read())["error"]
    finally:
        conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", lenet_server.port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/v2/models/lenet/infer", body=iter([b" " * (64 << 10)] * 20), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        assert r.status == 413 and "exceeds the limit of 1048576 bytes" in json.loads(r.read())["error"]
    finally:
        conn.close()
    assert lenet_server.request("POST", "/v2/models/lenet/infer", body(image(X1)))[0] == 200  # still serving


@pytest.mark.parametrize("args,message", [
    (["missing.onnx"], "no such model file: missing.onnx"),
    (["LENET", "--replicas", "0"], "--replicas must be >= 1, got 0"),
    (["LENET", "--batch-wait-ms", "-1"], "--batch-wait-ms must be between 0 and 60000"),
    (["LENET", "--port", "70000"], "--port must be <= 65535"),
])
def test_cli_serve_refuses_bad_options_before_starting_ray(lenet_onnx: Path, args: list[str], message: str) -> None:
    args = [str(lenet_onnx) if a == "LENET" else a for a in args]
    r = subprocess.run([sys.executable, "-m", "archspec.cli", "serve", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and f"archspec: error: {message}" in r.stderr and "Traceback" not in r.stderr


def test_several_inputs_and_outputs(tmp_path: Path) -> None:
    """N inputs and outputs: all required, a shared symbolic axis agrees, batches split per output."""
    from test_triton import two_in_two_out

    path = two_in_two_out(tmp_path / "two.onnx")
    contract, session = read_contract(path, "two"), Session(path)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(8, dtype=np.int64).reshape(2, 4)
    req = parse_request(body({"name": "b", "shape": [2, 4], "datatype": "INT64", "data": b.ravel().tolist()},
                             {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": a.ravel().tolist()},
                             outputs=[{"name": "count"}]), None, contract, LIMITS)
    assert list(req.feeds) == ["a", "b"] and req.outputs == (("count", False),) and req.batch == 2
    with pytest.raises(RequestError, match="missing input.s. b"):
        parse_request(body({"name": "a", "shape": [2, 3], "datatype": "FP32", "data": a.ravel().tolist()}), None,
                      contract, LIMITS)
    with pytest.raises(RequestError, match="axis 'batch' is 2 in input 'a' but 1 in input 'b'"):
        parse_request(body({"name": "a", "shape": [2, 3], "datatype": "FP32", "data": a.ravel().tolist()},
                           {"name": "b", "shape": [1, 4], "datatype": "INT64", "data": b[:1].ravel().tolist()}),
                      None, contract, LIMITS)
    one = parse_request(body({"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]},
                             {"name": "b", "shape": [1, 4], "datatype": "INT64", "data": [9, 8, 7, 6]}),
                        None, contract, LIMITS)
    first, second = run_batch(session, contract, [req, one])
    np.testing.assert_array_equal(first["sum"], 2 * a)
    np.testing.assert_array_equal(first["count"], b)
    np.testing.assert_array_equal(second["sum"], [[2.0, 4.0, 6.0]])
    content, _ = encode_response(contract, req, first)
    assert [o["name"] for o in json.loads(content)["outputs"]] == ["count"]


# -- end to end: a two-input spec, served from the spec itself ----------------------------------------

TWO_INPUTS = ROOT / "examples" / "image_metadata.yaml"


@pytest.fixture(scope="module")
def two_input_server() -> Iterator[Server]:
    """`archspec serve SPEC`: the spec is exported (seed 0) and verified by the command itself."""
    yield from _serve(str(TWO_INPUTS), "image_metadata")


def test_serve_two_inputs_equal_archspec_run(two_input_server: Server, tmp_path: Path) -> None:
    report = archspec.check(TWO_INPUTS)
    model = tmp_path / "two.onnx"
    export_model(report, model)  # the same seeded weights the server exported
    status, meta = two_input_server.json("GET", "/v2/models/image_metadata")
    assert status == 200 and meta == model_metadata(read_contract(model))
    assert [i["name"] for i in meta["inputs"]] == [i.name for i in report.graph.inputs]
    assert [i["shape"][1:] for i in meta["inputs"]] == [list(i.shape) for i in report.graph.inputs]
    rng = np.random.default_rng(11)
    cases = [{"image": rng.standard_normal((1 + k % 2, 3, 64, 64)).astype(np.float32),
              "meta": rng.standard_normal((1 + k % 2, 12)).astype(np.float32)} for k in range(24)]
    _, before = two_input_server.json("GET", "/v2/models/image_metadata/stats")

    def infer(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # the inputs in the other order than the model's: matched by name
        status, doc = two_input_server.json("POST", "/v2/models/image_metadata/infer",
                                            body(image(feeds["meta"], "meta"), image(feeds["image"])))
        assert status == 200, doc
        return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in doc["outputs"]}

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(infer, cases))
    for feeds, got in zip(cases, results):
        want = archspec.run(model, feeds).outputs
        assert list(got) == list(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    _, after = two_input_server.json("GET", "/v2/models/image_metadata/stats")
    (a,), (b,) = after["model_stats"], before["model_stats"]
    assert a["request_count"] - b["request_count"] == 24
    assert (a["request_count"] - b["request_count"]) / (a["execution_count"] - b["execution_count"]) > 1
    status, data, _ = two_input_server.request("POST", "/v2/models/image_metadata/infer",
                                               body(image(cases[0]["image"])))
    assert status == 400 and json.loads(data) == {"error": "missing input(s) meta"}
