"""Stage 3, resolve: expand the spec into the graph IR, one flat, topologically ordered dataflow graph.

The IR (`Graph`): named model inputs; values (each produced by one node or a model input); nodes
in topological order, each with its kind, validated parameters, input and output value ids, its
scope (the dotted module path that names its weights in the `state_dict`, e.g.
`layer2.block0.conv1`), source location, YAML path and block call chain; a scope table saying
which block, group, repeat, branch or merge each container prefix is; and the named outputs.
Every later stage (analyze, lower, render, diagram, export) reads this graph and nothing else.

The v1 constructs (blocks, `repeat`, `residual`, branch `concat`/`add`, `group`, `when`) are sugar:
the expander below turns them into a surface tree (`Layer`/`Sequence`/`Parallel`, private to this
module), and `_Flattener` is the one walker that turns that tree into nodes and scopes. The
residual naming rule (body and `then` layers sit directly in the block, the shortcut under
`shortcut`, the merge under `merge`) lives there and nowhere else.

References (`from:` on an item) name earlier values: a model input, or an item given a `name:`
earlier in the same list or in a list enclosing it. Names inside a block's body, a group, a branch
or a repeat are private to it; a block body sees only its own names (see docs/tutorial.md).
The number of layers is bounded while expanding: a repeat is checked against the node budget
after its first iteration, before the rest is unrolled.

A block whose body reads `in` (the type of the value it reads: `in.channels`, docs/spec.md) is
expanded last, by `_Flattener`, which types the values before it with the registry's shape rules;
resolve still returns one complete graph of plain numbers.
"""

from __future__ import annotations

import hashlib
import keyword
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Union

from pydantic import ValidationError

from .errors import Collector, Diagnostic, InternalError, Loc, SpecError, call_note, closest, did_you_mean
from .expr import IN, ExprError, Steps, TypeView, evaluate, is_identifier, looks_like_expression, reads_input
from .layers import REGISTRY, LayerParams, ShapeError, TensorType
from .layers.base import AXIS_NAMES, NoParams, default_layout
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
    refs: tuple[int, ...] | None = None  # `from:` tokens; None: the previous item's output
    token: int | None = None  # set when the item has a `name:` others may reference
    extra: tuple[int, ...] = ()  # tokens its parameters name (`reference_fields`), read after `refs`
    pieces: tuple[int, ...] = ()  # tokens of its several outputs (`output_names`), in order


@dataclass(frozen=True, slots=True)
class Sequence:
    name: str
    children: tuple[Tree, ...]
    loc: Loc
    label: str = "sequence"  # block name, "group", "branch", "repeat"
    calls: CallChain = ()
    refs: tuple[int, ...] | None = None
    token: int | None = None


@dataclass(frozen=True, slots=True)
class Parallel:
    name: str
    branches: tuple[Sequence, ...]
    merge: str  # a key of layers.MERGES
    loc: Loc
    label: str = "parallel"  # "concat", "add" or "residual"
    calls: CallChain = ()
    yaml_path: Path = ()
    inline: str | None = None  # the branch whose layers are direct children of this node (a residual body)
    then: tuple[Tree, ...] = ()  # applied after the merge, also direct children (the post-add relu)
    refs: tuple[int, ...] | None = None
    token: int | None = None


@dataclass(frozen=True, slots=True)
class Deferred:
    """An invocation of a block that reads `in` (its input's type): arguments bound, body not yet
    expanded. The flattener expands it when it reaches it, with its input's type known."""

    name: str
    block: str
    scope: Mapping[str, Any]  # the bound parameters and globals (never mutated)
    loc: Loc
    calls: CallChain
    stack: tuple[str, ...]
    nesting: int  # items open around the invocation, restored while its body is expanded
    label: str | None = None  # the container label `_rename` gave it when it became a block's only child
    refs: tuple[int, ...] | None = None
    token: int | None = None


Tree = Union[Layer, Sequence, Parallel, Deferred]  # the surface tree, private to resolve


# --- the IR ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Input:
    name: str
    dims: tuple[Dim, ...]
    dtype: str
    loc: Loc
    layout: str = ""  # "CHW", "TF", "T", "F", ... (see layers.base.TensorType)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.dims)


@dataclass(frozen=True, slots=True)
class Value:
    """A tensor flowing between nodes: a model input (producer None) or a node's output."""

    name: str  # the input's name, or the producing node's scope
    producer: int | None  # index into Graph.nodes


@dataclass(frozen=True, slots=True)
class Node:
    """One layer: a registered kind applied to input values, producing output values."""

    kind: str
    params: LayerParams
    inputs: tuple[int, ...]  # value ids
    outputs: tuple[int, ...]
    scope: str  # module path, e.g. "layer2.block0.conv1"
    loc: Loc
    yaml_path: Path  # where the layer is written (inside its block definition, if any)
    calls: CallChain = ()

    @property
    def name(self) -> str:
        return self.scope.rsplit(".", 1)[-1]

    @property
    def source(self) -> str:
        return format_path(self.yaml_path)


@dataclass(frozen=True, slots=True)
class Scope:
    """A container prefix of node scopes: which block (its name), group, repeat, branch, residual,
    concat or add it is. Summary rows, diagram clusters and residual zero-init come from here."""

    path: str
    label: str
    loc: Loc
    zero_init: tuple[int, ...] = ()  # residual: body nodes whose last normalisation zero_init_residual zeroes


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    value: int
    loc: Loc


@dataclass(frozen=True)
class Graph:
    name: str
    description: str
    inputs: tuple[Input, ...]
    values: tuple[Value, ...]
    nodes: tuple[Node, ...]  # topologically ordered: every input value is produced earlier
    scopes: tuple[Scope, ...]  # in order of first appearance
    outputs: tuple[Output, ...]
    expanded_items: int
    sha256: str
    spec: Spec = field(repr=False)
    doc: Document = field(repr=False)
    warnings: tuple[Diagnostic, ...] = ()  # unused inputs, dead layers

    @property
    def input(self) -> Input:
        """The first input (the only one of a v1 spec)."""
        return self.inputs[0]

    @property
    def output_name(self) -> str:
        return self.outputs[0].name


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
    spec_name input_name input_names output_names spec_sha256 routes merge then add_step _steps _values _outputs
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
    """Names the children of one container (user names as given, others `{kind}{n}`), and is the
    list's frame for references: the names defined so far, those still to come, the open items."""

    def __init__(self, parent: _Namer | None = None, private: bool = False, owner: str = "") -> None:
        self.taken: dict[str, Loc] = {}
        self.counts: dict[str, int] = {}
        self.parent, self.private, self.owner = parent, private, owner  # private: a block body
        self.defined: dict[str, int] = {}  # name -> token, for `from:`
        self.later: dict[str, Loc] = {}  # names given further down this list
        self.open: set[str] = set()  # items being expanded
        self.failed: set[str] = set()  # names of items that failed (reported): a reference to one says nothing more

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
        self.next_token = 0  # one per named item, for references; the inputs take the first ones
        self.private: dict[str, tuple[str, Loc]] = {}  # names defined inside containers -> (owner, loc)
        self.reads: dict[str, bool] = {}  # block -> whether its definition reads `in`
        self.deferred = 0  # invocations waiting for their input's type
        self.several: dict[str, tuple[str, tuple[str, ...]]] = {}  # name of a multi-output item -> (kind, pieces)

    # -- entry -----------------------------------------------------------------------------
    def run(self, input_shape: tuple[int, ...] | None) -> Graph:
        for name, value in self.spec.vars.items():
            failures = self.failures
            resolved = self.value(value, self.globals, ("vars", name), ())
            if self.failures == failures:  # a failed variable stays unknown rather than becoming None
                self.globals[name] = resolved
        key = self.spec.input_key
        decls = list((self.spec.inputs or self.spec.input or {}).items())
        inputs = tuple(self.make_input(key, name, decl, input_shape if i == 0 else None)
                       for i, (name, decl) in enumerate(decls))
        top = _Namer()
        for i, inp in enumerate(inputs):  # the inputs are the first names a reference can see
            top.taken[inp.name] = inp.loc
            top.defined[inp.name] = i
        self.next_token = len(inputs)
        try:
            children = self.items(self.spec.network, ("network",), self.globals, (), top, ())
        except _Budget:
            children = []
        self.out.raise_if_any()
        flat = _Flattener(inputs, self if self.deferred else None)
        try:
            last = flat.run(tuple(children), "", 0)
        except _Budget:
            last = 0
        self.out.raise_if_any()
        outputs = self.outputs(inputs, top, flat, last)
        self.out.raise_if_any()
        digest = hashlib.sha256(self.doc.text.encode("utf-8")).hexdigest()
        graph = Graph(self.spec.name, self.spec.description, inputs, tuple(flat.values), tuple(flat.nodes),
                      tuple(flat.scopes), outputs, self.expanded, digest, self.spec, self.doc)
        return replace(graph, warnings=_warnings(graph))

    def outputs(self, inputs: tuple[Input, ...], top: _Namer, flat: _Flattener, last: int) -> tuple[Output, ...]:
        """`outputs: {name: value}`, or the one output `output:` names (default "output"): the last item."""
        taken = {i.name: i.loc for i in inputs}
        if not self.spec.outputs:
            where = self.doc.loc(("output",)) if "output" in self.doc.data else self.doc.loc(("network",))
            declared = [(self.spec.output, last, where)]
        else:
            declared = []
            for name, ref in self.spec.outputs.items():
                where = self.doc.loc(("outputs", name))
                token = self.lookup(ref, top, None, where, ("outputs", name), ())
                if token is not None:
                    declared.append((name, flat.bound[token], where))
        result = []
        for name, value, where in declared:
            if name in taken:  # ONNX names every tensor once
                self.out.add("AS110", f"the output is named '{name}' like {'the' if len(inputs) == 1 else 'an'} input",
                             where,
                             "outputs" if self.spec.outputs else "output",
                             hint="give the output its own name, e.g. `output: logits`",
                             related=(("the input is declared here", taken[name]),))
            result.append(Output(name, value, where))
        return tuple(result)

    def make_input(self, key: str, name: str, decl: InputDecl, override: tuple[int, ...] | None) -> Input:
        dims = decl.shape
        loc = self.doc.loc((key, name))
        if override is not None:
            if len(override) != len(dims):
                self.out.add("AS203", f"--input has {len(override)} axes but input '{name}' has {len(dims)}", loc)
                self.out.raise_if_any()
            dims = tuple(Dim(size, d.name) for size, d in zip(override, dims))
        return Input(name, dims, decl.dtype, loc, decl.layout or default_layout(len(dims), decl.dtype))

    # -- references --------------------------------------------------------------------------
    def references(self, raw: Any, namer: _Namer, own: str | None, path: Path,
                   calls: CallChain) -> tuple[int, ...] | None:
        """`from: name` or `from: [a, b]` -> the tokens of the named values (None on an error)."""
        fpath = path + ("from",)
        names = raw if isinstance(raw, list) else [raw]
        if not names or not all(isinstance(n, str) and n for n in names):
            self.out.add("AS103", f"`from` takes a name or a list of names, got {raw!r}", self.doc.loc(fpath),
                         format_path(fpath), "e.g. `from: stage2` or `from: [stage2, stage4]`", calls)
            return None
        tokens = []
        for i, ref in enumerate(names):
            where = fpath + (i,) if isinstance(raw, list) else fpath
            token = self.lookup(ref, namer, own, self.doc.loc(where), where, calls)
            if token is None:
                return None
            tokens.append(token)
        return tuple(tokens)

    def lookup(self, ref: str, namer: _Namer, own: str | None, loc: Loc, path: Path,
               calls: CallChain) -> int | None:
        """The token of an earlier value named `ref`, searched in this list and the lists enclosing
        it (a block body sees only its own names); every other case is a located error."""
        src = format_path(path)
        if not isinstance(ref, str) or not ref:
            self.out.add("AS103", f"expected the name of an earlier item, got {ref!r}", loc, src, related=calls)
            return None
        if ref == own:
            self.out.add("AS125", f"'{ref}' refers to itself", loc, src,
                         "an item reads values defined before it; name an earlier item", calls)
            return None
        head = ref.split(".", 1)[0]
        if "." in ref:
            self.out.add("AS126", f"'{ref}' reaches into the internals of '{head}'", loc, src,
                         f"names inside a block, group, branch or repeat are private to it; reference '{head}' "
                         "itself (its output), or move the item you need out of it and name it there", calls)
            return None
        frame: _Namer | None = namer
        visible: list[str] = []
        while frame is not None:
            if ref in frame.defined:
                return frame.defined[ref]
            if ref in frame.failed:  # its own error is reported; the item reading it is left out
                return None
            if ref in frame.open:
                self.out.add("AS125", f"'{ref}' refers to the item that contains it", loc, src,
                             "a value exists only after its item is complete; a cycle cannot be written", calls)
                return None
            if ref in frame.later:
                self.out.add("AS124", f"forward reference: '{ref}' is defined after this item", loc, src,
                             "items read values defined before them; move the item after it",
                             (("defined here", frame.later[ref]),) + calls)
                return None
            visible += frame.defined
            if frame.private:
                break
            frame = frame.parent
        if ref in self.several:
            kind, pieces = self.several[ref]
            self.out.add("AS123", f"'{ref}' is a {kind} with several outputs: name the piece to read", loc, src,
                         f"its pieces: {', '.join(pieces)}", calls)
            return None
        if ref in self.private:
            self.out.add("AS126", f"'{ref}' is inside {self.private[ref][0]}, whose names are private to it", loc, src,
                         "reference the enclosing block or group by its name (its output), or move the item "
                         "out and name it there", (("defined here", self.private[ref][1]),) + calls)
            return None
        hint = did_you_mean(ref, visible) or (f"names visible here: {', '.join(visible)}" if visible else
                                              "no named value is visible here; give an earlier item a `name:`")
        if frame is not None and frame.private:
            hint += "; a block's body sees only the names defined in it"
        self.out.add("AS123", f"unknown name '{ref}'", loc, src, hint, calls)
        return None

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
              stack: tuple[str, ...]) -> list[Tree]:
        if isinstance(raw, dict) or isinstance(raw, str):
            raw, single = [raw], True
        else:
            single = False
        if not isinstance(raw, list):
            self.out.add("AS103", f"expected a list of layers, got {type(raw).__name__}", self.doc.loc(path),
                         format_path(path), related=calls)
            return []
        for i, item in enumerate(raw):  # names given further down: a reference to one is a forward reference
            if (isinstance(item, dict) and isinstance(item.get("name"), str) and "repeat" not in item
                    and item["name"] not in namer.defined):
                namer.later.setdefault(item["name"], self.doc.loc((path if single else path + (i,)) + ("name",)))
            for kind, args in item.items() if isinstance(item, dict) else ():  # a multi-output layer's pieces
                if not (isinstance(args, dict) and "as" in args and kind in REGISTRY):
                    continue
                for k, piece in enumerate(_piece_names(args)):
                    if piece not in namer.defined:
                        namer.later.setdefault(piece, self.doc.loc((path if single else path + (i,)) + (kind, "as", k)))
        nodes: list[Tree] = []
        errors = len(self.out.diagnostics)
        for i, item in enumerate(raw):
            nodes.extend(self.item(item, path if single else path + (i,), env, calls, namer, stack))
        if len(self.out.diagnostics) == errors:  # an item left out after an error would only move the problem
            self.pieces_read(nodes, calls, path == ("network",) and bool(self.spec.outputs))
        return nodes

    def pieces_read(self, nodes: list[Tree], calls: CallChain, may_end: bool) -> None:
        """A layer with several outputs passes no one value down the list: the item after it names the
        piece it reads (`from:`), and it ends a list only where `outputs:` names what the model gives
        (elsewhere the list's output would be ambiguous)."""
        for k, t in enumerate(nodes):
            if not (isinstance(t, Layer) and t.pieces):
                continue
            names = REGISTRY[t.kind].output_names(t.params)
            if k + 1 == len(nodes) and not may_end:
                self.out.add("AS107", f"{t.kind} '{t.name}' ends its list, but it gives several values "
                             f"({', '.join(names)}), not one to pass on", t.loc, format_path(t.yaml_path),
                             f"read its pieces by name in the items after it, e.g. "
                             f"`- {{concat, from: [{', '.join(names)}]}}`, or, at the end of `network:`, "
                             f"name them under `outputs:`", calls)
            elif k + 1 < len(nodes) and nodes[k + 1].refs is None:
                after = nodes[k + 1]
                self.out.add("AS107", f"this item follows {t.kind} '{t.name}', which gives several values "
                             f"({', '.join(names)}): name the one it reads", after.loc,
                             format_path(after.yaml_path) if isinstance(after, Layer) else "",
                             f"add `from: {names[0]}` (or another piece) to it", calls)

    def item(self, raw: Any, path: Path, env: Mapping[str, Any], calls: CallChain, namer: _Namer,
             stack: tuple[str, ...]) -> list[Tree]:
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
              stack: tuple[str, ...]) -> list[Tree]:
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
        if isinstance(user_name, str):
            namer.later.pop(user_name, None)  # from here on a reference to it is not a forward one
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
        kinds = [k for k in raw if k not in ("name", "from")]
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
        refs = None
        if "from" in raw:
            refs = self.references(raw["from"], namer, user_name, path, calls)
            if refs is None:  # reported, or it reads a failed item: a reference to this one says nothing more
                if isinstance(user_name, str):
                    namer.failed.add(user_name)
                namer.failed.update(_piece_names(raw[kind]))
                return []
        name = user_name or namer.auto(kind)
        namer.claim(name, self.doc.key_loc(path + ("name",)) if user_name else loc, self.out, path)
        args = raw[kind]
        owner = f"'{name}'"
        namer.open.add(name)
        if kind in ("concat", "add") and refs is None:  # v1 branches; with `from:` the registry kind
            node: Tree | None = self.parallel(name, kind, kind, args, kpath, env, calls, stack, namer)
        elif kind == "residual":
            node = self.residual(name, args, kpath, env, calls, stack, namer)
        elif kind == "group":
            node = Sequence(name, tuple(self.items(args, kpath, env, calls, _Namer(namer, owner=f"group {owner}"),
                                                   stack)), loc, "group", calls)
        elif kind in self.spec.blocks:
            node = self.invoke(name, kind, args, path, kpath, env, calls, stack)
        elif kind in REGISTRY:
            node = self.layer(name, kind, args, path, kpath, env, calls)
            if node is not None and not self.arity_ok(kind, refs, path, calls):
                node = None
            if node is not None:
                node = self.named_values(node, kpath, namer, user_name, calls)
        else:
            choices = list(REGISTRY) + list(self.spec.blocks) + list(_STRUCTURAL)
            self.out.add("AS105", f"unknown layer kind or block '{kind}'",
                         self.doc.key_loc(kpath) if key_path is None else loc, format_path(kpath),
                         did_you_mean(kind, choices), calls)
            node = None
        namer.open.discard(name)
        if node is None:
            namer.failed.add(name)
            namer.failed.update(_piece_names(args))
            return []
        if refs is not None and len(refs) != 1 and not isinstance(node, Layer):
            self.out.add("AS107", f"{kind} reads one value, `from` names {len(refs)}", self.doc.loc(path + ("from",)),
                         format_path(path + ("from",)), "concatenate or add them first with "
                         "`- {concat, from: [...]}`", calls)
            return []
        token = None
        if user_name and isinstance(node, Layer) and node.pieces:  # its name names the layer, not a value
            self.several[user_name] = (kind, REGISTRY[kind].output_names(node.params))
        elif user_name:
            token, self.next_token = self.next_token, self.next_token + 1
            namer.defined[user_name] = token
            if namer.parent is not None or namer.private:
                self.private.setdefault(user_name, (namer.owner or "a container", loc))
        return [node if (node.refs, node.token) == (refs, token) else replace(node, refs=refs, token=token)]

    def named_values(self, node: Layer, kpath: Path, namer: _Namer, own: str | None, calls: CallChain) -> Layer | None:
        """The values a layer's parameters name (`reference_fields`, read as further inputs) and the
        names it gives its several outputs (`output_names`), defined in this list like `name:`."""
        rule = REGISTRY[node.kind]
        if not rule.reference_fields and not rule.output_names(node.params):
            return node  # almost every layer: nothing to bind
        extra = []
        for field_name in rule.reference_fields:
            ref = getattr(node.params, field_name)
            if ref is not None:
                fpath = kpath + (field_name,)
                token = self.lookup(ref, namer, own, self.doc.loc(fpath), fpath, calls)
                if token is None:
                    return None
                extra.append(token)
        pieces = []
        names = rule.output_names(node.params)
        if names:
            self.count(self.doc.loc(kpath + ("as",)), len(names))  # each piece is a value: bounded like items
        for k, piece in enumerate(names):
            ppath = kpath + ("as", k)
            namer.later.pop(piece, None)
            before = len(self.out.diagnostics)
            namer.claim(piece, self.doc.loc(ppath), self.out, ppath)
            if len(self.out.diagnostics) > before:
                return None
            pieces.append(self.next_token)
            namer.defined[piece] = self.next_token
            self.next_token += 1
            if namer.parent is not None or namer.private:
                self.private.setdefault(piece, (namer.owner or "a container", self.doc.loc(ppath)))
        return replace(node, extra=tuple(extra), pieces=tuple(pieces))

    def arity_ok(self, kind: str, refs: tuple[int, ...] | None, path: Path, calls: CallChain) -> bool:
        """A unary kind reads one value; an N-ary one (concat, add) two or more, named with `from:`."""
        arity = REGISTRY[kind].arity
        got = 1 if refs is None else len(refs)
        if arity is None and got >= 2 or arity == got:
            return True
        where = path + ("from",) if refs is not None else path
        wanted = "two or more values" if arity is None else ("one value" if arity == 1 else f"{arity} values")
        self.out.add("AS107", f"{kind} reads {wanted}, got {got}", self.doc.loc(where), format_path(where),
                     "name them with `from: [a, b]`" if arity is None else "", calls)
        return False

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
                 calls: CallChain, stack: tuple[str, ...], namer: _Namer) -> Parallel | None:
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
            children = self.items(body if body is not None else [], bpath, env, calls,
                                  _Namer(namer, owner=f"branch '{bname}' of '{name}'"), stack)
            branches.append(Sequence(str(bname), tuple(children), self.doc.loc(bpath), "branch", calls))
        return Parallel(name, tuple(branches), merge, self.doc.loc(kpath), label, calls, yaml_path=kpath)

    def residual(self, name: str, args: Any, kpath: Path, env: Mapping[str, Any], calls: CallChain,
                 stack: tuple[str, ...], outer: _Namer) -> Parallel | None:
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
        namer = _Namer(outer, owner=f"residual '{name}'")  # body and then share the block's namespace with its shortcut
        namer.taken["shortcut"] = loc
        body = self.items(args["body"], kpath + ("body",), env, calls, namer, stack)
        shortcut = self.items(args.get("shortcut") or [], kpath + ("shortcut",), env, calls,
                              _Namer(outer, owner=f"the shortcut of '{name}'"), stack)
        then = self.items(args.get("then") or [], kpath + ("then",), env, calls, namer, stack)
        branches = (Sequence("body", tuple(body), self.doc.loc(kpath + ("body",)), "branch", calls),
                    Sequence("shortcut", tuple(shortcut), self.doc.loc(kpath + ("shortcut",)) if "shortcut" in args
                             else loc, "branch", calls))
        return Parallel(name, branches, "add", loc, "residual", calls, inline="body", then=tuple(then),
                        yaml_path=kpath)

    def repeat(self, raw: dict, path: Path, env: Mapping[str, Any], calls: CallChain, namer: _Namer,
               stack: tuple[str, ...]) -> list[Tree]:
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
        nodes: list[Tree] = []
        for i in range(times):
            scope = {**env, index: i} if index else env
            before, errors = self.expanded, len(self.out.diagnostics)
            if group:
                inner = self.items(raw["body"], path + ("body",), scope, calls,
                                   _Namer(namer, owner=f"repeat '{group}{i}'"), stack)
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
               calls: CallChain, stack: tuple[str, ...]) -> Tree | None:
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
        if self.reads_input(block):
            self.deferred += 1
            return Deferred(name, block, scope, loc, calls, stack, self.nesting)
        return self.body(name, block, scope, loc, calls, stack)

    def body(self, name: str, block: str, scope: Mapping[str, Any], loc: Loc, calls: CallChain,
             stack: tuple[str, ...]) -> Tree:
        inner_calls = ((call_note(block), loc),) + calls
        body_path = ("blocks", block, "body")
        children = self.items(self.spec.blocks[block].body, body_path, scope, inner_calls,
                              _Namer(private=True, owner=f"block '{block}'"), stack + (block,))
        if len(children) == 1:
            return _rename(children[0], name, block)
        return Sequence(name, tuple(children), loc, block, calls)

    def reads_input(self, block: str) -> bool:
        """Whether a block's definition reads `in` anywhere: in its own layers, conditions, repeat
        counts, or in the arguments it passes to the blocks it invokes (those are evaluated in its
        scope; the invoked blocks' own `in` is their own input)."""
        if block not in self.reads:
            def walk(raw: Any) -> bool:
                if isinstance(raw, str):
                    return reads_input(raw)
                if isinstance(raw, dict):
                    return any(walk(v) for v in raw.values())
                return isinstance(raw, list) and any(walk(v) for v in raw)
            self.reads[block] = walk(self.spec.blocks[block].body)
        return self.reads[block]

    def expand(self, d: Deferred, x: TensorType, alt: TensorType | None, dynamic: str, alt_fails: str = "") -> Tree | None:
        """A deferred block's body, with `in` bound to its input's type; None after an error
        (reported). `alt`: the input's type with the dynamic input axes at other sizes; `alt_fails`: the
        layer that fails there, when it is None."""
        axes = x.axes if len(x.axes) == len(x.shape) else ""
        varying = frozenset(i for i, n in enumerate(x.shape) if alt is None or len(alt.shape) != len(x.shape)
                            or alt.shape[i] != n) if dynamic else frozenset()
        view = TypeView(x.shape, tuple(AXIS_NAMES.get(a, "") for a in axes) if axes else ("",) * len(x.shape),
                        x.axes, varying, dynamic, alt_fails if dynamic and alt is None else "")
        errors, nesting = len(self.out.diagnostics), self.nesting
        self.nesting = d.nesting
        try:
            tree = self.body(d.name, d.block, {**d.scope, IN: view}, d.loc, d.calls, d.stack)
        finally:
            self.nesting = nesting
        if len(self.out.diagnostics) > errors:
            return None
        return _rename(tree, d.name, d.label) if d.label else tree


class _Flattener:
    """The one walker from the surface tree to the IR: scopes (module paths) and values.

    A container's children are named under it; a residual's body and `then` layers directly in
    it, as torchvision names them (`layer2.block0.conv1`), its shortcut under `shortcut`, and its
    merge (an `add` node) as `merge`; an Inception concat's branches under their names.

    Blocks that read `in` are where resolve and analyze meet: such a block's body cannot be
    expanded before its input's type is known, and that type is known only from the layers
    before it. So when the tree holds one (`resolver` given), this walker also types each value
    it creates, by the same registry shape rules analyze applies, and expands the block when it
    reaches it. The graph it returns is still complete and immutable: every later stage,
    analyze included, sees plain numbers and never `in`. A value the rules cannot type (analyze
    will say why) stops the expansion there, and analyze is run on the graph so far for the
    diagnostic. Values are typed twice when an input has a dynamic axis: at the nominal sizes and
    with the dynamic axes at other sizes, so that `in` refuses a size that follows one."""

    def __init__(self, inputs: tuple[Input, ...], resolver: _Resolver | None = None):
        self.inputs = inputs
        self.values: list[Value] = [Value(i.name, None) for i in inputs]
        self.nodes: list[Node] = []
        self.scopes: list[Scope] = []
        self.bound: dict[int, int] = {i: i for i in range(len(inputs))}  # reference token -> value id
        self.node_of: dict[int, int] = {}  # id(tree layer) -> node index
        self.resolver = resolver
        self.expansions: dict[int, Tree] = {}  # id(deferred) -> its expanded tree
        dynamic = [d for i in inputs for d in i.dims if d.name]
        self.dynamic = ", ".join(dict.fromkeys(f"'{d.name}'" for d in dynamic))
        self.types: list[TensorType | None] = [TensorType(i.shape, i.dtype, i.layout) for i in inputs]
        self.alt: list[TensorType | None] = [  # the dynamic axes at 2n + 1: no stride or window maps both alike
            TensorType(tuple(2 * d.size + 1 if d.name else d.size for d in i.dims), i.dtype, i.layout)
            for i in inputs]
        self.alt_fails = ""  # the first layer typed at the nominal sizes but not at 2n + 1, for AS120

    def run(self, children: tuple[Tree, ...], prefix: str, x: int) -> int:
        for child in children:
            x = self.tree(child, prefix, x)
        return x

    def emit(self, kind: str, params: LayerParams, xs: tuple[int, ...], scope: str, loc: Loc, yaml_path: Path,
             calls: CallChain) -> tuple[int, ...]:
        """The node and its output values: one, named by its scope, or one per `output_names` entry."""
        names = REGISTRY[kind].output_names(params)
        first = len(self.values)
        if names:
            self.values += [Value(f"{scope}.{n}", len(self.nodes)) for n in names]
        else:
            self.values.append(Value(scope, len(self.nodes)))
        ys = tuple(range(first, len(self.values)))
        self.nodes.append(Node(kind, params, xs, ys, scope, loc, yaml_path, calls))
        if self.resolver is not None:
            for types in (self.types, self.alt) if self.dynamic else (self.types,):
                types += _infer(kind, params, tuple(types[v] for v in xs)) or [None] * len(ys)
            if (self.dynamic and not self.alt_fails and self.types[ys[0]] is not None and self.alt[ys[0]] is None
                    and all(self.alt[v] is not None for v in xs)):
                self.alt_fails = f"{kind} '{scope}' ({loc})"
        return ys

    def deferred(self, t: Deferred, prefix: str, x: int) -> int:
        """Expands a block that reads `in` now that its input is typed, and walks the expansion."""
        r = self.resolver
        assert r is not None  # a Deferred exists only when the resolver made one
        typed = self.types[x]
        if typed is None:
            if not r.out.diagnostics:  # a layer before it fails its shape rule: analyze says how
                self.explain(t.loc)
            return self.untyped(t)
        expanded = r.expand(t, typed, self.alt[x] if self.dynamic else None, self.dynamic, self.alt_fails)
        if expanded is None:
            return self.untyped(t)
        walked = self.expansions[id(t)] = replace(expanded, refs=None, token=t.token)
        return self.tree(walked, prefix, x)

    def untyped(self, t: Deferred) -> int:
        """The output of a block that could not be expanded (an error is reported, so this graph is
        never returned): untyped, so that only the blocks that do not depend on it are expanded."""
        self.values.append(Value(t.name, None))
        self.types.append(None)
        if self.dynamic:
            self.alt.append(None)
        if t.token is not None:
            self.bound[t.token] = len(self.values) - 1
        return len(self.values) - 1

    def explain(self, loc: Loc) -> None:
        """The diagnostics of the layers that cannot be typed, from analyze itself (imported here:
        analyze reads resolve's graph, so resolve cannot import it first)."""
        from .analyze import analyze

        r = self.resolver
        assert r is not None
        partial = Graph(r.spec.name, r.spec.description, self.inputs, tuple(self.values), tuple(self.nodes),
                        tuple(self.scopes), (Output("output", len(self.values) - 1, loc),), r.expanded, "",
                        r.spec, r.doc)
        try:
            analyze(partial, r.limits)
        except SpecError as exc:
            for d in exc.diagnostics:
                r.out.add(d.code, d.message, d.loc, d.path, d.hint, d.related)
            return
        raise InternalError(f"{loc}: a layer before this block cannot be typed, but analyze finds no error")

    def tree(self, t: Tree, prefix: str, x: int) -> int:
        xs = tuple(self.bound[r] for r in t.refs) if t.refs is not None else (x,)
        if isinstance(t, Deferred):
            return self.deferred(t, prefix, xs[0])
        path = f"{prefix}.{t.name}" if prefix else t.name
        if isinstance(t, Layer):
            self.node_of[id(t)] = len(self.nodes)
            ys = self.emit(t.kind, t.params, xs + tuple(self.bound[r] for r in t.extra), path, t.loc, t.yaml_path,
                           t.calls)
            self.bound.update(zip(t.pieces, ys))
            y = ys[0]  # a multi-output layer's next item reads a piece by name (`pieces_read`)
        elif isinstance(t, Sequence):
            self.scopes.append(Scope(path, t.label, t.loc))
            y = self.run(t.children, path, xs[0])
        else:
            slot = len(self.scopes)
            self.scopes.append(Scope(path, t.label, t.loc))
            ends = []
            for b in t.branches:
                if b.name == t.inline:
                    ends.append(self.run(b.children, path, xs[0]))
                else:
                    self.scopes.append(Scope(f"{path}.{b.name}", "branch", b.loc))
                    ends.append(self.run(b.children, f"{path}.{b.name}", xs[0]))
            y = self.emit(t.merge, NoParams(), tuple(ends), f"{path}.merge", t.loc, t.yaml_path, t.calls)[0]
            y = self.run(t.then, path, y)
            if t.inline is not None:
                body = next(b for b in t.branches if b.name == t.inline)
                self.scopes[slot] = replace(self.scopes[slot], zero_init=tuple(self.candidates(body.children)))
        if t.token is not None:
            self.bound[t.token] = y
        return y

    def candidates(self, children: tuple[Tree, ...]) -> list[int]:
        """The layers a residual body's zero-init may touch: its own, and those of the blocks and
        groups it holds (not inside nested branches)."""
        out: list[int] = []
        for c in children:
            c = self.expansions.get(id(c), c)
            if isinstance(c, Layer):
                out.append(self.node_of[id(c)])
            elif isinstance(c, Sequence):
                out += self.candidates(c.children)
        return out


def _infer(kind: str, params: LayerParams, xs: tuple[TensorType | None, ...]) -> list[TensorType] | None:
    """A node's output types by the registry's shape rule, with analyze's input checks, or None where
    analyze will report an error (or an input is untyped)."""
    rule = REGISTRY[kind]
    if any(x is None for x in xs):
        return None
    x = xs[0]
    assert x is not None
    if ((rule.input_rank is not None and len(x.shape) not in rule.input_rank) or x.dtype != rule.input_dtype
            or (rule.input_layouts is not None and x.axes not in rule.input_layouts)):
        return None
    try:
        ys = rule.output_types(params, xs)  # type: ignore[arg-type]
    except ShapeError:
        return None
    return list(ys) if all(d > 0 for y in ys for d in y.shape) else None


def _warnings(graph: Graph) -> tuple[Diagnostic, ...]:
    """Inputs nothing reads, and layers whose output nothing reads (dead code): warnings, not errors."""
    read = {v for n in graph.nodes for v in n.inputs} | {o.value for o in graph.outputs}
    out = []
    for i, inp in enumerate(graph.inputs):
        if i not in read:
            out.append(Diagnostic("AS401", f"input '{inp.name}' is never used", inp.loc, "",
                                  "read it with `from: " + inp.name + "` or remove it", severity="warning"))
    for n in graph.nodes:
        if not any(v in read for v in n.outputs):
            out.append(Diagnostic("AS402", f"the output of {n.kind} '{n.scope}' is never used", n.loc, n.source,
                                  "list it under `outputs:`, read it with `from:`, or remove it", n.calls,
                                  severity="warning"))
        elif len(n.outputs) > 1:  # a piece of a split nothing reads
            for v in n.outputs:
                if v not in read:
                    out.append(Diagnostic("AS402", f"'{graph.values[v].name}' of {n.kind} '{n.scope}' is never used",
                                          n.loc, n.source, "read it with `from:`, or leave it out of the split",
                                          n.calls, severity="warning"))
    return tuple(out)


def _piece_names(args: Any) -> list[str]:
    """The names a layer's parameters give its pieces (`as:`), as written, before validation."""
    names = args.get("as") if isinstance(args, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _has_type(value: Any, type_name: str) -> bool:
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)


def _rename(node: Tree, name: str, label: str | None = None) -> Tree:
    """A container with one child collapses into it: `inception3a.branch1`, not `inception3a.concat0.branch1`."""
    if label and not isinstance(node, Layer):
        return replace(node, name=name, label=label)
    return replace(node, name=name)

