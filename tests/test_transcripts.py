"""The docs' console transcripts run, so the docs cannot drift from what archspec prints.

The convention, for README.md and docs/*.md (stated in README.md, "Documentation"):

- A ```console block is a transcript. A line starting with `$ ` is a command; the lines after it, up
  to the next command or the block's end, are what it prints (stdout and stderr, as a terminal
  shows them). No lines shown: only the exit status is checked.
- Output is compared line by line, trailing spaces and trailing blank lines aside. A line that is
  just `...` stands for any number of lines; `...` inside a line for any text in that line. So a
  transcript states exactly which part of the output it vouches for.
- A command whose shown output reports an error (`error[AS...]` or `archspec: error:`) must fail;
  every other command must succeed.
- `$ archspec ...` and `$ python ...` commands run (a trailing `# comment` is prose); others, such
  as `pip`, are shown only. ```sh blocks are shown only.
- A document's blocks run in order in one scratch folder holding a copy of `specs/`. A ```yaml
  block whose first line is `# NAME.yaml` is written to NAME.yaml there, and a ```python block is
  run as a script there. `<!-- transcript: write NEW from OLD replacing "A" with "B" -->` writes a
  variant of a file (the mistake that a transcript then shows).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ARCHSPEC = Path(sys.executable).with_name("archspec")
FENCE = re.compile(r"^```(\w*)\s*$")
VARIANT = re.compile(r'^<!-- transcript: write (\S+) from (\S+) replacing "(.+)" with "(.*)" -->$')
FAILED = re.compile(r"error\[AS\d+\]|^archspec: error:", re.M)


@dataclass(frozen=True)
class Step:
    kind: str  # "command", "file", "python", "variant"
    line: int  # where it is in the document, for the failure message
    text: str  # the command, the file's content, the script, or the variant's source name
    expected: tuple[str, ...] = ()
    name: str = ""  # the file a "file" or "variant" step writes
    replace: tuple[str, str] = ("", "")


def steps(doc: Path) -> list[Step]:
    out: list[Step] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if m := VARIANT.match(lines[i]):
            out.append(Step("variant", i + 1, m.group(2), name=m.group(1), replace=(m.group(3), m.group(4))))
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body, lang = lines[i + 1:end], fence.group(1)
        if lang == "console":
            for k, text in enumerate(body):
                if text.startswith("$ "):
                    shown = []
                    for more in body[k + 1:]:
                        if more.startswith("$ "):
                            break
                        shown.append(more)
                    out.append(Step("command", i + 2 + k, text[2:], tuple(shown)))
        elif lang == "yaml" and body and (m := re.match(r"# (\S+\.ya?ml)\b", body[0])):
            out.append(Step("file", i + 2, "\n".join(body) + "\n", name=m.group(1)))
        elif lang == "python":
            out.append(Step("python", i + 2, "\n".join(body) + "\n"))
        i = end + 1
    return out


def matches(expected: tuple[str, ...], actual: str) -> bool:
    pattern = []
    for line in _trim(list(expected)):
        if line.strip() == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*?".join(map(re.escape, line.rstrip().split("..."))) + r"\n")
    return re.fullmatch("".join(pattern), "".join(f"{x}\n" for x in _trim(actual.splitlines()))) is not None


def _trim(lines: list[str]) -> list[str]:
    lines = [x.rstrip() for x in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


DOCUMENTED = [d for d in DOCS if any(s.kind == "command" for s in steps(d))]


def test_the_transcripts_are_found() -> None:
    assert {d.name for d in DOCUMENTED} >= {"README.md", "tutorial.md"}


@pytest.mark.parametrize("doc", DOCUMENTED, ids=lambda d: d.name)
def test_transcript(doc: Path, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    where = doc.relative_to(ROOT)
    for step in steps(doc):
        if step.kind == "file":
            (tmp_path / step.name).write_text(step.text)
            continue
        if step.kind == "variant":
            source = (tmp_path / step.text).read_text()
            assert step.replace[0] in source, f"{where}:{step.line}: {step.text} has no {step.replace[0]!r}"
            (tmp_path / step.name).write_text(source.replace(step.replace[0], step.replace[1], 1))
            continue
        if step.kind == "python":
            done = subprocess.run([sys.executable, "-"], input=step.text, cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{where}:{step.line}: the python block failed:\n{done.stderr}"
            continue
        argv = shlex.split(step.text, comments=True)
        if argv[0] not in ("archspec", "python"):
            continue  # shown only (pip, ...)
        argv[0] = str(ARCHSPEC) if argv[0] == "archspec" else sys.executable
        done = subprocess.run(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=600)
        shown = "\n".join(step.expected)
        should_fail = bool(FAILED.search(shown))
        assert (done.returncode != 0) == should_fail, (
            f"{where}:{step.line}: `$ {step.text}` exited {done.returncode}:\n{done.stdout}")
        assert not _trim(list(step.expected)) or matches(step.expected, done.stdout), (
            f"{where}:{step.line}: `$ {step.text}` printed\n{done.stdout}\nbut the document shows\n{shown}")


@pytest.mark.parametrize("expected, actual, ok", [
    (("a", "b"), "a\nb\n\n", True),
    (("a", "b"), "a\nc\n", False),
    (("a", "...", "z"), "a\nb\nc\nz\n", True),
    (("a", "...", "z"), "a\nz\n", True),
    (("took ... ms",), "took 4.2 ms\n", True),
    (("took ... ms",), "took 4.2 s\n", False),
    (("a",), "a  \n", True),
    ((), "", True),
])
def test_matching_convention(expected: tuple[str, ...], actual: str, ok: bool) -> None:
    assert matches(expected, actual) is ok
