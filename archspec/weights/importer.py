"""The importer: a foreign checkpoint (torchvision's, timm's) mapped onto a spec's state-dict keys
structurally. Tensors are paired in module order, shapes must agree, the last key component
(weight, bias, running_mean, ...) must agree, module boundaries must coincide and same-shaped
sibling modules must not be crossed against their names; tensors a module holds beside its
submodules (which state_dict lists first) are paired by name within their module; anything else
is refused with the first divergence shown side by side.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import Collector, SpecError, did_you_mean
from .formats import WeightsError, _is_safetensors, read_weights

if TYPE_CHECKING:
    from ..analyze import Report

NBT = "num_batches_tracked"  # BatchNorm's step counter: a buffer with no counterpart in many checkpoints


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
    from ..lower import build_module

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
    from ..load import load_file

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
