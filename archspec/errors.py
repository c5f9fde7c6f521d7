"""Located diagnostics: every problem a user can cause is reported as `file:line:col: error[CODE]`.

Stages collect diagnostics and raise one `SpecError` holding all of them, so a user sees
every problem of a stage in one run (as ONNX shape inference reports per node).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

# Stable error codes, documented in docs/errors.md. Never renumber; only append.
CODES: dict[str, str] = {
    "AS001": "file-unreadable",
    "AS002": "limit-exceeded",
    "AS010": "yaml-syntax",
    "AS011": "yaml-unsafe-tag",
    "AS012": "yaml-duplicate-key",
    "AS013": "yaml-merge-key",
    "AS014": "yaml-alias",
    "AS015": "yaml-ambiguous-scalar",
    "AS016": "yaml-multiple-documents",
    "AS017": "yaml-encoding",
    "AS018": "empty-file",
    "AS101": "unknown-key",
    "AS102": "missing-key",
    "AS103": "wrong-type",
    "AS104": "out-of-range",
    "AS105": "unknown-layer",
    "AS106": "bad-version",
    "AS107": "invalid-value",
    "AS110": "duplicate-name",
    "AS120": "bad-expression",
    "AS121": "unknown-variable",
    "AS122": "block-recursion",
    "AS123": "unknown-reference",
    "AS124": "forward-reference",
    "AS125": "self-reference",
    "AS126": "private-reference",
    "AS201": "shape-mismatch",
    "AS202": "non-positive-output",
    "AS203": "bad-input-rank",
    "AS301": "budget-exceeded",
    "AS401": "unused-input",  # warnings from here on
    "AS402": "dead-layer",
    "AS403": "fixed-symbol",
}
CODE_BY_NAME = {name: code for code, name in CODES.items()}


@dataclass(frozen=True, slots=True)
class Loc:
    """A position in a spec file, 1-based line and column as editors show them."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    message: str
    loc: Loc
    path: str = ""  # YAML path such as network[3].conv2d.kernel
    hint: str = ""
    related: tuple[tuple[str, Loc], ...] = ()  # ("input produced here", loc), ("in block called here", loc)
    severity: str = "error"  # or "warning": reported, but the spec is valid

    @property
    def name(self) -> str:
        return CODES.get(self.code, "error")

    def as_dict(self) -> dict:
        return {
            "file": self.loc.file,
            "line": self.loc.line,
            "col": self.loc.col,
            "code": self.code,
            "name": self.name,
            "message": self.message,
            "path": self.path,
            "hint": self.hint,
            "related": [{"note": n, "file": l.file, "line": l.line, "col": l.col} for n, l in self.related],
            "severity": self.severity,
        }


DISTRIBUTION = "archspec-compiler"  # the name to install; the index's `archspec` is another project
# optional module -> the extra that installs it (pyproject.toml's optional-dependencies)
EXTRAS = {"torch": "torch", "onnx": "export", "onnxruntime": "export", "numpy": "export",
          "graphviz": "graph", "matplotlib": "plot"}


def install_hint(extra: str) -> str:
    """How to install an extra: from a clone (the documented way), and by the distribution's name."""
    return (f"install the '{extra}' extra: pip install -e '.[{extra}]' in a clone of archspec "
            f"(the distribution is named {DISTRIBUTION}; 'archspec' on the package index is another project)")


def missing_extra(exc: ImportError, what: str) -> str | None:
    """`what needs X, which is not installed: install the 'torch' extra ...`, for an optional module."""
    root = (exc.name or "").split(".")[0]
    if root not in EXTRAS:
        return None
    return f"{what} needs {root}, which is not installed; {install_hint(EXTRAS[root])}"


class ArchspecError(Exception):
    """Base of every error archspec raises on purpose; anything else is a bug in archspec."""


class SpecError(ArchspecError):
    """One or more located problems in a spec; `diagnostics` holds all of them."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        self.sources: dict[str, str] = {}  # file -> the text it was read as, for printing source lines
        first = self.diagnostics[0] if self.diagnostics else None
        super().__init__(f"{first.loc}: error[{first.code}]: {first.message}" if first else "invalid spec")


class MissingExtraError(ArchspecError):
    """A command or function needs an optional extra that is not installed (a usage problem, exit 2)."""


class InternalError(ArchspecError):
    """A failure that is archspec's bug, not the user's; names the layer and its source line."""


MAX_DIAGNOSTICS = 100  # per stage and file


def call_note(block: str) -> str:
    """The note that says which invocation of a block a diagnostic inside its body came from."""
    return f"in block '{block}' invoked here"


def _is_call_note(note: str) -> bool:
    return note.startswith("in block '") and note.endswith("' invoked here")


@dataclass
class Collector:
    """Accumulates the diagnostics of one stage; `raise_if_any` ends the stage.

    A mistake inside a block definition is hit once per invocation: those diagnostics differ only
    in their call notes, so they fold into one, at the definition, with every invocation as a note."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    _index: dict[tuple, int] = field(default_factory=dict)

    def add(self, code: str, message: str, loc: Loc, path: str = "", hint: str = "",
            related: tuple[tuple[str, Loc], ...] = ()) -> None:
        key = (code, message, loc, path, hint, tuple(r for r in related if not _is_call_note(r[0])))
        if key in self._index:
            i = self._index[key]
            old = self.diagnostics[i]
            new = tuple(r for r in related if r not in old.related)
            if new:
                self.diagnostics[i] = replace(old, related=old.related + new)
            return
        if len(self.diagnostics) >= MAX_DIAGNOSTICS:  # a hostile file must not become a log bomb
            if len(self.diagnostics) == MAX_DIAGNOSTICS:
                self.diagnostics.append(Diagnostic("AS002", f"more than {MAX_DIAGNOSTICS} errors; stopped reporting",
                                                   loc, hint="fix these first"))
            return
        self._index[key] = len(self.diagnostics)
        self.diagnostics.append(Diagnostic(code, message, loc, path, hint, related))

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise SpecError(self.diagnostics)


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The closest valid name to a misspelt one, or None when nothing is close: by difflib's ratio, else
    the longest name that begins the word or that the word begins (`aux_head` for `aux`, `idx` for `i`:
    too short a match for the ratio, but a shared prefix says it)."""
    word, names = str(word), sorted(set(map(str, choices)))
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if close:
        return close[0]
    prefixed = [n for n in names if n and word and (word.startswith(n) or n.startswith(word))]
    return max(prefixed, key=len) if prefixed else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`did you mean 'kernel'?` for the closest valid name, or '' when nothing is close."""
    close = closest(word, choices)
    return f"did you mean '{close}'?" if close else ""
