"""Stage 3, resolve: expand blocks, repeats and expressions into an immutable graph.

The graph is a tree of three node types: `Layer` (one registered kind with validated
parameters), `Sequence` (children in order) and `Parallel` (branches fed the same input,
merged by concat or add). Every node carries its name, so module paths such as
`stage2.block0.conv1` come straight from the spec, and its source location.
The number of layers is bounded while expanding: a repeat is checked against the node
budget after its first iteration, before the rest is unrolled.
"""

from __future__ import annotations

import hashlib
import keyword
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Union

from pydantic import ValidationError

from .errors import Collector, Loc, call_note, closest, did_you_mean
from .expr import ExprError, Steps, evaluate, is_identifier, looks_like_expression
from .layers import REGISTRY, LayerParams
from .limits import CEILINGS, Limits
from .load import Document, Path, format_path
from .schema import BlockDef, Dim, InputDecl, Spec, report_validation, validate_spec

CallChain = tuple[tuple[str, Loc], ...]  # ("in block 'bottleneck' invoked here", loc), innermost first


@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    kind: str
    params: LayerParams
    loc: Loc
    yaml_path: Path  # where the layer is written (inside its block definition, if any)
    calls: CallChain = ()

    @property
    def source(self) -> str:
        return format_path(self.yaml_path)


@dataclass(frozen=True, slots=True)
class Sequence:
    name: str
    children: tuple[Node, ...]
    loc: Loc
    label: str = "sequence"  # block name, "group", "branch", "repeat"
    calls: CallChain = ()


@dataclass(frozen=True, slots=True)
class Parallel:
    name: str
    branches: tuple[Sequence, ...]
    merge: str  # a key of layers.MERGES
    loc: Loc
    label: str = "parallel"  # "concat", "add" or "residual"
    calls: CallChain = ()
    inline: str | None = None  # the branch whose layers are direct children of this node (a residual body)
    then: tuple[Node, ...] = ()  # applied after the merge, also direct children (the post-add relu)


Node = Union[Layer, Sequence, Parallel]


@dataclass(frozen=True)
class Input:
    name: str
    dims: tuple[Dim, ...]
    dtype: str
    loc: Loc

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.dims)


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    input: Input
    root: Sequence
    expanded_items: int
    sha256: str
    spec: Spec = field(repr=False)
    doc: Document = field(repr=False)

    @property
    def output_name(self) -> str:
        return self.spec.output


def resolve(doc: Document, limits: Limits | None = None, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Validates and expands a loaded document; raises SpecError with every problem found."""
    spec = validate_spec(doc)
    return _Resolver(doc, spec, limits or Limits()).run(input_shape)


class _Budget(Exception):
    """Aborts expansion once the node budget is exhausted (already reported)."""


# Names a module cannot take: torch.nn.Module/Sequential attributes, and those of archspec's own
# containers (archspec.nn). tests/test_lower.py checks this list against the installed torch.
RESERVED_NAMES = frozenset("""
    T_destination add_module append apply bfloat16 buffers call_super_init children compile cpu cuda
    double dump_patches eval extend extra_repr float forward get_buffer get_extra_state get_parameter
    get_submodule half insert ipu load_state_dict modules mtia named_buffers named_children
    named_modules named_parameters parameters pop register_backward_hook register_buffer
    register_forward_hook register_forward_pre_hook register_full_backward_hook
    register_full_backward_pre_hook register_load_state_dict_post_hook register_load_state_dict_pre_hook
    register_module register_parameter register_state_dict_post_hook register_state_dict_pre_hook
    requires_grad_ set_extra_state set_submodule share_memory state_dict to to_empty train training
    type xpu zero_grad
    spec_name input_name spec_sha256 routes merge then
""".split())


def name_problem(name: str) -> str:
    """Why `name` cannot name a layer, branch or block (it becomes a torch.nn.Module attribute and
    part of ONNX node names, and the dynamo exporter writes it into generated Python), or ''."""
    if name in RESERVED_NAMES:
        return "PyTorch modules use it"
    if name.startswith("_"):
        return "names starting with '_' are PyTorch's internals (_modules, __init__, ...)"
    if keyword.iskeyword(name):
        return "it is a Python keyword"
    return ""


class _Namer:
    """Names the children of one container: user names as given, others `{kind}{n}`."""

    def __init__(self) -> None:
        self.taken: dict[str, Loc] = {}
        self.counts: dict[str, int] = {}

    def auto(self, base: str) -> str:
        n = self.counts.get(base, 0)
        while f"{base}{n}" in self.taken:
            n += 1
        self.counts[base] = n + 1
        return f"{base}{n}"

    def claim(self, name: str, loc: Loc, out: Collector, path: Path) -> None:
        problem = name_problem(name)
        if problem:
            out.add("AS107", f"'{name}' cannot name a layer: {problem}", loc, format_path(path),
                    f"choose another name, e.g. '{name.strip('_') or 'layer'}_'")
        elif name in self.taken:
            out.add("AS110", f"duplicate layer name '{name}' in this sequence", loc, format_path(path),
                    "names become module paths and must be unique among siblings; use `name:` on a "
                    "repeat to number its iterations", (("first used here", self.taken[name]),))
        else:
            self.taken[name] = loc


_STRUCTURAL = ("repeat", "concat", "add", "residual", "group")
_SUBKEYS = {"residual": ("body", "shortcut", "then")}  # keys that belong under a structural kind


class _Resolver:
    def __init__(self, doc: Document, spec: Spec, limits: Limits):
        self.doc, self.spec, self.limits = doc, spec, limits
        self.out = Collector()
        self.expanded = 0  # items expanded so far (layers, containers, failed items), against the node limit
        self.failures = 0  # bad values seen, counted even when the Collector folds a repeat's duplicates
        self.nesting = 0  # items open around the current one
        self.steps = Steps(limits.max_expr_steps)
        self.globals: dict[str, Any] = {}

    # -- entry -----------------------------------------------------------------------------
    def run(self, input_shape: tuple[int, ...] | None) -> Graph:
        for name, value in self.spec.vars.items():
            failures = self.failures
            resolved = self.value(value, self.globals, ("vars", name), ())
            if self.failures == failures:  # a failed variable stays unknown rather than becoming None
                self.globals[name] = resolved
        (in_name, decl), = self.spec.input.items()
        inp = self.make_input(in_name, decl, input_shape)
        if self.spec.output == in_name:  # ONNX names every tensor once
            self.out.add("AS110", f"the output is named '{in_name}' like the input", self.doc.loc(("output",)),
                         "output", hint="give the output its own name, e.g. `output: logits`")
        try:
            children = self.items(self.spec.network, ("network",), self.globals, (), _Namer(), ())
        except _Budget:
            children = []
        self.out.raise_if_any()
        root = Sequence(self.spec.name, tuple(children), self.doc.loc(("network",)), "model")
        digest = hashlib.sha256(self.doc.text.encode("utf-8")).hexdigest()
        return Graph(self.spec.name, self.spec.description, inp, root, self.expanded, digest, self.spec, self.doc)

    def make_input(self, name: str, decl: InputDecl, override: tuple[int, ...] | None) -> Input:
        dims = decl.shape
        loc = self.doc.loc(("input", name))
        if override is not None:
            if len(override) != len(dims):
                self.out.add("AS203", f"--input has {len(override)} axes but input '{name}' has {len(dims)}", loc)
                self.out.raise_if_any()
            dims = tuple(Dim(size, d.name) for size, d in zip(override, dims))
        return Input(name, dims, decl.dtype, loc)

    # -- values ----------------------------------------------------------------------------
    def value(self, raw: Any, env: Mapping[str, Any], path: Path, calls: CallChain) -> Any:
        """Substitutes parameters and evaluates arithmetic inside a (nested) YAML value."""
        if isinstance(raw, dict):
            return {k: self.value(v, env, path + (k,), calls) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v, env, path + (i,), calls) for i, v in enumerate(raw)]
        if not isinstance(raw, str):
            return raw
        text = raw.strip()
        if is_identifier(text):
            return env.get(text, raw)  # a bare word that is not a parameter is a literal option (`same`)
        if not looks_like_expression(text):
            return raw
        try:
            return evaluate(text, env, self.steps)
        except ExprError as exc:
            self.failures += 1
            self.out.add(exc.code, f"{exc} in {raw!r}", self.doc.loc(path), format_path(path), exc.hint, calls)
            if exc.code == "AS002":
                raise _Budget from None
            return None

    # -- sequences and items -----------------------------------------------------------------
    def items(self, raw: Any, path: Path, env: Mapping[str, Any], calls: CallChain, namer: _Namer,
              stack: tuple[str, ...]) -> list[Node]:
        if isinstance(raw, dict) or isinstance(raw, str):
            raw, single = [raw], True
        else:
            single = False
        if not isinstance(raw, list):
            self.out.add("AS103", f"expected a list of layers, got {type(raw).__name__}", self.doc.loc(path),
                         format_path(path), related=calls)
            return []
        nodes: list[Node] = []
        for i, item in enumerate(raw):
            nodes.extend(self.item(item, path if single else path + (i,), env, calls, namer, stack))
        return nodes

    def item(self, raw: Any, path: Path, env: Mapping[str, Any], calls: CallChain, namer: _Namer,
             stack: tuple[str, ...]) -> list[Node]:
        """One item, with its nesting bounded: every later stage walks the tree recursively."""
        if self.nesting >= self.limits.max_nesting:
            self.out.add("AS002", f"items nested more than {self.limits.max_nesting} deep (groups, branches and "
                         "blocks inside each other)", self.doc.loc(path), format_path(path),
                         f"raise it with {Limits.flag('max_nesting')} (at most {CEILINGS['max_nesting']}) "
                         "if this spec is trusted", calls)
            raise _Budget
        self.nesting += 1
        try:
            return self._item(raw, path, env, calls, namer, stack)
        finally:
            self.nesting -= 1

    def _item(self, raw: Any, path: Path, env: Mapping[str, Any], calls: CallChain, namer: _Namer,
              stack: tuple[str, ...]) -> list[Node]:
        loc = self.doc.loc(path)
        self.count(loc)  # every item counts, containers and failures too, so no expansion is unbounded
        if isinstance(raw, str):
            raw = {raw: None}
            key_path = path
        elif isinstance(raw, dict):
            key_path = None
        else:
            self.out.add("AS103", f"expected a layer (a kind name or a mapping), got {type(raw).__name__}",
                         loc, format_path(path), related=calls)
            return []
        user_name = raw.get("name")
        if user_name is not None and not (isinstance(user_name, str) and is_identifier(user_name)):
            self.out.add("AS107", f"a name must be letters, digits and _, got {user_name!r}",
                         self.doc.loc(path + ("name",)), format_path(path + ("name",)), related=calls)
            user_name = None
        if "when" in raw:  # a condition over parameters: `when: "stride != 1"` (an optional projection)
            condition = self.value(raw["when"], env, path + ("when",), calls)
            if not isinstance(condition, bool):
                if condition is not None:
                    self.out.add("AS103", f"`when` needs a condition that is true or false, got {condition!r}",
                                 self.doc.loc(path + ("when",)), format_path(path + ("when",)), related=calls)
                return []
            if not condition:
                return []
            raw = {k: v for k, v in raw.items() if k != "when"}
        if "repeat" in raw:
            return self.repeat(raw, path, env, calls, namer, stack)
        kinds = [k for k in raw if k != "name"]
        if len(kinds) != 1:
            what = "no layer kind" if not kinds else f"several layer kinds ({', '.join(map(str, kinds))})"
            hint = "write each layer as its own list item"
            for outer in kinds:  # `then:` written level with `residual:` instead of under it
                strays = [k for k in kinds if k in _SUBKEYS.get(outer, ())]
                if strays:
                    hint = f"indent {', '.join(f'`{k}`' for k in strays)} under `{outer}`: it is a key of {outer}"
            self.out.add("AS107", f"an item must name exactly one layer kind or block, found {what}", loc,
                         format_path(path), hint, calls)
            return []
        kind = kinds[0]
        kpath = key_path or path + (kind,)
        name = user_name or namer.auto(kind)
        namer.claim(name, self.doc.key_loc(path + ("name",)) if user_name else loc, self.out, path)
        args = raw[kind]
        if kind in ("concat", "add"):
            node: Node | None = self.parallel(name, kind, kind, args, kpath, env, calls, stack)
        elif kind == "residual":
            node = self.residual(name, args, kpath, env, calls, stack)
        elif kind == "group":
            node = Sequence(name, tuple(self.items(args, kpath, env, calls, _Namer(), stack)), loc, "group", calls)
        elif kind in self.spec.blocks:
            node = self.invoke(name, kind, args, path, kpath, env, calls, stack)
        elif kind in REGISTRY:
            node = self.layer(name, kind, args, path, kpath, env, calls)
        else:
            choices = list(REGISTRY) + list(self.spec.blocks) + list(_STRUCTURAL)
            self.out.add("AS105", f"unknown layer kind or block '{kind}'",
                         self.doc.key_loc(kpath) if key_path is None else loc, format_path(kpath),
                         did_you_mean(kind, choices), calls)
            node = None
        return [node] if node is not None else []

    def count(self, loc: Loc, n: int = 1) -> None:
        self.expanded += n
        if self.expanded > self.limits.max_expanded_nodes:
            self.out.add("AS002", f"the network expands to more than {self.limits.max_expanded_nodes:,} items",
                         loc, hint=f"raise it with {Limits.flag('max_expanded_nodes')} if this spec is trusted")
            raise _Budget

    # -- leaves ------------------------------------------------------------------------------
    def layer(self, name: str, kind: str, args: Any, path: Path, kpath: Path, env: Mapping[str, Any],
              calls: CallChain) -> Layer | None:
        failures = self.failures
        params = self.value(args, env, kpath, calls) if args is not None else {}
        if self.failures > failures:
            return None  # a bad expression is reported once, not again as a wrong type
        if not isinstance(params, dict):
            self.out.add("AS103", f"parameters of {kind} must be a mapping, got {params!r}",
                         self.doc.loc(kpath), format_path(kpath), f"write `{kind}: {{...}}`", calls)
            return None
        schema = REGISTRY[kind].Params
        try:
            p = schema.model_validate(params)
        except ValidationError as exc:
            report_validation(exc, self.doc, kpath, schema, self.out, calls)
            return None
        return Layer(name, kind, p, self.doc.loc(path), path, calls)

    # -- composites --------------------------------------------------------------------------
    def parallel(self, name: str, merge: str, label: str, args: Any, kpath: Path, env: Mapping[str, Any],
                 calls: CallChain, stack: tuple[str, ...]) -> Parallel | None:
        if isinstance(args, dict):
            named = list(args.items())
        elif isinstance(args, list):
            named = [(f"branch{i}", b) for i, b in enumerate(args)]
        else:
            self.out.add("AS103", f"{label} takes named branches (a mapping) or a list of branches",
                         self.doc.loc(kpath), format_path(kpath), related=calls)
            return None
        if len(named) < 2:
            self.out.add("AS107", f"{label} needs at least two branches, got {len(named)}",
                         self.doc.loc(kpath), format_path(kpath), related=calls)
            return None
        branches = []
        for i, (bname, body) in enumerate(named):
            bpath = kpath + ((bname,) if isinstance(args, dict) else (i,))
            if not (isinstance(bname, str) and is_identifier(bname)):
                self.out.add("AS107", f"branch name {bname!r} must be letters, digits and _",
                             self.doc.key_loc(bpath), format_path(bpath), related=calls)
            elif name_problem(bname):
                self.out.add("AS107", f"'{bname}' cannot name a branch: {name_problem(bname)}",
                             self.doc.key_loc(bpath), format_path(bpath), related=calls)
            children = self.items(body if body is not None else [], bpath, env, calls, _Namer(), stack)
            branches.append(Sequence(str(bname), tuple(children), self.doc.loc(bpath), "branch", calls))
        return Parallel(name, tuple(branches), merge, self.doc.loc(kpath), label, calls)

    def residual(self, name: str, args: Any, kpath: Path, env: Mapping[str, Any], calls: CallChain,
                 stack: tuple[str, ...]) -> Parallel | None:
        """body + shortcut, added, then the `then` layers. The body's and then's layers become direct
        children of the block (`layer2.block0.conv1`, as torchvision names them); the shortcut is
        `shortcut` (empty: the identity)."""
        keys = _SUBKEYS["residual"]
        if not isinstance(args, dict):
            self.out.add("AS103", "residual takes a mapping with `body` and optionally `shortcut` and `then`",
                         self.doc.loc(kpath), format_path(kpath), related=calls)
            return None
        for key in args:
            if key not in keys:
                self.out.add("AS101", f"unknown key '{key}' in residual", self.doc.key_loc(kpath + (key,)),
                             format_path(kpath + (key,)), did_you_mean(key, keys), calls)
        if "body" not in args:
            self.out.add("AS102", "missing required key 'body' in residual", self.doc.loc(kpath),
                         format_path(kpath), related=calls)
            return None
        loc = self.doc.loc(kpath)
        namer = _Namer()  # body and then share the block's namespace with its shortcut
        namer.taken["shortcut"] = loc
        body = self.items(args["body"], kpath + ("body",), env, calls, namer, stack)
        shortcut = self.items(args.get("shortcut") or [], kpath + ("shortcut",), env, calls, _Namer(), stack)
        then = self.items(args.get("then") or [], kpath + ("then",), env, calls, namer, stack)
        branches = (Sequence("body", tuple(body), self.doc.loc(kpath + ("body",)), "branch", calls),
                    Sequence("shortcut", tuple(shortcut), self.doc.loc(kpath + ("shortcut",)) if "shortcut" in args
                             else loc, "branch", calls))
        return Parallel(name, branches, "add", loc, "residual", calls, inline="body", then=tuple(then))

    def repeat(self, raw: dict, path: Path, env: Mapping[str, Any], calls: CallChain, namer: _Namer,
               stack: tuple[str, ...]) -> list[Node]:
        for key in raw:
            if key not in ("repeat", "body", "index", "name"):
                self.out.add("AS101", f"unknown key '{key}' in repeat", self.doc.key_loc(path + (key,)),
                             format_path(path + (key,)), did_you_mean(key, ["repeat", "body", "index", "name"]), calls)
        times = self.value(raw["repeat"], env, path + ("repeat",), calls)
        index = raw.get("index")
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            if times is not None:
                self.out.add("AS104", f"repeat count must be a positive integer, got {times!r}",
                             self.doc.loc(path + ("repeat",)), format_path(path + ("repeat",)), related=calls)
            return []
        if index is not None and not (isinstance(index, str) and is_identifier(index)):
            self.out.add("AS107", f"index must be a variable name, got {index!r}", self.doc.loc(path + ("index",)),
                         format_path(path + ("index",)), related=calls)
            return []
        if "body" not in raw:
            self.out.add("AS102", "missing required key 'body' in repeat", self.doc.loc(path), format_path(path),
                         related=calls)
            return []
        if not raw["body"]:
            self.out.add("AS107", "repeat body is empty", self.doc.loc(path + ("body",)), format_path(path + ("body",)),
                         related=calls)
            return []
        if times > self.limits.max_expanded_nodes:
            self.count(self.doc.loc(path + ("repeat",)), times)
        group = raw.get("name")
        nodes: list[Node] = []
        for i in range(times):
            scope = {**env, index: i} if index else env
            before, errors = self.expanded, len(self.out.diagnostics)
            if group:
                inner = self.items(raw["body"], path + ("body",), scope, calls, _Namer(), stack)
                gname = f"{group}{i}"
                namer.claim(gname, self.doc.loc(path), self.out, path)
                nodes.append(_rename(inner[0], gname) if len(inner) == 1 else
                             Sequence(gname, tuple(inner), self.doc.loc(path), "repeat", calls))
            else:
                nodes.extend(self.items(raw["body"], path + ("body",), scope, calls, namer, stack))
            if i == 0:
                if len(self.out.diagnostics) > errors:
                    break  # the other iterations would report the same problems again
                per_iteration = max(self.expanded - before, 1)
                if self.expanded + per_iteration * (times - 1) > self.limits.max_expanded_nodes:
                    self.count(self.doc.loc(path + ("repeat",)), per_iteration * (times - 1))
        return nodes

    def invoke(self, name: str, block: str, args: Any, path: Path, kpath: Path, env: Mapping[str, Any],
               calls: CallChain, stack: tuple[str, ...]) -> Node | None:
        loc = self.doc.loc(path)
        if block in stack:
            chain = " -> ".join(stack[stack.index(block):] + (block,))
            self.out.add("AS122", f"block '{block}' uses itself ({chain})", loc, format_path(path),
                         "a block may not invoke itself, directly or through other blocks", calls)
            return None
        if len(stack) >= self.limits.max_block_depth:
            self.out.add("AS002", f"blocks nested more than {self.limits.max_block_depth} deep", loc, format_path(path),
                         f"raise it with {Limits.flag('max_block_depth')} (at most {CEILINGS['max_block_depth']}) "
                         "if this spec is trusted", calls)
            raise _Budget
        definition: BlockDef = self.spec.blocks[block]
        values = self.value(args, env, kpath, calls) if args is not None else {}
        if not isinstance(values, dict):
            self.out.add("AS103", f"arguments of block '{block}' must be a mapping, got {values!r}",
                         self.doc.loc(kpath), format_path(kpath), related=calls)
            return None
        scope = dict(self.globals)
        ok = True
        misspelt = {closest(k, definition.params) for k in values if k != "name" and k not in definition.params}
        for key, val in values.items():
            if key == "name":
                continue
            if key not in definition.params:
                self.out.add("AS101", f"block '{block}' has no parameter '{key}'", self.doc.key_loc(kpath + (key,)),
                             format_path(kpath + (key,)),
                             did_you_mean(key, definition.params) or f"its parameters: {', '.join(definition.params)}",
                             calls)
                ok = False
        for pname, decl in definition.params.items():
            if pname in values:
                val = values[pname]
            elif decl.default is not None:
                val = decl.default
            elif pname in misspelt:  # `chanels: 4` is reported once, as the unknown key with its hint
                ok = False
                continue
            else:
                self.out.add("AS102", f"block '{block}' needs parameter '{pname}' ({decl.type})",
                             self.doc.loc(kpath), format_path(kpath), related=calls)
                ok = False
                continue
            if not _has_type(val, decl.type):
                where = kpath + (pname,) if pname in values else ("blocks", block, "params", pname)
                self.out.add("AS103", f"parameter '{pname}' of block '{block}' expects {decl.type}, got {val!r}",
                             self.doc.loc(where), format_path(where), related=calls)
                ok = False
                continue
            scope[pname] = float(val) if decl.type == "float" else val
        if not ok:
            return None
        inner_calls = ((call_note(block), loc),) + calls
        body_path = ("blocks", block, "body")
        children = self.items(definition.body, body_path, scope, inner_calls, _Namer(), stack + (block,))
        if len(children) == 1:
            return _rename(children[0], name, block)
        return Sequence(name, tuple(children), loc, block, calls)


def iter_nodes(root: Sequence) -> Iterator[tuple[str, Node]]:
    """(module path, node) for every node below `root`, containers first: the paths that analysis
    reports and lowering names modules by (a residual's body and `then` layers sit directly in it)."""

    def walk(node: Node, path: str) -> Iterator[tuple[str, Node]]:
        yield path, node
        if isinstance(node, Layer):
            return
        if isinstance(node, Sequence):
            children: tuple[Node, ...] = node.children
        else:
            children = tuple(c for b in node.branches for c in (b.children if b.name == node.inline else (b,)))
            children += node.then
        for child in children:
            yield from walk(child, f"{path}.{child.name}")

    for child in root.children:
        yield from walk(child, child.name)


def _has_type(value: Any, type_name: str) -> bool:
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)


def _rename(node: Node, name: str, label: str | None = None) -> Node:
    """A container with one child collapses into it: `inception3a.branch1`, not `inception3a.concat0.branch1`."""
    if label and not isinstance(node, Layer):
        return replace(node, name=name, label=label)
    return replace(node, name=name)

