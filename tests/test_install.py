"""The documented install and pre-commit set-ups, run as written in docs/ci.md.

The only substitution is the repository's address: the docs name `https://github.com/<org>/archspec`,
these tests a scratch clone of the working tree, tagged with the release command the docs give.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import archspec

ROOT = Path(__file__).resolve().parent.parent
CI_DOC = (ROOT / "docs" / "ci.md").read_text()
URL = "https://github.com/<org>/archspec"
ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to clone and tag")


def _block(lang: str, containing: str) -> str:
    """The fenced block of docs/ci.md in `lang` that contains `containing`."""
    blocks = [b for b in re.findall(rf"```{lang}\n(.*?)```", CI_DOC, re.S) if containing in b]
    assert len(blocks) == 1, f"docs/ci.md should have one ```{lang} block with {containing!r}"
    return blocks[0]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the working tree (committed or not), tagged by the documented release command."""
    clone = tmp_path_factory.mktemp("release") / "archspec"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, clone / rel)
    _git("init", "-q", "-b", "main", cwd=clone)
    _git("add", "-A", cwd=clone)
    _git("commit", "-q", "-m", "release", cwd=clone)
    tag = _block("sh", "git tag").strip().split(" && git push")[0]
    subprocess.run(tag, shell=True, cwd=clone, env=ENV, check=True)  # the docs' own command
    return clone


def test_documented_release_tag_is_the_version() -> None:
    rev = re.search(r"rev: (\S+)", _block("yaml", "archspec-check")).group(1)
    pip_rev = re.search(r"archspec@(\S+?)\"", _block("sh", "pip install")).group(1)
    pyproject = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert rev == pip_rev == f"v{archspec.__version__}" == f"v{pyproject}"
    assert f'-m "archspec {pyproject}"' in _block("sh", "git tag")


def test_documented_checker_install_in_a_fresh_venv(released: Path, tmp_path: Path) -> None:
    """`pip install "archspec-compiler @ git+...@v0.1.0"` gives the `archspec` command, without torch,
    and the workflow's check step annotates a bad spec."""
    install = _block("sh", "pip install").strip()
    assert install.startswith("pip install ") and URL in install
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    command = install.replace("pip install", f"{bin_dir / 'pip'} install -q", 1).replace(URL, f"file://localhost{released}")
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    py = str(bin_dir / "python")
    probe = ("import importlib.metadata as m, importlib.util as u; "
             "print(m.version('archspec-compiler'), u.find_spec('torch') is None, u.find_spec('onnx') is None)")
    assert subprocess.run([py, "-c", probe], capture_output=True, text=True).stdout.split() == \
        [archspec.__version__, "True", "True"]

    work = tmp_path / "user"
    (work / "specs").mkdir(parents=True)
    shutil.copy(ROOT / "specs" / "resnet18.yaml", work / "specs")
    step = re.search(r"- run: (archspec check .*)", _block("yaml", "actions/checkout")).group(1)
    ok = subprocess.run(step.replace("archspec", str(bin_dir / "archspec"), 1), shell=True, cwd=work,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == "", ok.stdout + ok.stderr
    (work / "specs" / "bad.yaml").write_text((ROOT / "specs" / "lenet.yaml").read_text()
                                             .replace("kernel: 5", "kernal: 5", 1))
    bad = subprocess.run(step.replace("archspec", str(bin_dir / "archspec"), 1), shell=True, cwd=work,
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [line for line in bad.stdout.splitlines() if line.startswith("::error ")]
    assert len(bad.stdout.splitlines()) == 1 and "file=specs/bad.yaml" in bad.stdout and "[AS101]" in bad.stdout
    # Export says which extra it needs (`export`: onnx, onnxruntime, numpy; no torch), instead of a traceback.
    export = subprocess.run([str(bin_dir / "archspec"), "export", "specs/resnet18.yaml", "-o", "r.onnx"],
                            cwd=work, capture_output=True, text=True)
    assert export.returncode == 2 and "Traceback" not in export.stderr
    assert "'export' extra" in export.stderr and "archspec-compiler" in export.stderr


def test_documented_pre_commit_config(released: Path, tmp_path: Path) -> None:
    """docs/ci.md's .pre-commit-config.yaml, run by pre-commit itself, passes a valid spec and blocks a bad one."""
    pre_commit = Path(sys.executable).with_name("pre-commit")
    if not pre_commit.exists():
        pytest.fail("pre-commit is not installed (it comes with the test extra)")
    repo = tmp_path / "user-repo"
    (repo / "specs").mkdir(parents=True)
    env = {**ENV, "PRE_COMMIT_HOME": str(tmp_path / "cache")}
    _git("init", "-q", cwd=repo)
    config = _block("yaml", "archspec-check")
    assert URL in config
    (repo / ".pre-commit-config.yaml").write_text(config.replace(URL, str(released)))
    shutil.copy(ROOT / "specs" / "lenet.yaml", repo / "specs" / "good.yaml")
    _git("add", "-A", cwd=repo)
    hook = [str(pre_commit), "run", "--all-files"]
    good = subprocess.run(hook, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert good.returncode == 0, good.stdout + good.stderr
    (repo / "specs" / "bad.yaml").write_text((ROOT / "specs" / "lenet.yaml").read_text()
                                             .replace("kernel: 5", "kernal: 5", 1))
    _git("add", "-A", cwd=repo)
    bad = subprocess.run(hook, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "specs/bad.yaml" in bad.stdout and "AS101" in bad.stdout and "did you mean 'kernel'" in bad.stdout


def test_install_hints_name_real_extras_of_this_distribution() -> None:
    """Error hints say `pip install -e '.[EXTRA]'` and name the distribution: both must exist."""
    import tomllib

    from archspec.errors import DISTRIBUTION, EXTRAS, install_hint

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION and project["scripts"] == {"archspec": "archspec.cli:main"}
    for extra in {*EXTRAS.values(), "gpu"}:
        assert extra in project["optional-dependencies"], extra
        assert f"pip install -e '.[{extra}]'" in install_hint(extra)
    for module, extra in EXTRAS.items():  # each module is what its extra installs
        assert any(dep.split(">")[0].split("=")[0].replace("-gpu", "") == module
                   for dep in project["optional-dependencies"][extra]), (module, extra)
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert not re.search(r"pip install ['\"]?archspec(\[|['\"]?\s|$)", doc.read_text(), re.M), doc
