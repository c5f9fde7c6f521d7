"""Whether a state dict fits a spec: every key present, none extra, shapes equal, values finite.
What the spec holds comes from its layer kinds' `tensors`, without torch (`expected_tensors`), so
export and `archspec summary --weights` (`match_weights`) check a file the way loading into a
built module (`load_into`) does, every misfit named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..layers import REGISTRY
from .formats import WeightsError, _numel, read_metadata, read_weights, tensor_to_numpy

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..analyze import Report
    from ..layers import TensorType
    from ..resolve.ir import Node


def node_types(report: Report, node: Node) -> tuple[tuple[TensorType, ...], tuple[TensorType, ...]]:
    """A layer's input and output types, which its kind's `tensors` and `initial` rules read."""
    return tuple(report.types[v] for v in node.inputs), tuple(report.types[v] for v in node.outputs)


def expected_tensors(report: Report) -> dict[str, tuple[tuple[int, ...], str]]:
    """State-dict name -> (shape, dtype) of every tensor the spec's module holds (its kinds'
    `tensors`, named as the lowered module's state dict)."""
    out = {}
    for node in report.graph.nodes:
        for local, spec in REGISTRY[node.kind].tensors_n(node.params, *node_types(report, node)).items():
            out[f"{node.scope}.{local}"] = spec
    return out


def file_limit(shapes: Iterable[tuple[int, ...]]) -> int:
    """The most bytes a weights file for tensors of these shapes may hold: float64, the widest dtype
    accepted, plus 1 MiB of archive overhead."""
    return sum(8 * _numel(shape) for shape in shapes) + (1 << 20)


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


def check_weights(state: Mapping[str, Any], expected: Mapping[str, tuple[tuple[int, ...], str]], spec: str,
                  where: str) -> dict[str, Any]:
    """Strict, as `load_into`: every key present, none extra, shapes equal, values finite, floats
    where floats belong and within float32's range; otherwise a WeightsError naming every offending
    tensor. Returns contiguous arrays of the expected dtypes."""
    import numpy as np

    problems = fit_problems({k: shape for k, (shape, _) in expected.items()}, state)
    if problems:
        raise WeightsError(f"weights {where} do not fit the module built from spec '{spec}': " + "; ".join(problems))
    typed = [f"{k} ({state[k].dtype}, spec {dtype})" for k, (_, dtype) in expected.items()
             if np.iscomplexobj(state[k]) or np.issubdtype(state[k].dtype, np.floating) != (dtype != "int64")]
    if typed:  # a cast would be silent: complex to real, integers to floats
        raise WeightsError(f"weights {where} have tensors of the wrong type: {', '.join(typed)}")
    limit = float(np.finfo(np.float32).max)
    overflow = [k for k, (_, dtype) in expected.items()
                if dtype == "float32" and state[k].size and float(np.abs(state[k]).max()) > limit]
    if overflow:
        raise WeightsError(f"weights {where} hold values beyond float32's range (+-{limit:.3g}) in: {', '.join(overflow)}")
    return {k: np.ascontiguousarray(state[k], dtype=expected[k][1]) for k in expected}


def load_into(module: torch.nn.Module, weights: str | os.PathLike | Mapping[str, Any]) -> None:
    """Loads weights into a built module strictly: every key present, none extra, shapes equal,
    values finite; otherwise a WeightsError naming every offending tensor."""
    import numpy as np
    import torch

    current = module.state_dict()
    state, where = as_state(weights, file_limit(tuple(v.shape) for v in current.values()))
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
        from ..files import PathError, read_bytes

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
    expected = expected_tensors(report)
    state = read_weights(path, file_limit(shape for shape, _ in expected.values()))
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
