"""Every weights file archspec reads or writes: `.safetensors`, PyTorch state dicts, `.npz`.

Reading never executes code: safetensors is a JSON header plus raw bytes, `.npz` is read with
`allow_pickle=False`, and a PyTorch checkpoint only through `torch.load(weights_only=True)`,
which unpickles tensors and containers and refuses any other global. Sizes are checked against
the file before anything is allocated. Tensors come out as numpy arrays, keyed as in the file
and in the file's order, so the exporter and the importer need no torch for safetensors/npz.

The importer (`import_checkpoint`) maps a foreign checkpoint (torchvision's, timm's) onto a
spec's state-dict keys structurally: tensors are paired in module order, shapes must agree,
the last key component (weight, bias, running_mean, ...) must agree, module boundaries must
coincide and same-shaped sibling modules must not be crossed against their names; tensors a module
holds beside its submodules (which state_dict lists first) are paired by name within their module;
anything else is refused with the first divergence shown side by side.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ArchspecError, Collector, SpecError, did_you_mean

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .analyze import Report

# safetensors' own bound on the JSON header (safetensors/src/tensor.rs, MAX_HEADER_SIZE)
MAX_HEADER_BYTES = 100_000_000
# safetensors dtype -> numpy dtype string (https://github.com/huggingface/safetensors, format spec)
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
              "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}
NBT = "num_batches_tracked"  # BatchNorm's step counter: a buffer with no counterpart in many checkpoints
_UNWRAP = ("state_dict", "model", "model_state_dict", "module")  # training-loop containers around a state dict


class WeightsError(ArchspecError):
    """A weights file is unreadable, unsafe, or does not fit the spec; the message says which tensor."""


# -- reading ---------------------------------------------------------------------------------

def read_weights(path: str | os.PathLike, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors`, PyTorch (`.pt`/`.pth`, weights_only) or `.npz` file, as
    numpy arrays in the file's order. The format is told from the content, not the name. Only a
    regular file is read; with `max_bytes`, one larger than that — on disk or unpacked, as its zip
    directory claims — is refused before anything is allocated."""
    from .files import PathError, TooLarge, regular_file

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


# -- writing ---------------------------------------------------------------------------------

def write_weights(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Writes `.safetensors` atomically; values may be numpy arrays or torch tensors."""
    import numpy as np

    try:
        from safetensors.numpy import save
    except ImportError:
        raise WeightsError("writing .safetensors needs the safetensors package: pip install safetensors") from None
    from .files import atomic_write

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


# -- fitting a module ------------------------------------------------------------------------

def as_state(weights: str | os.PathLike | Mapping[str, Any],
             max_bytes: int | None = None) -> tuple[dict[str, np.ndarray], str]:
    """A path or a mapping of arrays/tensors -> (numpy state, how to name it in messages)."""
    if isinstance(weights, Mapping):
        import numpy as np

        bad = [k for k, v in weights.items() if not isinstance(k, str) or not hasattr(v, "shape")]
        if bad:
            raise WeightsError(f"the state dict has entries that are not tensors: {', '.join(map(str, bad[:10]))}")
        return {k: v if isinstance(v, np.ndarray) else tensor_to_numpy(v) for k, v in weights.items()}, "the state dict"
    return read_weights(weights, max_bytes), os.fspath(weights)


def fit_problems(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any]) -> list[str]:
    """Missing, unexpected and mis-shaped tensors, each named; then NaN/inf ones."""
    import numpy as np

    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shaped = [f"{k} (file {tuple(state[k].shape)}, spec {tuple(expected[k])})" for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: " + ", ".join(missing))
    if extra:
        problems.append(f"unexpected {len(extra)}: " + ", ".join(extra))
    if shaped:
        problems.append(f"wrong shape {len(shaped)}: " + ", ".join(shaped))
    if not problems:
        non_finite = [k for k, v in state.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
        if non_finite:
            problems.append(f"NaN or infinite values in {len(non_finite)}: " + ", ".join(non_finite))
    return problems


def load_into(module: torch.nn.Module, weights: str | os.PathLike | Mapping[str, Any]) -> None:
    """Loads weights into a built module strictly: every key present, none extra, shapes equal,
    values finite; otherwise a WeightsError naming every offending tensor."""
    import numpy as np
    import torch

    current = module.state_dict()
    # float64, the widest dtype accepted, plus 1 MiB of archive overhead
    state, where = as_state(weights, sum(t.numel() * 8 for t in current.values()) + (1 << 20))
    problems = fit_problems({k: tuple(v.shape) for k, v in current.items()}, state)
    spec = getattr(module, "spec_name", "?")
    if problems:
        raise WeightsError(f"weights {where} do not fit the module built from spec '{spec}': " + "; ".join(problems))
    typed = [f"{k} ({state[k].dtype}, spec {str(v.dtype).removeprefix('torch.')})" for k, v in current.items()
             if np.iscomplexobj(state[k]) or np.issubdtype(state[k].dtype, np.floating) != v.is_floating_point()]
    if typed:  # loading would cast them silently: complex to real, integers to floats
        raise WeightsError(f"weights {where} have tensors of the wrong type: {', '.join(typed)}")
    overflow = [k for k, v in current.items() if v.is_floating_point() and state[k].size
                and float(np.abs(state[k]).max()) > torch.finfo(v.dtype).max]
    if overflow:
        kind = current[overflow[0]].dtype
        raise WeightsError(f"weights {where} hold values beyond {str(kind).removeprefix('torch.')}'s range "
                           f"(+-{torch.finfo(kind).max:.3g}) in: {', '.join(overflow)}")
    module.load_state_dict({k: torch.from_numpy(v.copy()).to(current[k].dtype) for k, v in state.items()}, strict=True)


def sidecar_note(path: Path, spec_name: str, spec_sha256: str) -> list[str]:
    """`archspec build -o` and `save_weights` record the spec's hash; say so when it differs."""
    meta = read_metadata(path)
    if meta:
        meta = {"spec": meta.get("archspec.spec"), "spec_sha256": meta.get("archspec.spec_sha256")}
    else:
        from .files import PathError, read_bytes

        try:
            meta = json.loads(read_bytes(Path(str(path) + ".json"), 1 << 16))
        except (PathError, OSError, ValueError, RecursionError):
            return []
    if not isinstance(meta, dict) or meta.get("spec_sha256") in (None, spec_sha256):
        return []
    return [f"{path.name} was saved for spec '{meta.get('spec')}' with a different sha256 "
            f"({str(meta.get('spec_sha256'))[:12]}, this spec {spec_sha256[:12]}); tensor names and "
            "shapes match, so it was used"]


@dataclass(frozen=True)
class WeightsMatch:
    """A weights file that fits a spec (`archspec summary --weights`): what it holds, as stored."""

    path: str
    tensors: int  # = the spec's state-dict entries, parameters and buffers
    values: int
    bytes: int  # the tensors' bytes in the file's dtypes (the file itself adds headers)
    dtypes: tuple[tuple[str, int], ...]  # (dtype, tensors of it), most common first
    notes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "matches": True, "tensors": self.tensors, "values": self.values,
                "bytes": self.bytes, "dtypes": dict(self.dtypes), "notes": list(self.notes)}


def match_weights(report: Report, path: str | os.PathLike) -> WeightsMatch:
    """Checks a weights file against the spec without torch for .safetensors/.npz (names, shapes,
    types, finite values, as `export --weights` does); a WeightsError names every misfit."""
    from collections import Counter

    try:
        import numpy  # noqa: F401  (reading any weights file needs it)
    except ImportError:
        raise WeightsError("reading a weights file needs numpy: pip install 'archspec-compiler[export]'") from None
    from .exporter.params import check_weights, expected_tensors

    expected = expected_tensors(report)
    state = read_weights(path, sum(8 * _numel(shape) for shape, _ in expected.values()) + (1 << 20))
    name = os.fspath(path)
    try:
        check_weights(state, expected, report.graph.name, name)
    except WeightsError as exc:
        if set(state) - set(expected) and set(expected) - set(state):
            raise WeightsError(f"{exc}; names differ from the spec's: for a torchvision or timm checkpoint, "
                               f"map it with `archspec weights import SPEC {Path(name).name} -o w.safetensors`") from None
        raise
    dtypes = Counter(str(v.dtype) for v in state.values())
    return WeightsMatch(name, len(state), sum(int(v.size) for v in state.values()),
                        sum(int(v.nbytes) for v in state.values()), tuple(dtypes.most_common()),
                        tuple(sidecar_note(Path(name), report.graph.name, report.graph.sha256)))


# -- importing a foreign checkpoint ----------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    key: str
    shape: tuple[int, ...]

    @property
    def module(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def role(self) -> str:  # weight, bias, running_mean, ... (the name that must agree)
        return self.key.rpartition(".")[2]


@dataclass(frozen=True)
class ImportMap:
    """A user's correspondence (`--map FILE.yaml`): `map` pairs spec keys or module prefixes with
    checkpoint ones (tensors under a prefix pair by the rest of their key); `ignore` lists
    checkpoint keys or glob patterns to drop (an auxiliary head the spec does not have)."""

    pairs: tuple[tuple[str, str], ...] = ()
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportResult:
    tensors: dict[str, Any]  # spec key -> numpy array, in the spec's order
    pairs: tuple[tuple[str, str], ...]  # (spec key, checkpoint key), num_batches_tracked included
    notes: tuple[str, ...]


def spec_entries(report: Report) -> list[Entry]:
    """The spec's state-dict keys and shapes in module order (built on the meta device: no memory)."""
    from .lower import build_module

    return [Entry(k, tuple(v.shape)) for k, v in build_module(report, device="meta").state_dict().items()]


def import_checkpoint(report: Report, checkpoint: str | os.PathLike, mapping: ImportMap | None = None) -> ImportResult:
    """Maps a checkpoint onto the spec; refuses (WeightsError) anything it would have to guess."""
    import numpy as np

    name = os.fspath(checkpoint)
    state = read_weights(name)
    mapping = mapping or ImportMap()
    ordered = not _is_safetensors(name)
    spec = spec_entries(report)
    shapes = {e.key: e.shape for e in spec}
    ckpt = [Entry(k, tuple(v.shape)) for k, v in state.items()]
    notes = []

    pairs: dict[str, str] = {}
    for spec_key, ck_key in mapping.pairs:
        pairs.update(_explicit(spec_key, ck_key, shapes, state, name))
    taken = set(pairs.values())
    ignored = [e.key for e in ckpt if any(fnmatch.fnmatchcase(e.key, p) or e.key == p or e.key.startswith(p + ".")
                                          for p in mapping.ignore)]
    if ignored:
        notes.append(f"ignored {len(ignored)} checkpoint tensors as the map says ({_brief(ignored)})")
    left_spec = [e for e in spec if e.key not in pairs and e.role != NBT]
    left_ckpt = [e for e in ckpt if e.key not in taken and e.key not in ignored and e.role != NBT]
    if {e.key: e.shape for e in left_spec} == {e.key: e.shape for e in left_ckpt}:
        rank = {e.key: i for i, e in enumerate(left_spec)}  # the checkpoint already has the spec's keys
        left_ckpt.sort(key=lambda e: rank[e.key])
    elif not ordered:
        left_spec.sort(key=lambda e: _natural(e.key))
        left_ckpt.sort(key=lambda e: _natural(e.key))
        notes.append("a .safetensors file does not keep module order: both sides were paired in natural key order")
    divergence = _first_divergence(left_spec, left_ckpt)
    held = None if divergence is None else _held_directly(left_spec, left_ckpt)
    if held is not None:
        pairs.update(held[0])
        moved = held[1]
        notes.append(f"{len(moved)} tensors held directly by a module with submodules (PyTorch lists them before the "
                     f"submodules, not where they are used) were paired by name within their module: {_brief(moved, 4)}")
    elif divergence is not None:
        index, why = divergence
        raise WeightsError(_diagnostic(report.graph.name, name, left_spec, left_ckpt, index, why, ordered))
    else:
        pairs.update({s.key: c.key for s, c in zip(left_spec, left_ckpt)})

    # num_batches_tracked: from the checkpoint module the BatchNorm was paired with, else 0
    zeroed = []
    for e in spec:
        if e.role != NBT or e.key in pairs:
            continue
        partner = pairs.get(f"{e.module}.running_mean", "").rpartition(".")[0]
        if partner and f"{partner}.{NBT}" in state:
            pairs[e.key] = f"{partner}.{NBT}"
        else:
            zeroed.append(e.key)
    if zeroed:
        notes.append(f"{len(zeroed)} num_batches_tracked counters are not in the checkpoint; set to 0 "
                     "(they only matter for BatchNorm with momentum=None)")

    tensors, non_finite = {}, []
    for e in spec:
        if e.key in zeroed:
            tensors[e.key] = np.zeros((), dtype=np.int64)
            continue
        value = state[pairs[e.key]]
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            non_finite.append(pairs[e.key])
        target = np.int64 if e.role == NBT else np.float32
        tensors[e.key] = value.astype(target, copy=False).reshape(e.shape)
    if non_finite:
        raise WeightsError(f"{name} holds NaN or infinite values in {len(non_finite)} tensors: {_brief(non_finite)}")
    leftover_nbt = [e.key for e in ckpt if e.role == NBT and e.key not in pairs.values() and e.key not in ignored]
    if leftover_nbt and len(leftover_nbt) != sum(1 for e in ckpt if e.role == NBT):
        notes.append(f"dropped {len(leftover_nbt)} num_batches_tracked counters of modules the spec has no "
                     f"BatchNorm for ({_brief(leftover_nbt)})")
    order = {e.key: i for i, e in enumerate(spec)}
    return ImportResult(tensors, tuple(sorted(pairs.items(), key=lambda p: order[p[0]])), tuple(notes))


def _is_safetensors(name: str) -> bool:
    with open(name, "rb") as fh:
        head = fh.read(9)
    return len(head) >= 8 and not head.startswith(b"PK") and not _is_pickle(head)


def _is_pickle(head: bytes) -> bool:
    """PROTO 2..5 (pickletools): how torch.save's legacy format and pickles of protocol 2 and later
    start. A safetensors file whose header length is 0x..0280 bytes starts alike; its ninth byte,
    the header's opening brace, tells them apart."""
    return head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and head[8:9] != b"{"


def _explicit(spec_key: str, ck_key: str, shapes: Mapping[str, tuple[int, ...]], state: Mapping[str, Any],
              name: str) -> dict[str, str]:
    """One `map` entry: a key pair, or a prefix pair expanded over the spec's keys under it."""
    if spec_key in shapes:
        found = {spec_key: ck_key}
    else:
        found = {k: ck_key + k[len(spec_key):] for k in shapes if k.startswith(spec_key + ".")}
        if not found:
            prefixes = {k.rsplit(".", n)[0] for k in shapes for n in range(k.count(".") + 1)}
            raise WeightsError(f"the map names spec key '{spec_key}', which the spec does not have; "
                               f"{did_you_mean(spec_key, prefixes) or 'see archspec summary for its keys'}")
    for s, c in found.items():
        if c not in state:
            if s.endswith(NBT):
                continue
            raise WeightsError(f"the map pairs '{s}' with '{c}', which {name} does not have; "
                               f"{did_you_mean(c, state) or ''}".rstrip("; "))
        if tuple(state[c].shape) != shapes[s]:
            raise WeightsError(f"the map pairs '{s}' {shapes[s]} with '{c}' {tuple(state[c].shape)}: shapes differ")
    return {s: c for s, c in found.items() if c in state}


def _first_divergence(spec: list[Entry], ckpt: list[Entry]) -> tuple[int, str] | None:
    """Where pairing in order stops being certain: a shape or role differs, a module boundary
    falls differently, the names say two same-shaped modules are swapped, or one side runs out."""
    spec_tensors, ckpt_tensors = _module_tensors(spec), _module_tensors(ckpt)
    for i, (s, c) in enumerate(zip(spec, ckpt)):
        if s.shape != c.shape:
            hint = " (the checkpoint's is transposed)" if s.shape == c.shape[::-1] and len(s.shape) > 1 else ""
            return i, f"shapes differ: {_shape(s.shape)} in the spec, {_shape(c.shape)} in the checkpoint{hint}"
        if s.role != c.role:
            return i, f"same shape, but '{s.role}' in the spec and '{c.role}' in the checkpoint: the order is ambiguous"
        if i and (s.module == spec[i - 1].module) != (c.module == ckpt[i - 1].module):
            return i, "a module boundary falls differently: the spec's and the checkpoint's modules do not correspond"
        if not i or s.module != spec[i - 1].module:
            swapped = _swapped(s.module, c.module, spec_tensors, ckpt_tensors)
            if swapped:
                return i, swapped
    if len(spec) != len(ckpt):
        n = min(len(spec), len(ckpt))
        more = "checkpoint" if len(ckpt) > len(spec) else "spec"
        return n, (f"the spec has {len(spec)} tensors to fill, the checkpoint {len(ckpt)} "
                   f"({abs(len(ckpt) - len(spec))} more in the {more})")
    return None


def _held_directly(spec: list[Entry], ckpt: list[Entry]) -> tuple[dict[str, str], list[str]] | None:
    """Pairs for a checkpoint whose only disorder is tensors held directly by a module that also has
    submodules (torchvision's `class_token`, `encoder.pos_embedding`, ConvNeXt's `layer_scale`):
    `state_dict` lists a module's own tensors before its children's (torch.nn.Module._save_to_state_dict),
    wherever they are used, while the spec holds each in a layer of its own, where it is used, named
    alike (`class_token.token`, `layer_scale.scale`). Without those, the rest must pair in order;
    each of those is then paired with the one spec tensor of its shape whose module path names it,
    inside the spec module its checkpoint module's other tensors were paired with. Returns all pairs
    and those so paired ('checkpoint key -> spec key'); None when anything is left ambiguous."""
    parents = {e.module.rsplit(".", k)[0] for e in ckpt for k in range(1, e.module.count(".") + 1)}
    parents |= {""} if any(e.module for e in ckpt) else set()
    held = [c for c in ckpt if c.module in parents
            and any(c.role in s.module.split(".") and s.shape == c.shape for s in spec)]
    names = {c.role for c in held}
    named = [s for s in spec if names & set(s.module.split("."))]
    if not held or len(named) != len(held):
        return None
    rest_spec, rest_ckpt = [s for s in spec if s not in named], [c for c in ckpt if c not in held]
    if _first_divergence(rest_spec, rest_ckpt) is not None:
        return None
    pairs = {s.key: c.key for s, c in zip(rest_spec, rest_ckpt)}
    taken: set[str] = set()
    for c in held:
        inside = [s for s, k in pairs.items() if k.startswith(c.module + ".")] if c.module else list(pairs)
        prefix = ".".join(os.path.commonprefix([k.split(".")[:-1] for k in inside])) if inside else ""
        found = [s for s in named if s.shape == c.shape and s.key not in taken
                 and (not prefix or s.key.startswith(prefix + ".")) and c.role in s.module[len(prefix):].split(".")]
        if len(found) != 1:
            return None
        pairs[found[0].key] = c.key
        taken.add(found[0].key)
    return pairs, [f"{c} -> {s}" for s, c in pairs.items() if s in taken]


def _module_tensors(entries: list[Entry]) -> dict[str, tuple[tuple[str, tuple[int, ...]], ...]]:
    """module -> its (role, shape) pairs: what makes two modules interchangeable by shape."""
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for e in entries:
        out.setdefault(e.module, []).append((e.role, e.shape))
    return {k: tuple(v) for k, v in out.items()}


def _swapped(spec_module: str, ckpt_module: str, spec_tensors: Mapping[str, tuple], ckpt_tensors: Mapping[str, tuple]
             ) -> str | None:
    """Order pairs spec `a.conv1` with checkpoint `b.conv2`, yet the checkpoint has a `b.conv1` of the
    same shapes (or the spec an `a.conv2`): the names contradict the order, so pairing would be a
    guess (siblings declared in another order than they run). Numeric names are positions in a
    Sequential, not names, and say nothing."""
    s_parent, _, s_leaf = spec_module.rpartition(".")
    c_parent, _, c_leaf = ckpt_module.rpartition(".")
    if s_leaf == c_leaf or not s_leaf or not c_leaf or s_leaf.isdigit() or c_leaf.isdigit():
        return None
    in_ckpt = f"{c_parent}.{s_leaf}" if c_parent else s_leaf
    in_spec = f"{s_parent}.{c_leaf}" if s_parent else c_leaf
    if ckpt_tensors.get(in_ckpt) == spec_tensors[spec_module]:
        namesake = f"the checkpoint's '{in_ckpt}'"
    elif spec_tensors.get(in_spec) == ckpt_tensors[ckpt_module]:
        namesake = f"the spec's '{in_spec}'"
    else:
        return None
    return (f"same shapes, but the names disagree: the order pairs the spec's '{spec_module}' with the checkpoint's "
            f"'{ckpt_module}', and {namesake} holds tensors of the same shapes: same-shaped modules in another "
            "order, refused rather than paired by position")


def _diagnostic(spec_name: str, name: str, spec: list[Entry], ckpt: list[Entry], index: int, why: str,
                ordered: bool) -> str:
    rows = []
    for i in range(max(0, index - 3), min(max(len(spec), len(ckpt)), index + 3)):
        s = spec[i] if i < len(spec) else None
        c = ckpt[i] if i < len(ckpt) else None
        rows.append((">" if i == index else " ", str(i), s.key if s else "-", _shape(s.shape) if s else "",
                     c.key if c else "-", _shape(c.shape) if c else ""))
    w = [max(len(r[k]) for r in rows + [("", "#", "spec key", "shape", "checkpoint key", "shape")]) for k in range(6)]
    head = (" ", "#", "spec key", "shape", "checkpoint key", "shape")
    lines = [f"cannot map {name} onto spec '{spec_name}': at tensor #{index} (num_batches_tracked aside) {why}",
             *(f"  {r[0]} {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}} | {r[4]:<{w[4]}}  {r[5]}" for r in [head] + rows)]
    hint = ("hint: the checkpoint belongs to a different architecture, or its modules come in another order; "
            "state the correspondence with --map FILE.yaml (map: {spec.prefix: checkpoint.prefix}, ignore: [...])")
    if not ordered:
        hint += "; or import the PyTorch (.pth) file, which keeps module order"
    return "\n".join([*lines, hint])


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _natural(key: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", key) if p]


def _brief(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def read_map(path: str | os.PathLike) -> ImportMap:
    """Reads `--map FILE.yaml` with the spec loader's hardened YAML; mistakes are located errors."""
    from .load import load_file

    doc = load_file(path)
    c = Collector()
    data = doc.data
    if not isinstance(data, dict):
        c.add("AS107", "a map file is a mapping with 'map' and/or 'ignore'", doc.loc(()))
        raise SpecError(c.diagnostics)
    for key in data:
        if key not in ("map", "ignore"):
            c.add("AS101", f"unknown key '{key}'", doc.key_loc((key,)), hint=did_you_mean(key, ("map", "ignore")))
    pairs = data.get("map") or {}
    if not isinstance(pairs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs.items()):
        c.add("AS103", "'map' pairs spec keys with checkpoint keys: {spec.key: checkpoint.key}", doc.loc(("map",)))
    ignore = data.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(v, str) for v in ignore):
        c.add("AS103", "'ignore' is a list of checkpoint keys or patterns such as 'AuxLogits.*'", doc.loc(("ignore",)))
    if c.diagnostics:
        raise SpecError(c.diagnostics)
    return ImportMap(tuple(pairs.items()), tuple(ignore))


__all__ = ["ImportMap", "ImportResult", "WeightsError", "WeightsMatch", "import_checkpoint", "load_into",
           "match_weights", "read_map", "read_weights", "save_weights", "write_weights"]
