"""Atomic writes: a file or a whole folder appears complete, or not at all.

Everything the package writes (maps, intervention sets, reports, the model cache) goes through
here. A folder is built in a hidden temporary sibling, every file is fsynced, and only then is
it renamed into place. Replacing an existing folder takes two renames (old folder aside, new
one in) and then deletes the old one; an interruption between them leaves the old folder under
``.<name>.old-<pid>`` beside the target, never a mixture of old and new files. A failed or
interrupted build deletes its temporary folder.

Why hand-written: ``os.replace`` is atomic for files only, and no maintained library we depend
on replaces a directory tree (the usual recipe, temp + fsync + rename, is the one used here).
"""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


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


def fsync_tree(folder: Path) -> None:
    """Persist every file and folder entry below ``folder``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for path in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        fsync_dir(path)


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


def check_target(path: Path, *, overwrite: bool, owned: Callable[[Path], bool]) -> None:
    """Raise unless a folder may be written at ``path``: it is absent, an empty folder, one of
    ours (``owned``), or ``overwrite`` is set. A file in the way is an error either way."""
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is a file, not a folder; choose another path")
    if overwrite or not any(path.iterdir()) or owned(path):
        return
    raise FileExistsError(
        f"{path} is a non-empty folder that tl_ot_ablation did not write; choose another path, "
        "or pass overwrite=True (CLI: --force) to replace it whole"
    )


@contextlib.contextmanager
def folder(
    path: str | Path, *, overwrite: bool = False, owned: Callable[[Path], bool] = lambda _: False
) -> Iterator[Path]:
    """Build a folder atomically: yields an empty temporary folder to fill; on a clean exit it
    replaces ``path`` whole (stale files of an earlier write do not survive).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out"
        >>> with folder(target) as tmp:
        ...     _ = (tmp / "a.txt").write_text("new")
        >>> sorted(p.name for p in target.iterdir())
        ['a.txt']
    """
    path = Path(path)
    check_target(path, overwrite=overwrite, owned=owned)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield temp
        fsync_tree(temp)
        if path.exists():
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
        else:
            os.replace(temp, path)
            fsync_dir(path.parent)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
