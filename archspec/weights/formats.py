"""Reading and writing weights files: `.safetensors`, PyTorch state dicts, `.npz`.

Reading never executes code: safetensors is a JSON header plus raw bytes, `.npz` is read with
`allow_pickle=False`, and a PyTorch checkpoint only through `torch.load(weights_only=True)`,
which unpickles tensors and containers and refuses any other global. Sizes are checked against
the file before anything is allocated. Tensors come out as numpy arrays, keyed as in the file
and in the file's order, so the exporter and the importer need no torch for safetensors/npz.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ArchspecError

if TYPE_CHECKING:
    import numpy as np
    import torch

# safetensors' own bound on the JSON header (safetensors/src/tensor.rs, MAX_HEADER_SIZE)
MAX_HEADER_BYTES = 100_000_000
# safetensors dtype -> numpy dtype string (https://github.com/huggingface/safetensors, format spec)
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
              "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}
_UNWRAP = ("state_dict", "model", "model_state_dict", "module")  # training-loop containers around a state dict


class WeightsError(ArchspecError):
    """A weights file is unreadable, unsafe, or does not fit the spec; the message says which tensor."""


# -- reading ---------------------------------------------------------------------------------

def read_weights(path: str | os.PathLike, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors`, PyTorch (`.pt`/`.pth`, weights_only) or `.npz` file, as
    numpy arrays in the file's order. The format is told from the content, not the name. Only a
    regular file is read; with `max_bytes`, one larger than that — on disk or unpacked, as its zip
    directory claims — is refused before anything is allocated."""
    from ..files import PathError, TooLarge, regular_file

    name = os.fspath(path)
    try:
        size = regular_file(name, max_bytes)
        with open(name, "rb") as fh:
            head = fh.read(9)
    except TooLarge as exc:
        raise WeightsError(f"weights file {name} holds {exc.size:,} bytes, more than the spec's state dict "
                           f"can take ({exc.limit:,})") from None
    except PathError as exc:
        raise WeightsError(f"weights file {name} does not exist" if exc.missing else f"weights file {exc}") from None
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {name}: {exc.strerror or exc}") from None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        with _zip(name) as zf:
            members = zf.namelist()
            claimed = sum(info.file_size for info in zf.infolist())
        if max_bytes is not None and claimed > max_bytes:
            raise WeightsError(f"weights file {name} unpacks to {claimed:,} bytes, more than the spec's state "
                               f"dict can take ({max_bytes:,})")
        if members and all(m.endswith(".npy") for m in members):
            return _read_npz(name)
        return _read_torch(name)
    if _is_pickle(head):
        return _read_torch(name)  # a legacy (non-zip) torch.save file or a bare pickle
    if len(head) >= 8:  # safetensors: a little-endian header length, whose first byte may well be 0x80
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= MAX_HEADER_BYTES:
            return _read_safetensors(name, size, header_len)
    raise WeightsError(f"{name} is not a weights file: expected .safetensors, a PyTorch state dict "
                       f"(torch.save) or .npz; it starts with {head[:8]!r}")


def _zip(name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(name)
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"{name} is a damaged zip archive (PyTorch or .npz): {exc}") from None


def _read_safetensors(name: str, size: int, header_len: int) -> dict[str, np.ndarray]:
    import numpy as np

    if 8 + header_len > size:
        raise WeightsError(f"{name}: truncated safetensors file: the header claims {header_len:,} bytes, "
                           f"the file has {size - 8:,} after the length field")
    with open(name, "rb") as fh:
        fh.seek(8)
        raw = fh.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise WeightsError(f"{name} is not a weights file: neither .safetensors (no JSON header), a PyTorch "
                           "state dict nor .npz") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{name}: the safetensors header is not a JSON object")
    data_bytes = size - 8 - header_len
    entries = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(info, dict) and isinstance(info.get("shape"), list)
                and all(isinstance(d, int) and d >= 0 for d in info["shape"])
                and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
                and all(isinstance(o, int) for o in info["data_offsets"])):
            raise WeightsError(f"{name}: malformed safetensors entry for '{key}': {str(info)[:200]}")
        if info.get("dtype") not in _ST_DTYPES:
            raise WeightsError(f"{name}: tensor '{key}' has dtype {info.get('dtype')!r}, which archspec cannot "
                               f"read without torch (supported: {', '.join(_ST_DTYPES)}); convert it to F32")
        start, end = info["data_offsets"]
        need = _numel(info["shape"]) * np.dtype(_ST_DTYPES[info["dtype"]]).itemsize
        if end - start != need or start < 0:
            raise WeightsError(f"{name}: tensor '{key}' claims shape {tuple(info['shape'])} ({need:,} bytes) "
                               f"but spans bytes {start:,}..{end:,}")
        if end > data_bytes:
            raise WeightsError(f"{name}: truncated safetensors file: tensor '{key}' ends at byte {end:,} of the "
                               f"data, which has only {data_bytes:,}")
        entries[key] = info
    try:
        from safetensors import safe_open
    except ImportError:
        raise WeightsError("reading .safetensors needs the safetensors package: pip install 'archspec[torch]' "
                           "or pip install safetensors") from None
    out = {}
    try:
        with safe_open(name, framework="numpy") as f:
            for key in entries:
                out[key] = f.get_tensor(key).reshape(entries[key]["shape"])  # 0-d comes back as (1,)
    except Exception as exc:  # the package's own validation (overlapping offsets, ...)
        raise WeightsError(f"{name}: invalid safetensors file: {_first_line(exc)}") from None
    return out


def _read_npz(name: str) -> dict[str, np.ndarray]:
    import numpy as np

    out = {}
    with _zip(name) as zf:
        for info in zf.infolist():
            with zf.open(info) as member:
                try:
                    version = np.lib.format.read_magic(member)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(member) if version == (1, 0)
                                             else np.lib.format.read_array_header_2_0(member))
                except ValueError as exc:
                    raise WeightsError(f"{name}: member {info.filename} is not a .npy array: {exc}") from None
                if dtype.hasobject:
                    raise WeightsError(f"{name}: array {info.filename} holds Python objects (a pickle); refused")
                if _numel(shape) * dtype.itemsize > info.file_size:
                    raise WeightsError(f"{name}: array {info.filename} claims shape {shape} but its member has "
                                       f"only {info.file_size:,} bytes")
    try:
        with np.load(name, allow_pickle=False) as npz:
            for key in npz.files:
                out[key] = npz[key]
    except Exception as exc:
        raise WeightsError(f"{name}: cannot read .npz: {_first_line(exc)}") from None
    return out


def _read_torch(name: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{name} is a PyTorch checkpoint; reading it needs torch (pip install 'archspec[torch]'), "
                           "or convert it to .safetensors") from None
    try:
        try:
            state = torch.load(name, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(name, map_location="cpu", weights_only=True)  # legacy format: no mmap
    except Exception as exc:  # pickle errors, globals refused by weights_only, garbage
        text = str(exc)
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"Unsupported operand \d+", text)
        if refused:
            raise WeightsError(f"refused {name}: it is a pickle that would run code "
                               f"({refused.group(0).replace('GLOBAL ', '')}); archspec reads PyTorch checkpoints "
                               "only with torch.load(weights_only=True), which allows tensors and plain "
                               "containers; save the model's state_dict() instead") from None
        raise WeightsError(f"cannot read {name} as a PyTorch state dict (saved with "
                           f"torch.save(module.state_dict())): {_first_line(exc)}") from None
    state = _unwrap(state, name)
    return {k: tensor_to_numpy(v) for k, v in state.items()}


def _unwrap(state: Any, name: str) -> Mapping[str, Any]:
    import torch

    if isinstance(state, Mapping) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        inner = [k for k in _UNWRAP if isinstance(state.get(k), Mapping)]
        if inner:
            state = state[inner[0]]
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise WeightsError(f"{name} holds a {type(state).__name__}, not a state dict; save it with "
                           "torch.save(module.state_dict())")
    odd = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise WeightsError(f"{name}: not tensors {len(odd)}: {', '.join(odd[:10])}")
    return state


def tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    """A torch tensor as a numpy array; bfloat16, which numpy lacks, becomes float32 exactly."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_safetensors(name: str) -> bool:
    with open(name, "rb") as fh:
        head = fh.read(9)
    return len(head) >= 8 and not head.startswith(b"PK") and not _is_pickle(head)


def _is_pickle(head: bytes) -> bool:
    """PROTO 2..5 (pickletools): how torch.save's legacy format and pickles of protocol 2 and later
    start. A safetensors file whose header length is 0x..0280 bytes starts alike; its ninth byte,
    the header's opening brace, tells them apart."""
    return head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and head[8:9] != b"{"


# -- writing ---------------------------------------------------------------------------------

def write_weights(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Writes `.safetensors` atomically; values may be numpy arrays or torch tensors."""
    import numpy as np

    try:
        from safetensors.numpy import save
    except ImportError:
        raise WeightsError("writing .safetensors needs the safetensors package: pip install safetensors") from None
    from ..files import atomic_write

    arrays = {k: np.array(v if isinstance(v, np.ndarray) else tensor_to_numpy(v), order="C", copy=None)
              for k, v in tensors.items()}  # not ascontiguousarray, which turns 0-d into (1,)
    data = save(arrays, metadata=dict(metadata) if metadata else None)
    atomic_write(Path(path), lambda fh: fh.write(data))


def save_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """`module.state_dict()` as `.safetensors`, with the spec's name and hash when the module was
    built by archspec (export notes a spec that changed since)."""
    meta = {}
    if hasattr(module, "spec_sha256"):
        meta = {"archspec.spec": module.spec_name, "archspec.spec_sha256": module.spec_sha256}
    write_weights(path, module.state_dict(), meta)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """A safetensors file's `__metadata__` (empty for other formats or when unreadable)."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > MAX_HEADER_BYTES:
                return {}
            meta = json.loads(fh.read(n)).get("__metadata__", {})
    except (OSError, ValueError, struct.error, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}
