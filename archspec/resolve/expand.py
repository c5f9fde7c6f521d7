"""The expander: the spec's sugar (blocks, `repeat`, `residual`, branch `concat`/`add`, `group`,
`when`) into the surface tree, with every parameter and expression evaluated, every name bound
(`names.Binder`), and the graph assembled from the flattener's walk.

The number of layers is bounded while expanding: a repeat is checked against the node budget after
its first iteration, before the rest is unrolled. A block whose body reads `in` is left as a
`Deferred` and expanded by the flattener when it reaches it (see `deferred`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from ..errors import Collector, Diagnostic, Loc, call_note, closest, did_you_mean
from ..expr import IN, ExprError, Steps, evaluate, is_identifier, looks_like_expression
from ..layers import REGISTRY, TensorType
from ..layers.base import default_layout
from ..limits import CEILINGS, Limits
from ..load import Document, Path, format_path
from ..schema import BlockDef, Dim, InputDecl, Spec, report_validation
from .deferred import TypingFlattener, body_reads_input, input_view
from .flatten import Flattener
from .ir import CallChain, Graph, Input, Output
from .names import Binder, Namer, name_problem
from .tree import (
    Deferred,
    Layer,
    Misread,
    Parallel,
    Sequence,
    Tree,
    piece_names,
    rename,
)
from .unused import unused


class _Budget(Exception):
    """Aborts expansion once the node budget is exhausted (already reported)."""


_STRUCTURAL = ("repeat", "concat", "add", "residual", "group")
_SUBKEYS = {"residual": ("body", "shortcut", "then")}  # keys that belong under a structural kind


class Resolver:
    def __init__(self, doc: Document, spec: Spec, limits: Limits):
        self.doc, self.spec, self.limits = doc, spec, limits
        self.out = Collector()
        self.expanded = 0  # items expanded so far (layers, containers, failed items), against the node limit
        self.failures = 0  # bad values seen, counted even when the Collector folds a repeat's duplicates
        self.nesting = 0  # items open around the current one
        self.steps = Steps(limits.max_expr_steps)
        self.globals: dict[str, Any] = {}
        self.names = Binder(doc, self.out)
        self.reads: dict[str, bool] = {}  # block -> whether its definition reads `in`
        self.deferred = 0  # invocations waiting for their input's type
        self.held: list[Diagnostic] | None = None  # while a deferred body expands: its misreads of `in` (ExprError)

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
        top = self.names.top(inputs)
        try:
            children = self.items(self.spec.network, ("network",), self.globals, (), top, ())
        except _Budget:
            children = []
        self.out.raise_if_any()
        flat = TypingFlattener(inputs, self) if self.deferred else Flattener(inputs)
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
        return replace(graph, warnings=unused(graph))

    def outputs(self, inputs: tuple[Input, ...], top: Namer, flat: Flattener, last: int) -> tuple[Output, ...]:
        """`outputs: {name: value}`, or the one output `output:` names (default "output"): the last item."""
        taken = {i.name: i.loc for i in inputs}
        if not self.spec.outputs:
            where = self.doc.loc(("output",)) if "output" in self.doc.data else self.doc.loc(("network",))
            declared = [(self.spec.output, last, where)]
        else:
            declared = []
            for name, ref in self.spec.outputs.items():
                where = self.doc.loc(("outputs", name))
                token = self.names.lookup(ref, top, None, where, ("outputs", name), ())
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
            if exc.misread and self.held is not None:  # reported unless a layer refuses the input (`deferred`)
                self.held.append(Diagnostic(exc.code, f"{exc} in {raw!r}", self.doc.loc(path), format_path(path),
                                            exc.hint, calls))
                return None
            self.out.add(exc.code, f"{exc} in {raw!r}", self.doc.loc(path), format_path(path), exc.hint, calls)
            if exc.code == "AS002":
                raise _Budget from None
            return None

    # -- sequences and items -----------------------------------------------------------------
    def items(self, raw: Any, path: Path, env: Mapping[str, Any], calls: CallChain, namer: Namer,
              stack: tuple[str, ...]) -> list[Tree]:
        if isinstance(raw, (dict, str)):
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
                for k, piece in enumerate(piece_names(args)):
                    if piece not in namer.defined:
                        namer.later.setdefault(piece, self.doc.loc((path if single else path + (i,)) + (kind, "as", k)))
        nodes: list[Tree] = []
        errors, misreads = len(self.out.diagnostics), len(self.held or ())
        for i, item in enumerate(raw):
            nodes.extend(self.item(item, path if single else path + (i,), env, calls, namer, stack))
        # an item left out after an error (or a misread of `in`) would only move the problem
        if (len(self.out.diagnostics), len(self.held or ())) == (errors, misreads):
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

    def item(self, raw: Any, path: Path, env: Mapping[str, Any], calls: CallChain, namer: Namer,
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
            nodes = self._item(raw, path, env, calls, namer, stack)
        finally:
            self.nesting -= 1
        if not nodes and self.held:  # after a misread of `in`, an item left out leaves an untyped value
            return [Misread(raw.get("name", "") if isinstance(raw, dict) else "", self.doc.loc(path))]
        return nodes

    def _item(self, raw: Any, path: Path, env: Mapping[str, Any], calls: CallChain, namer: Namer,
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
            refs = self.names.references(raw["from"], namer, user_name, path, calls)
            if refs is None:  # reported, or it reads a failed item: a reference to this one says nothing more
                if isinstance(user_name, str):
                    namer.failed.add(user_name)
                namer.failed.update(piece_names(raw[kind]))
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
            node = Sequence(name, tuple(self.items(args, kpath, env, calls, Namer(namer, owner=f"group {owner}"),
                                                   stack)), loc, "group")
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
            namer.failed.update(piece_names(args))
            return []
        if refs is not None and len(refs) != 1 and not isinstance(node, Layer):
            self.out.add("AS107", f"{kind} reads one value, `from` names {len(refs)}", self.doc.loc(path + ("from",)),
                         format_path(path + ("from",)), "concatenate or add them first with "
                         "`- {concat, from: [...]}`", calls)
            return []
        token = None
        if user_name and isinstance(node, Layer) and node.pieces:  # its name names the layer, not a value
            self.names.several[user_name] = (kind, REGISTRY[kind].output_names(node.params))
        elif user_name:
            token = self.names.define(user_name, namer, loc)
        return [node if (node.refs, node.token) == (refs, token) else replace(node, refs=refs, token=token)]

    def named_values(self, node: Layer, kpath: Path, namer: Namer, own: str | None, calls: CallChain) -> Layer | None:
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
                token = self.names.lookup(ref, namer, own, self.doc.loc(fpath), fpath, calls)
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
            namer.claim(piece, self.doc.loc(ppath), self.out, ppath, f"piece '{piece}' of {node.kind} '{node.name}'")
            if len(self.out.diagnostics) > before:
                return None
            pieces.append(self.names.define(piece, namer, self.doc.loc(ppath)))
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
    def mapping(self, args: Any, env: Mapping[str, Any], kpath: Path, calls: CallChain, what: str,
                hint: str = "") -> dict | None:
        """A layer's parameters or a block's arguments, evaluated; None (reported) unless a mapping.
        A bad expression inside is reported once, not again as a wrong type."""
        failures = self.failures
        values = self.value(args, env, kpath, calls) if args is not None else {}
        if self.failures > failures:
            return None
        if not isinstance(values, dict):
            self.out.add("AS103", f"{what} must be a mapping, got {values!r}", self.doc.loc(kpath),
                         format_path(kpath), hint, calls)
            return None
        return values

    def layer(self, name: str, kind: str, args: Any, path: Path, kpath: Path, env: Mapping[str, Any],
              calls: CallChain) -> Layer | None:
        params = self.mapping(args, env, kpath, calls, f"parameters of {kind}", f"write `{kind}: {{...}}`")
        if params is None:
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
                 calls: CallChain, stack: tuple[str, ...], namer: Namer) -> Parallel | None:
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
                                  Namer(namer, owner=f"branch '{bname}' of '{name}'"), stack)
            branches.append(Sequence(str(bname), tuple(children), self.doc.loc(bpath), "branch"))
        return Parallel(name, tuple(branches), merge, self.doc.loc(kpath), label, calls, yaml_path=kpath)

    def residual(self, name: str, args: Any, kpath: Path, env: Mapping[str, Any], calls: CallChain,
                 stack: tuple[str, ...], outer: Namer) -> Parallel | None:
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
        namer = Namer(outer, owner=f"residual '{name}'")  # body and then share the block's namespace with its shortcut
        namer.taken["shortcut"] = loc
        body = self.items(args["body"], kpath + ("body",), env, calls, namer, stack)
        shortcut = self.items(args.get("shortcut") or [], kpath + ("shortcut",), env, calls,
                              Namer(outer, owner=f"the shortcut of '{name}'"), stack)
        then = self.items(args.get("then") or [], kpath + ("then",), env, calls, namer, stack)
        branches = (Sequence("body", tuple(body), self.doc.loc(kpath + ("body",)), "branch"),
                    Sequence("shortcut", tuple(shortcut), self.doc.loc(kpath + ("shortcut",)) if "shortcut" in args
                             else loc, "branch"))
        return Parallel(name, branches, "add", loc, "residual", calls, inline="body", then=tuple(then),
                        yaml_path=kpath)

    def repeat(self, raw: dict, path: Path, env: Mapping[str, Any], calls: CallChain, namer: Namer,
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
                                   Namer(namer, owner=f"repeat '{group}{i}'"), stack)
                gname = f"{group}{i}"
                namer.claim(gname, self.doc.loc(path), self.out, path)
                nodes.append(rename(inner[0], gname) if len(inner) == 1 else
                             Sequence(gname, tuple(inner), self.doc.loc(path), "repeat"))
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
        values = self.mapping(args, env, kpath, calls, f"arguments of block '{block}'")
        if values is None:
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
                              Namer(private=True, owner=f"block '{block}'"), stack + (block,))
        if len(children) == 1:
            return rename(children[0], name, block)
        return Sequence(name, tuple(children), loc, block)

    def reads_input(self, block: str) -> bool:
        """Whether a block's definition reads `in` anywhere: in its own layers, conditions, repeat
        counts, or in the arguments it passes to the blocks it invokes (those are evaluated in its
        scope; the invoked blocks' own `in` is their own input)."""
        if block not in self.reads:
            self.reads[block] = body_reads_input(self.spec.blocks[block].body)
        return self.reads[block]

    def expand(self, d: Deferred, x: TensorType, alt: TensorType | None, dynamic: str,
               alt_fails: str = "") -> tuple[Tree | None, tuple[Diagnostic, ...]]:
        """A deferred block's body, with `in` bound to its input's type; None after an error
        (reported). `alt`: the input's type with the dynamic input axes at other sizes; `alt_fails`: the
        layer that fails there, when it is None. With it, its misreads of `in` (not yet reported): the
        body is then partial, each item that misread left as a `Misread`, for the flattener to find the cause."""
        view = input_view(x, alt, dynamic, alt_fails)
        errors, nesting, held = len(self.out.diagnostics), self.nesting, self.held
        self.nesting, self.held = d.nesting, []
        try:
            tree = self.body(d.name, d.block, {**d.scope, IN: view}, d.loc, d.calls, d.stack)
            misreads = tuple(self.held)
        finally:
            self.nesting, self.held = nesting, held
        if len(self.out.diagnostics) > errors:
            for m in misreads:
                self.out.add(m.code, m.message, m.loc, m.path, m.hint, m.related)
            return None, ()
        return (rename(tree, d.name, d.label) if d.label else tree), misreads


def _has_type(value: Any, type_name: str) -> bool:
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)
