"""Stage 8, serve: an exported model on Ray Serve, speaking the Open Inference Protocol (KServe v2).

Everything that is a server is Ray Serve's: its HTTP proxy and FastAPI ingress take the requests,
`@serve.batch` gathers concurrent ones into one onnxruntime run, replicas are Ray actors, and
`--address` joins an existing Ray cluster, which is how one command grows past one machine. This
package adds only the protocol (`protocol`: parsing and validating requests against the model's
contract, `contract.py`, and encoding responses) and the application around it (`server`).

Protocol: https://github.com/kserve/open-inference-protocol (REST), with Triton's binary tensor
data extension (an `Inference-Header-Content-Length` header, raw little-endian tensors after the
JSON) and part of its statistics extension (request, sample and run counts, model time), which
is how a client sees that batching took place. Errors: a 4xx status and `{"error": "<message>"}`.
"""

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
from .server import DEFAULT_MAX_BODY, ServeError, ServeOptions, application, load_model, serve_forever, start, stop

__all__ = ["DEFAULT_MAX_BODY", "HEADER_LENGTH", "VERSION", "InferRequest", "RequestError", "RequestLimits",
           "ServeError", "ServeOptions", "application", "encode_response", "load_model", "model_metadata",
           "parse_request", "run_batch", "serve_forever", "start", "stop"]
