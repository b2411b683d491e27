"""Atomic writes: a file or a whole folder appears complete, or not at all.

Everything the package writes (maps, intervention sets, reports, the model cache) goes through
here. A folder is built in a hidden temporary sibling, every file is fsynced, a manifest of its
files is added (``io.manifest``), and only then is it renamed into place. Replacing an
existing folder takes two renames (old folder aside, new one in) and then deletes the old one;
an interruption between them leaves the old folder under ``.<name>.old-<pid>`` beside the
target, never a mixture of old and new files. A failed or interrupted build deletes its
temporary folder.

Rules that keep a user's work safe:

- a folder is replaced only if every file in it is one the package wrote and has not changed
  since (its manifest says so), or with ``overwrite``; a user's file is never deleted silently;
- ``check_target`` also proves the place writable (a read-only file system, a dangling link, a
  path under a file), so a job can check it before hours of work rather than after;
- ``claim`` holds a lock beside the target for a whole run, so two runs writing the same folder
  cannot replace each other's result: the second is refused before it starts.

Files and folders get the modes the umask allows, as ``open`` and ``mkdir`` would give them.

A cache entry (``entry``: one file or folder several processes may build at once) takes the
same steps without a manifest; the first finished copy wins. Its partial is named by its pid,
so a partial that a killed process left behind can be told apart and deleted (``remove_orphans``).

Why hand-written: ``os.replace`` is atomic for files only, and no maintained library we depend
on replaces a directory tree (the usual recipe, temp + fsync + rename, is the one used here).
"""

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import UserInputError
from .manifest import MANIFEST_NAME, foreign_files, write_manifest


def fsync_dir(folder: Path) -> None:
    """Persist a folder's entries (renames, new files); a no-op where directories can't open."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Persist a file's contents."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def fsync_tree(folder: Path) -> None:
    """Persist every file and folder entry below ``folder``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fsync_file(path)
    for path in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        fsync_dir(path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_modes(path: Path) -> None:
    """Give ``path`` (a file, or a folder and all below it) the modes the umask allows:
    ``mkstemp``/``mkdtemp`` create them private (0600 / 0700)."""
    mask = _umask()
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not item.is_symlink():
            item.chmod((0o777 if item.is_dir() else 0o666) & ~mask)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _default_modes(Path(temp))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


class OutputError(UserInputError):
    """The output folder cannot or may not be written (bad input: choose another path)."""


class OutputInUse(OutputError, FileExistsError):
    """Something is in the way at the output path: a file, another run, or a user's files."""


def _check_writable(path: Path) -> None:
    """Raise ``OutputError`` unless a folder can be created at ``path``: its nearest existing
    ancestor is a folder we may write into (read-only file systems are found by trying)."""
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{path} is a link to nothing ({os.readlink(path)}); choose another path")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():
            raise OutputError(f"{ancestor} is a link to nothing; choose another path")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{path} lies under {ancestor}, which is a file; choose another path")
    try:
        probe = tempfile.mkdtemp(prefix=".tl_ot_ablation-probe-", dir=ancestor)
    except OSError as err:
        raise OutputError(
            f"cannot write under {ancestor} ({err.strerror or err}); choose another path"
        ) from err
    os.rmdir(probe)


def check_target(path: str | Path, *, overwrite: bool) -> None:
    """Raise ``OutputError`` unless a folder may be written at ``path``: it is absent, an empty
    folder, one the package wrote and nobody changed since (its manifest), or ``overwrite`` is
    set; and its place is writable. A file in the way is an error either way."""
    path = Path(path)
    _check_writable(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputInUse(f"{path} exists and is a file, not a folder; choose another path")
    if overwrite or not any(path.iterdir()):
        return
    foreign = foreign_files(path)
    if foreign == []:
        return
    fix = "choose another path, or pass overwrite=True (CLI: --force) to replace it whole"
    if foreign is None:
        raise OutputInUse(
            f"{path} is a non-empty folder without a tl_ot_ablation {MANIFEST_NAME} (not ours, "
            f"or written by an older version); {fix}"
        )
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise OutputInUse(
        f"{path} holds files tl_ot_ablation did not write (or that were changed since): "
        f"{shown}; they would be deleted. Move them out, {fix}"
    )


def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


LOCK_GRACE_SECONDS = 10.0
"""A lock file younger than this without a pid yet is being written by its owner, not stale."""


def _lock_owner(lock: Path) -> int | None:
    """The pid recorded in ``lock`` if that process still runs, else ``None`` (stale); ``-1``
    for a lock just created whose pid is not written yet."""
    try:
        text = lock.read_text().strip()
        pid = int(text or "0")
    except (OSError, ValueError):
        return None
    if pid <= 0:
        try:
            young = time.time() - lock.stat().st_mtime < LOCK_GRACE_SECONDS
        except OSError:
            return None
        return -1 if young and not text else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's
    return pid


@contextlib.contextmanager
def claim(path: str | Path) -> Iterator[None]:
    """Hold ``path`` for this process until the block ends (a lock file beside it).

    A second process claiming the same path meanwhile gets ``OutputInUse`` at once, before it
    spends any work; a lock left by a process that died is taken over. Claims nest within one
    process (the job claims, then its final write claims again).
    """
    path = Path(path)
    lock = _lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner == os.getpid():
                yield  # nested claim: the outer one releases
                return
            if owner is not None:
                who = "another run" if owner < 0 else f"another run (pid {owner})"
                raise OutputInUse(
                    f"{who} is writing {path}; wait for it to finish, or choose another path "
                    f"(its lock is {lock})"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        return
    raise OutputError(f"could not lock {path} (another run keeps taking {lock}); try again")


@contextlib.contextmanager
def folder(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder atomically: yields an empty temporary folder to fill; on a clean exit it
    adds the manifest and replaces ``path`` whole (stale files of an earlier write do not
    survive). ``path`` must pass ``check_target`` both before and after the build.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out"
        >>> with folder(target) as tmp:
        ...     _ = (tmp / "a.txt").write_text("new")
        >>> sorted(p.name for p in target.iterdir())
        ['a.txt', 'manifest.json']
    """
    path = Path(path)
    check_target(path, overwrite=overwrite)
    with claim(path):
        temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            yield temp
            write_manifest(temp)
            _default_modes(temp)
            fsync_tree(temp)
            _move_into_place(temp, _still_ours(path, temp, overwrite=overwrite))
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)


def _still_ours(path: Path, temp: Path, *, overwrite: bool) -> Path:
    """``path`` if it may still be replaced; if a user put files there while the folder was
    being built, the finished folder goes to a free sibling instead (never lost) and
    ``OutputError`` says where."""
    try:
        check_target(path, overwrite=overwrite)
    except OutputError as err:
        aside = next(
            candidate
            for n in range(1, 10_000)
            if not (candidate := path.with_name(f"{path.name}-{n}")).exists()
        )
        os.replace(temp, aside)
        raise OutputInUse(f"{err}. The finished result was saved to {aside} instead.") from err
    return path


def _move_into_place(temp: Path, path: Path) -> None:
    """Rename ``temp`` to ``path``, the old folder there (if any) aside first, then gone."""
    if not path.exists():
        os.replace(temp, path)
        fsync_dir(path.parent)
        return
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if old.exists():
        shutil.rmtree(old)
    os.replace(path, old)
    try:
        os.replace(temp, path)
    except BaseException:
        os.replace(old, path)  # put the old folder back: nothing is lost
        raise
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


_PARTIAL = re.compile(r"\.partial-(\d+)$")
ORPHAN_AGE_S = 24 * 3600
"""A partial older than this is an orphan even if a process with its pid runs (pids recycle)."""


def partial_path(path: Path) -> Path:
    """The temporary sibling this process builds ``path`` in: ``<name>.partial-<pid>``."""
    return path.with_name(f"{path.name}.partial-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (on Windows, where signal 0 would kill it: assume so)."""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, as another user's
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_orphans(folder: Path, *, max_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Delete the ``*.partial-<pid>`` files and folders in ``folder`` that no running process
    is writing: their pid is gone, or they are older than ``max_age_s``. Returns what was
    deleted; a partial of a live process is kept (it may be mid-write)."""
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        match = _PARTIAL.search(path.name)
        if match is None:
            continue
        try:
            age = time.time() - path.lstat().st_mtime
        except FileNotFoundError:  # its writer just renamed or removed it
            continue
        if age > max_age_s or not _pid_alive(int(match.group(1))):
            _remove(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def entry(path: Path) -> Iterator[Path]:
    """Build one file or folder at ``path`` atomically: yields the partial path to create it at
    (``partial_path``); on a clean exit it is fsynced and renamed into place (unless another
    process got there first: a folder cannot replace a non-empty one, so theirs is kept), on
    any failure deleted. No manifest is added (see ``folder`` for outputs).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "blob.bin"
        >>> with entry(target) as partial:
        ...     _ = partial.write_bytes(b"data")
        >>> target.read_bytes(), sorted(p.name for p in target.parent.iterdir())
        (b'data', ['blob.bin'])
    """
    partial = partial_path(path)
    _remove(partial)
    try:
        yield partial
        if partial.is_dir():
            fsync_tree(partial)
        else:
            fsync_file(partial)
        try:
            os.replace(partial, path)
        except OSError:  # a folder cannot replace a non-empty one
            if not path.exists():
                raise
            # Another process finished first: keep its copy; ours is deleted below.
        fsync_dir(path.parent)
    finally:
        _remove(partial)


def discard(path: Path) -> None:
    """Take an entry out of use: rename it to this process's partial (one atomic step, so no
    other reader sees half of it; one that has it open keeps its copy), then delete it."""
    aside = partial_path(path)
    _remove(aside)
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another process discarded it first
        return
    _remove(aside)
