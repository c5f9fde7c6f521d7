"""Whether a state dict fits a spec: every key present, none extra, shapes equal, values finite.
Loading into a built module (`load_into`) and checking a file against the spec without torch
(`match_weights`, for `archspec summary --weights`) both say so the same way, every misfit named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .formats import WeightsError, _numel, read_metadata, read_weights, tensor_to_numpy

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..analyze import Report


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
    from ..exporter.params import check_weights, expected_tensors

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
