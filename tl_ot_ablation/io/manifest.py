"""The manifest of a folder the package wrote: every file in it, with its size and SHA-256.

Two jobs rest on it:

- **ownership**: a folder may be replaced without ``overwrite`` only when every file in it is
  one the package wrote and still holds what was written (``foreign_files`` is empty), so a
  user's notebook or notes beside a report, or an edited ``report.md``, is never deleted;
- **integrity**: loading a saved set checks every file against the manifest
  (``verify_manifest``), sub-folders included, so a swapped or corrupted part cannot load.

The manifest names itself ``manifest.json`` and is written last, inside the temporary folder,
just before the folder is renamed into place (``io.atomic.folder``).
"""

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "tl_ot_ablation.manifest"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> Iterator[str]:
    """Every file below ``folder`` (links included, folders not), as POSIX relative paths,
    the manifest itself left out."""
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_dir():
            name = path.relative_to(folder).as_posix()
            if name != MANIFEST_NAME:
                yield name


def write_manifest(folder: Path) -> None:
    """Record every file now in ``folder`` (call it when the folder is complete)."""
    files = {
        name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
        for name in _files(folder)
    }
    record = {"format": MANIFEST_FORMAT, "version": 1, "files": files}
    (folder / MANIFEST_NAME).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def read_manifest(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The recorded files of ``folder``'s manifest, or ``None`` if it has no valid one."""
    try:
        record = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != MANIFEST_FORMAT:
        return None
    files = record.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return None
    return files


def _unchanged(folder: Path, name: str, entry: dict[str, Any]) -> bool:
    path = folder / name
    if path.is_symlink() or not path.is_file():
        return False
    return path.stat().st_size == entry.get("size") and sha256_file(path) == entry.get("sha256")


def foreign_files(folder: Path) -> list[str] | None:
    """Files in ``folder`` the package did not write, or changed since (``[]``: all ours);
    ``None`` when the folder has no manifest at all."""
    files = read_manifest(folder)
    if files is None:
        return None
    return [
        name
        for name in _files(folder)
        if name not in files or not _unchanged(folder, name, files[name])
    ]


def verify_manifest(folder: Path) -> None:
    """Raise ``ValueError`` unless every file the manifest lists is present and unchanged and
    no other file sits among them (a user's file beside the set is allowed only at the top)."""
    files = read_manifest(folder)
    if files is None:
        raise UserInputError(
            f"{folder} has no valid {MANIFEST_NAME}, so its files cannot be verified (it was "
            "written by an older tl_ot_ablation, or edited); save it again, or load it "
            "unverified (verify=False) if you trust it"
        )
    for name, entry in files.items():
        if not _unchanged(folder, name, entry):
            raise UserInputError(
                f"{folder / name} is missing or differs from what {folder / MANIFEST_NAME} "
                "records: the folder was changed or corrupted after saving; save it again"
            )
    extra = [name for name in _files(folder) if "/" in name and name not in files]
    if extra:
        raise UserInputError(
            f"{folder} holds files its {MANIFEST_NAME} does not list: {extra[:3]}; a part was "
            "added or swapped after saving; save the folder again"
        )
