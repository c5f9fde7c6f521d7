"""Stage 1, load: bytes -> plain data with a source location for every node.

The tree is built from PyYAML's *event* stream, never from its constructors, so no tag can
build an object, aliases cannot expand (billion laughs), duplicate and merge keys are caught,
and nesting depth and node count are bounded while parsing (the C composer segfaults on deep
nesting; events are iterative). Plain scalars follow the YAML 1.2 core schema, and the
YAML 1.1 spellings that would read differently there (`no`, `010`, `1:30`) are rejected.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import Collector, Diagnostic, Loc, SpecError
from .files import STDIN, PathError, TooLarge, read_bytes
from .limits import CEILINGS, Limits

Path = tuple[str | int, ...]

_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_YAML11_BOOL = re.compile(r"^(yes|no|on|off)$", re.IGNORECASE)
_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_NONFINITE = re.compile(r"^[-+]?\.(inf|Inf|INF|nan|NaN|NAN)$")
_YAML11_INT = re.compile(r"^[-+]?(0[0-7]+|0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|[0-9][0-9_]*(:[0-5]?[0-9])+|[0-9]+_[0-9_]*)$")
_CORE_TAGS = {
    "tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}
MAX_INT_DIGITS = 30
# libyaml's event parser is iterative and ~10x faster than PyYAML's Python scanner. Only its
# *composer* recurses (and segfaults on deep nesting); we never compose, we read events.
_EVENT_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Document:
    """Parsed spec data plus where each value (and each mapping key) came from."""

    data: Any
    file: str
    text: str
    value_locs: dict[Path, Loc]
    key_locs: dict[Path, Loc]

    def loc(self, path: Path) -> Loc:
        """Location of the value at `path`, or of its nearest located ancestor."""
        while path:
            if path in self.value_locs:
                return self.value_locs[path]
            path = path[:-1]
        return self.value_locs.get((), Loc(self.file, 1, 1))

    def key_loc(self, path: Path) -> Loc:
        return self.key_locs.get(path) or self.loc(path)

    def source_line(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_file(path: str | os.PathLike, limits: Limits | None = None, *, stdin: bool = False) -> Document:
    """Reads a spec file, once and size-capped (archspec.files); with `stdin`, `-` is standard
    input, named `<stdin>` in diagnostics. A missing file raises files.PathError; one that exists
    but cannot be read as a file is an AS001 diagnostic."""
    limits = limits or Limits()
    name = os.fspath(path)
    shown = "<stdin>" if stdin and name == STDIN else name
    try:
        raw = read_bytes(name, limits.max_file_bytes, stdin=stdin)
    except TooLarge as exc:
        raise SpecError([_limit(shown, "file size", exc.size, limits.max_file_bytes, "--max-file-bytes")]) from None
    except PathError as exc:
        if exc.missing:
            raise
        raise SpecError([Diagnostic("AS001", f"cannot read spec: {exc.problem}", Loc(shown))]) from None
    return load_bytes(raw, shown, limits)


def load_text(text: str, file: str = "<string>", limits: Limits | None = None) -> Document:
    return load_bytes(text.encode("utf-8"), file, limits)


def load_bytes(raw: bytes, file: str, limits: Limits | None = None) -> Document:
    limits = limits or Limits()
    if len(raw) > limits.max_file_bytes:
        raise SpecError([_limit(file, "file size", len(raw), limits.max_file_bytes, "--max-file-bytes")])
    text = _decode(raw, file)
    try:
        return _Builder(text, file, limits).build()
    except SpecError as exc:
        exc.sources.setdefault(file, text)
        raise


def _limit(file: str, what: str, got: int, limit: int, flag: str) -> Diagnostic:
    return Diagnostic("AS002", f"{what} {got:,} exceeds the limit of {limit:,}", Loc(file, 1, 1),
                      hint=f"raise it with {flag} if this spec is trusted")


def _decode(raw: bytes, file: str) -> str:
    c = Collector()
    # byte-order marks, or the NUL pattern of UTF-16/32 text that starts with an ASCII character
    # (how YAML 1.2 §5.2 detects the encoding of a stream without a BOM)
    head = raw[:4]
    if raw.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")) or (
            len(head) >= 2 and ((head[0] == 0) != (head[1] == 0) or head[:3] == b"\0\0\0")):
        c.add("AS017", "file is UTF-16 or UTF-32 encoded; archspec reads UTF-8", Loc(file, 1, 1),
              hint="save the file as UTF-8")
        c.raise_if_any()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark is harmless: drop it
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        line_start = before[before.rfind(b"\n") + 1:]
        col = len(line_start.decode("utf-8", errors="replace")) + 1  # characters, as editors count
        c.add("AS017", f"byte 0x{raw[exc.start]:02x} is not valid UTF-8", Loc(file, line, col),
              hint="save the file as UTF-8")
        error = SpecError(c.diagnostics)
        error.sources[file] = raw.decode("utf-8", errors="replace")  # the line shown under the error
        raise error from None


class _Frame:
    """An open mapping or sequence while its events stream in."""

    __slots__ = ("container", "key", "key_loc", "path", "wants_key")

    def __init__(self, container: Any, path: Path):
        self.container, self.path = container, path
        self.key: str | None = None
        self.key_loc: Loc | None = None
        self.wants_key = isinstance(container, dict)

    def child_path(self) -> Path:
        return self.path + ((self.key,) if isinstance(self.container, dict) else (len(self.container),))

    def attach(self, value: Any) -> None:
        if isinstance(self.container, dict):
            self.container[self.key] = value
            self.wants_key = True
        else:
            self.container.append(value)


class _Builder:
    """Turns the event stream into dicts, lists and scalars, recording locations."""

    def __init__(self, text: str, file: str, limits: Limits, loader: Any = _EVENT_LOADER):
        self.text, self.file, self.limits, self.loader = text, file, limits, loader
        self.value_locs: dict[Path, Loc] = {}
        self.key_locs: dict[Path, Loc] = {}
        self.errors = Collector()

    def loc(self, mark: Any) -> Loc:
        return Loc(self.file, mark.line + 1, mark.column + 1)

    def build(self) -> Document:
        try:
            data = self._build()
        except yaml.reader.ReaderError as exc:  # a control character: located by its offset
            before = self.text[: exc.position]
            loc = Loc(self.file, before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)
            char = exc.character if isinstance(exc.character, str) else chr(exc.character)
            self.errors.add("AS010", f"control character {char!r} is not allowed in YAML", loc,
                            hint="remove it; specs are plain text")
            data = None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            context = getattr(exc, "context", None)
            msg = f"YAML syntax: {problem}" + (f" ({context})" if context else "")
            loc = self.loc(mark) if mark is not None else Loc(self.file, 1, 1)
            if "nesting depth" in str(problem) and self.loader is not yaml.SafeLoader:
                # libyaml reads ahead to its own cap (1000); PyYAML's streaming parser stops at ours.
                return _Builder(self.text, self.file, self.limits, yaml.SafeLoader).build()
            tab = "'\\t'" in msg or (mark is not None and self.text[mark.index:mark.index + 1] == "\t")
            if tab:
                msg = "YAML syntax: a tab ('\\t') where YAML allows only spaces"
            hint = "YAML does not allow tabs for indentation; use spaces" if tab else self._syntax_hint(exc, mark)
            self.errors.add("AS010", msg, loc, hint=hint)
            data = None
        self.errors.raise_if_any()
        return Document(data, self.file, self.text, self.value_locs, self.key_locs)

    def _syntax_hint(self, exc: yaml.YAMLError, mark: Any) -> str:
        """PyYAML names the symptom; the usual causes are an unclosed bracket (where it opened) and a
        line indented unlike its neighbours."""
        opened = getattr(exc, "context_mark", None)
        context = getattr(exc, "context", None) or ""
        if "flow" in context and opened is not None and mark is not None and opened.line != mark.line:
            bracket = self.text[opened.index:opened.index + 1]
            return (f"the `{bracket}` opened at line {opened.line + 1}, column {opened.column + 1} is still open here: "
                    "close it, or separate its entries with `,`")
        problem = getattr(exc, "problem", None) or ""
        if mark is None or not ("mapping values are not allowed" in problem or "expected key" in problem):
            return ""
        lines = self.text.splitlines()
        here = lines[mark.line] if mark.line < len(lines) else ""
        above = next((line for line in reversed(lines[:mark.line]) if line.strip() and not line.lstrip().startswith("#")), None)
        if above is None:
            return ""
        indent, before = len(here) - len(here.lstrip(" ")), len(above) - len(above.lstrip(" "))
        if indent == before:
            return ""
        return (f"check the indentation: this line starts at column {indent + 1}, the line above at column "
                f"{before + 1}; the items of one list, and the keys of one mapping, start in the same column")

    def _build(self) -> Any:
        # Iterative over events: depth is bounded by limits, not by Python's stack.
        stack: list[_Frame] = []
        root: Any = None
        documents = nodes = 0
        for ev in yaml.parse(self.text, Loader=self.loader):
            if isinstance(ev, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    return self._fail("AS016", "several YAML documents in one file; a spec is one document",
                                      ev, "remove the '---' separator and what follows")
                continue
            if isinstance(ev, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)):
                continue
            if isinstance(ev, yaml.CollectionEndEvent):
                stack.pop()
                continue
            if isinstance(ev, yaml.AliasEvent):
                return self._fail("AS014", f"aliases (*{ev.anchor}) are not supported", ev,
                                  "define a block under `blocks:` and invoke it instead")
            nodes += 1
            if nodes > self.limits.max_yaml_nodes:
                return self._fail("AS002", f"more than {self.limits.max_yaml_nodes:,} YAML nodes", ev,
                                  "raise it with --max-yaml-nodes if this spec is trusted")
            if ev.tag and ev.tag not in _CORE_TAGS and ev.tag != "!":
                return self._fail("AS011", f"tag {ev.tag!r} is not allowed; specs are plain data", ev,
                                  "remove the tag")
            frame = stack[-1] if stack else None
            if frame is not None and frame.wants_key:
                if not isinstance(ev, yaml.ScalarEvent):
                    return self._fail("AS103", "mapping keys must be plain names", ev, "")
                if ev.value == "<<" and not ev.style:
                    return self._fail("AS013", "merge keys (<<) are not supported", ev,
                                      "define a block under `blocks:` and invoke it instead")
                self._key(frame, ev)
                continue
            path = frame.child_path() if frame is not None else ()
            if isinstance(ev, yaml.ScalarEvent):
                value: Any = self._scalar(ev, path)
            elif len(stack) >= self.limits.max_depth:
                return self._fail("AS002", f"nesting deeper than {self.limits.max_depth} levels", ev,
                                  f"raise it with --max-depth (at most {CEILINGS['max_depth']}) if this spec is trusted")
            else:
                value = {} if isinstance(ev, yaml.MappingStartEvent) else []
            self.value_locs[path] = self.loc(ev.start_mark)
            if frame is None:
                root = value
            else:
                frame.attach(value)
                if frame.key_loc is not None:
                    self.key_locs[path] = frame.key_loc
            if isinstance(ev, yaml.CollectionStartEvent):
                stack.append(_Frame(value, path))
        return root

    def _key(self, frame: _Frame, ev: Any) -> None:
        key, kloc = ev.value, self.loc(ev.start_mark)
        if key in frame.container:
            first = self.key_locs.get(frame.path + (key,))
            self.errors.add("AS012", f"duplicate key '{key}'", kloc, path=format_path(frame.path + (key,)),
                            hint="YAML would silently keep only the last one; remove one",
                            related=(("first defined here", first),) if first else ())
        frame.key, frame.key_loc, frame.wants_key = key, kloc, False

    def _fail(self, code: str, message: str, ev: Any, hint: str) -> None:
        self.errors.add(code, message, self.loc(ev.start_mark), hint=hint)

    def _scalar(self, ev: Any, path: Path) -> Any:
        value: str = ev.value
        loc = self.loc(ev.start_mark)
        tag = ev.tag
        if tag is not None and tag not in ("!", "tag:yaml.org,2002:str"):
            return self._typed_scalar(value, tag, loc, path)
        if ev.style or tag is not None:
            return value  # quoted (or !!str): always a string
        if value in _NULL:
            return None
        if value in _BOOL:
            return _BOOL[value]
        if _YAML11_BOOL.match(value):
            self._ambiguous(value, loc, path, "a boolean in YAML 1.1 and a string in YAML 1.2",
                            "write true/false, or quote it if you mean the word")
            return value
        if _INT.match(value):
            return self._int(value, loc, path)
        if _NONFINITE.match(value):
            self.errors.add("AS104", f"non-finite number {value!r} is not allowed", loc, path=format_path(path))
            return value
        if _FLOAT.match(value):
            number = float(value)
            if not math.isfinite(number):
                self.errors.add("AS104", f"number {value!r} is out of range", loc, path=format_path(path))
                return 0.0
            return number
        if _YAML11_INT.match(value):
            why = ("a number in YAML 1.1 (base 60) and a string in YAML 1.2" if ":" in value
                   else "read differently by YAML 1.1 and YAML 1.2 parsers")
            self._ambiguous(value, loc, path, why, "write a plain decimal number, or quote it if you mean text")
            return value
        return value

    def _int(self, value: str, loc: Loc, path: Path) -> Any:
        digits = value.lstrip("+-")
        if len(digits) > 1 and digits.startswith("0"):
            self._ambiguous(value, loc, path, "octal in YAML 1.1 and decimal in YAML 1.2",
                            f"write {int(digits)} without the leading zero")
            return value
        if len(digits) > MAX_INT_DIGITS:
            self.errors.add("AS104", f"integer with {len(digits):,} digits is out of range "
                            f"(at most {MAX_INT_DIGITS})", loc, path=format_path(path))
            return 0
        return int(value)

    def _typed_scalar(self, value: str, tag: str, loc: Loc, path: Path) -> Any:
        kind = tag.rsplit(":", 1)[-1]
        if kind == "null":
            return None
        if kind == "bool" and value in _BOOL:
            return _BOOL[value]
        if kind == "int" and _INT.match(value):
            return self._int(value, loc, path)
        if kind == "float" and _FLOAT.match(value) and math.isfinite(float(value)):
            return float(value)
        self.errors.add("AS103", f"{value!r} is not a valid !!{kind}", loc, path=format_path(path))
        return value

    def _ambiguous(self, value: str, loc: Loc, path: Path, why: str, hint: str) -> None:
        self.errors.add("AS015", f"{value!r} is {why}", loc, path=format_path(path), hint=hint)


class _CanonicalDumper(yaml.SafeDumper):
    """Block-style YAML that this loader reads back exactly: a string that would read as anything
    else here or under YAML 1.1 (`1e5`, `no`, `010`, `1:30`) is quoted; PyYAML's own dumper
    leaves some of them bare."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    plain_reads_otherwise = (text in _NULL or text in _BOOL or bool(_YAML11_BOOL.match(text)) or bool(
        _INT.match(text) or _FLOAT.match(text) or _NONFINITE.match(text) or _YAML11_INT.match(text)))
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="'" if plain_reads_otherwise else None)


_CanonicalDumper.add_representer(str, _represent_str)


def dump(data: Any) -> str:
    """Canonical YAML for spec data (keys in their order); `load_text(dump(d)).data == d`."""
    return yaml.dump(data, Dumper=_CanonicalDumper, sort_keys=False, allow_unicode=True, width=100)
