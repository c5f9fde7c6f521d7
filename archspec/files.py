"""Every file archspec reads or writes goes through here, so that what is touched is exactly what
the user named.

Reading: an argument is always a path (`-` is standard input where a command says so); only
regular files are read (a FIFO would block, `/dev/zero` never ends), and the size is checked
against a limit before any byte is read, then read once, never again for diagnostics.

Writing: an output path is a path, never a pattern. It may not be a folder, a device or anything
but a regular file (replacing it would turn `/dev/full` into a file), nor one of the command's
inputs (`export x.yaml -o x.yaml`). Writes are atomic: a temporary file in the destination folder,
fsynced, then renamed over the target. Only files this process created are removed, with one
exception said where it happens (`commit`: the data file of the model an export replaces).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import ArchspecError

STDIN = "-"
_CHUNK = 1 << 20


class PathError(ArchspecError):
    """A path that cannot be used as asked: missing, a folder, a device, the input itself."""

    def __init__(self, path: str, problem: str, *, missing: bool = False):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem, self.missing = path, problem, missing


class TooLarge(PathError):
    """A file over its size limit; `size` is what it holds, `limit` what is allowed."""

    def __init__(self, path: str, size: int, limit: int):
        super().__init__(path, f"{size:,} bytes exceed the limit of {limit:,}")
        self.size, self.limit = size, limit


# -- reading -------------------------------------------------------------------------------------

def read_bytes(path: str | os.PathLike, limit: int, *, stdin: bool = False) -> bytes:
    """The whole content of a regular file (or of standard input for `-` when `stdin`), at most
    `limit` bytes: a larger file is refused from its size alone, before it is read."""
    name = os.fspath(path)
    if stdin and name == STDIN:
        return _read_capped(sys.stdin.buffer, STDIN, limit)
    fd = _open_regular(name)
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fd).st_size
        if size > limit:
            raise TooLarge(name, size, limit)
        return _read_capped(fh, name, limit)  # a file growing while read is still capped


def regular_file(path: str | os.PathLike, limit: int | None = None) -> int:
    """Checks that `path` is a regular file no larger than `limit` (for readers that take a path,
    such as onnxruntime); returns its size."""
    name = os.fspath(path)
    fd = _open_regular(name)
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if limit is not None and size > limit:
        raise TooLarge(name, size, limit)
    return size


def _open_regular(name: str) -> int:
    if not name:
        raise PathError("''", "an empty path", missing=True)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise PathError(name, "no such file or folder", missing=True) from None
    except NotADirectoryError:
        raise PathError(name, "no such file or folder (a part of the path is a file)", missing=True) from None
    except OSError as exc:
        raise PathError(name, f"cannot read: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise PathError(name, "is a folder, not a file" if stat.S_ISDIR(mode) else
                        f"is {_kind(mode)}, not a regular file; archspec reads regular files only")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


def _read_capped(fh: BinaryIO, name: str, limit: int) -> bytes:
    parts, total = [], 0
    while True:
        chunk = fh.read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            raise TooLarge(name, total, limit)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


# -- writing -------------------------------------------------------------------------------------

def check_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
                 force: bool = True) -> Path:
    """Refuses an output that would destroy something nobody asked to replace: a folder, a device,
    FIFO or socket, one of the command's inputs, or (without `force`) any existing file."""
    out = Path(path)
    name = os.fspath(path)
    if not name or name == STDIN:
        raise PathError(repr(name), "is not a file name to write to")
    parent = out.parent
    if not parent.is_dir():
        raise PathError(name, f"cannot write: folder {parent} does not exist" if not parent.exists()
                        else f"cannot write: {parent} is not a folder", missing=True)
    try:
        st = os.stat(out)
    except FileNotFoundError:
        return out
    except OSError as exc:
        raise PathError(name, f"cannot write: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise PathError(name, f"is a folder; give a file name inside it, e.g. {out / 'model'}")
    if not stat.S_ISREG(st.st_mode):
        raise PathError(name, f"is {_kind(st.st_mode)}; archspec writes regular files only and will not replace it")
    for other in inputs:
        if other is not None and _same_file(out, other):
            raise PathError(name, f"is an input of this command ({os.fspath(other)}); "
                            "choose another output name")
    if not force:
        raise PathError(name, "exists; use --force to overwrite it")
    return out


def _same_file(a: Path, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], *,
                 inputs: Iterable[str | os.PathLike | None] = (), force: bool = True) -> None:
    """Writes `path` through a temporary file in its folder, renamed over it once complete, after
    `check_output`; an interrupted or failed write leaves the old file (or none) behind."""
    path = check_output(path, inputs=inputs, force=force)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise PathError(os.fspath(path), f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        raise PathError(os.fspath(path), f"cannot write: {exc.strerror or exc}") from None
    except BaseException:
        _unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, inputs: Iterable[str | os.PathLike | None] = (),
                      force: bool = True) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), inputs=inputs, force=force)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _unlink(path: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def make_public(path: Path) -> None:
    """Gives a file another library created private (0600) the usual mode, as a plain write would."""
    os.chmod(path, 0o666 & ~_umask())


# -- staging several files (a model and its external data) ------------------------------------

@contextlib.contextmanager
def staging(output: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `output`, `.<name>.<pid>.<random>.tmp`, removed on exit; what
    is staged there moves into place with `commit`. Such folders left by a killed process (its pid
    no longer running) are removed first: the exact name, a real folder, the same owner."""
    _remove_abandoned(output)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{output.name}.{os.getpid()}.", suffix=".tmp", dir=output.parent))
    except OSError as exc:
        raise PathError(os.fspath(output), f"cannot write in {output.parent}: {exc.strerror or exc}") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _staging_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"\." + re.escape(name) + r"\.([0-9]+)\.[A-Za-z0-9_]{8}\.tmp")  # mkdtemp's 8 characters


def _remove_abandoned(output: Path) -> None:
    pattern = _staging_pattern(output.name)
    try:
        entries = list(os.scandir(output.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_uid == os.getuid() and not _process_alive(int(match.group(1))):
                shutil.rmtree(entry.path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def commit(staged: Path, output: Path, *, data: Path | None = None,
           inputs: Iterable[str | os.PathLike | None] = (),
           data_of: Callable[[Path], Iterable[str]] = lambda _: ()) -> Path | None:
    """Moves a staged file (and its external data file, named uniquely) into place, data first,
    model last, so that at every moment the model at `output` names a complete data file. Commits
    into one folder are serialised by a lock on the folder itself (no lock file is created), so two
    exports to the same path cannot interleave. Afterwards the data files the *replaced* model
    named (`data_of(output)`, read under the lock) are removed: the one kind of file removed that
    this process did not create, because the user named the model it belongs to. Returns the data
    file's final path."""
    with _folder_lock(output.parent):
        check_output(output, inputs=inputs)
        previous = {output.with_name(n) for n in _quietly(data_of, output)
                    if Path(n).name == n and n.startswith(output.name + ".") and n.endswith(".data")}
        final = output.with_name(data.name) if data is not None else None
        try:
            if data is not None:
                os.replace(data, final)
            os.replace(staged, output)
        except BaseException:
            if final is not None:
                _unlink(final)  # the old pair stays as it was
            raise
        for old in previous - {final}:
            _unlink(old)
    return final


def _quietly(data_of: Callable[[Path], Iterable[str]], path: Path) -> list[str]:
    try:
        return list(data_of(path)) if path.is_file() else []
    except Exception:  # an unreadable old model: remove nothing
        return []


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
