"""Names and references: which names a layer may take, how each list names its children, and
what a `from:` (or a parameter naming a value) refers to.

References name earlier values: a model input, or an item given a `name:` earlier in the same list
or in a list enclosing it. Names inside a block's body, a group, a branch or a repeat are private
to it; a block body sees only its own names (see docs/tutorial.md).
"""

from __future__ import annotations

import keyword
from typing import Any

from ..errors import Collector, Loc, did_you_mean
from ..load import Document, Path, format_path
from .ir import CallChain, Input

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


class Namer:
    """Names the children of one container (user names as given, others `{kind}{n}`), and is the
    list's frame for references: the names defined so far, those still to come, the open items."""

    def __init__(self, parent: Namer | None = None, private: bool = False, owner: str = "") -> None:
        self.taken: dict[str, Loc] = {}
        self.what: dict[str, str] = {}  # a taken name that is not a layer's -> what it names ("piece 'a' of split 's'")
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

    def claim(self, name: str, loc: Loc, out: Collector, path: Path, what: str = "") -> None:
        """Takes `name` for a layer, or for what `what` says it names (a piece of a multi-output layer)."""
        problem = name_problem(name)
        if problem:
            out.add("AS107", f"'{name}' cannot name a layer: {problem}", loc, format_path(path),
                    f"choose another name, e.g. '{name.strip('_') or 'layer'}_'")
        elif name in self.taken and (what or name in self.what):
            this, first = what or f"layer '{name}'", self.what.get(name, f"layer '{name}'")
            out.add("AS110", f"duplicate name '{name}': {this} is named like {first}", loc, format_path(path),
                    f"rename {this} here or {first} at {self.taken[name]}: a later item reads each value by its "
                    "own name", ((f"{first} is named here", self.taken[name]),))
        elif name in self.taken:
            out.add("AS110", f"duplicate layer name '{name}' in this sequence", loc, format_path(path),
                    "names become module paths and must be unique among siblings; use `name:` on a "
                    "repeat to number its iterations", (("first used here", self.taken[name]),))
        else:
            self.taken[name] = loc
            if what:
                self.what[name] = what


class Binder:
    """The spec's named values: one token per name (the flattener binds each to a value id), and the
    names a reference cannot reach (private to a container, or a layer with several outputs)."""

    def __init__(self, doc: Document, out: Collector) -> None:
        self.doc, self.out = doc, out
        self.next_token = 0  # one per named item, for references; the inputs take the first ones
        self.private: dict[str, tuple[str, Loc]] = {}  # names defined inside containers -> (owner, loc)
        self.several: dict[str, tuple[str, tuple[str, ...]]] = {}  # name of a multi-output item -> (kind, pieces)

    def top(self, inputs: tuple[Input, ...]) -> Namer:
        """The frame of `network:`: the inputs are the first names a reference can see."""
        top = Namer()
        for i, inp in enumerate(inputs):
            top.taken[inp.name] = inp.loc
            top.what[inp.name] = f"the model input '{inp.name}'"
            top.defined[inp.name] = i
        self.next_token = len(inputs)
        return top

    def define(self, name: str, namer: Namer, loc: Loc) -> int:
        """A new token for `name`, defined in `namer`'s list (and recorded as private to it if it is a container's)."""
        token, self.next_token = self.next_token, self.next_token + 1
        namer.defined[name] = token
        if namer.parent is not None or namer.private:
            self.private.setdefault(name, (namer.owner or "a container", loc))
        return token

    def references(self, raw: Any, namer: Namer, own: str | None, path: Path,
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

    def lookup(self, ref: str, namer: Namer, own: str | None, loc: Loc, path: Path,
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
        frame: Namer | None = namer
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
