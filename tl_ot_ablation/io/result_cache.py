"""An on-disk cache of what a job computed (completions, log-probabilities), keyed by its inputs.

A job that decodes the same prompts with the same model, settings and edit as an earlier run
reads the earlier result instead of decoding again. The key is the SHA-256 of the canonical
JSON of everything the result depends on, which the caller lists (the model's weights hash,
the prompts, the generation settings, the edit's fingerprint, the package version): a change
in any of them is a different entry, never a stale hit.

An entry is a folder ``<root>/<key[:2]>/<key>/`` holding ``meta.json`` (the key's inputs and
the JSON part of the result), ``tensors.safetensors`` and ``manifest.json`` (size and SHA-256
of both, ``io.manifest``), built aside and renamed into place (``atomic.entry``). A read
verifies the manifest and the key: a corrupted or foreign entry is discarded with a warning and
recomputed, never trusted. The cache is bounded: after each write the least recently used
entries (a read refreshes an entry's time) go until the total is under ``max_bytes``.

Why hand-written: ``joblib.Memory`` and ``diskcache`` pickle their values (a cache file would
then run code when read) and verify nothing; this stores JSON and safetensors only.
"""

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from ..core.errors import UserInputError
from . import atomic
from .manifest import read_manifest, verify_manifest, write_manifest

FORMAT = "tl_ot_ablation.result-cache/1"
DEFAULT_MAX_BYTES = 2 * 1024**3
"""2 GiB: a default ``compare`` stores about 0.3 GiB (first-token log-probabilities of a
150k-token vocabulary are 0.6 MB per prompt)."""
META = "meta.json"
TENSORS = "tensors.safetensors"


def cache_home() -> Path:
    """Where the package keeps its caches: ``$TL_OT_ABLATION_CACHE``, else
    ``~/.cache/tl_ot_ablation`` (the model cache's files, and ``results/`` below it)."""
    return Path(os.environ.get("TL_OT_ABLATION_CACHE") or Path.home() / ".cache" / "tl_ot_ablation")


def cache_root() -> Path:
    """``$TL_OT_ABLATION_RESULT_CACHE``, else ``cache_home() / "results"`` (beside the model
    cache, apart from it)."""
    if os.environ.get("TL_OT_ABLATION_RESULT_CACHE"):
        return Path(os.environ["TL_OT_ABLATION_RESULT_CACHE"])
    return cache_home() / "results"


def cache_key(inputs: Mapping[str, Any]) -> str:
    """SHA-256 of ``inputs`` as canonical JSON (sorted keys, no spaces); raises on a value JSON
    cannot hold exactly (a float NaN, an object), so two inputs never share a key by accident."""
    try:
        text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"a result-cache key must be plain JSON data: {err}") from err
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CachedResult:
    """One entry: the JSON part of a result and its tensors (on the CPU)."""

    meta: dict[str, Any]
    tensors: dict[str, Tensor] = field(default_factory=dict)


class ResultCache:
    """The cache at ``root`` (``cache_root()`` by default), at most ``max_bytes``; with
    ``enabled=False`` every read misses and nothing is written (``--no-cache``)."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        enabled: bool = True,
    ) -> None:
        if not (isinstance(max_bytes, int) and max_bytes > 0):
            raise UserInputError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self.root = Path(root) if root is not None else cache_root()
        self.max_bytes = max_bytes
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, inputs: Mapping[str, Any]) -> CachedResult | None:
        """The entry for ``inputs``, verified; ``None`` when absent, disabled or corrupted (a
        corrupted entry is discarded, with a warning)."""
        if not self.enabled:
            return None
        key = cache_key(inputs)
        path = self._path(key)
        if not path.is_dir():
            self.misses += 1
            return None
        try:
            verify_manifest(path)
            meta = json.loads((path / META).read_text())
            if meta.get("format") != FORMAT or meta.get("key") != key:
                raise ValueError("it was written for another key or format")
            tensors = load_file(path / TENSORS)
        except (OSError, ValueError) as err:  # JSON, manifest and safetensors errors included
            warnings.warn(
                f"result cache: discarding the corrupted entry {path} ({err}); recomputing",
                UserWarning,
                stacklevel=2,
            )
            with contextlib.suppress(OSError):  # a read-only cache: leave it, recompute
                atomic.discard(path)
            self.misses += 1
            return None
        with contextlib.suppress(OSError):  # a read-only cache still serves
            os.utime(path)
        self.hits += 1
        return CachedResult(meta["value"], tensors)

    def put(
        self,
        inputs: Mapping[str, Any],
        value: Mapping[str, Any],
        tensors: Mapping[str, Tensor],
        *,
        replace: bool = False,
    ) -> None:
        """Store ``value`` (JSON data) and ``tensors`` for ``inputs``, then evict to the bound.
        An entry already there is kept (an equal result) unless ``replace`` (a result that grew,
        e.g. judged labels continued past an early stop). A failed write (disk full, read-only
        cache) warns and leaves no partial entry."""
        if not self.enabled:
            return
        key = cache_key(inputs)
        path = self._path(key)
        meta = {"format": FORMAT, "key": key, "inputs": dict(inputs), "value": dict(value)}
        try:
            if replace and path.is_dir():
                atomic.discard(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic.entry(path) as partial:
                partial.mkdir()
                (partial / META).write_text(json.dumps(meta))  # NaN estimates stay NaN
                save_file(
                    {name: t.detach().cpu().contiguous() for name, t in tensors.items()},
                    partial / TENSORS,
                )
                write_manifest(partial)
        except OSError as err:
            warnings.warn(
                f"result cache: could not store an entry in {self.root} ({err}); continuing "
                "without it",
                UserWarning,
                stacklevel=2,
            )
            return
        self.evict()

    def get_or_compute(
        self,
        inputs: Mapping[str, Any],
        compute: Callable[[], tuple[Mapping[str, Any], Mapping[str, Tensor]]],
    ) -> CachedResult:
        """The cached result for ``inputs``, or ``compute()``'s (stored for next time)."""
        found = self.get(inputs)
        if found is not None:
            return found
        value, tensors = compute()
        self.put(inputs, value, tensors)
        return CachedResult(dict(value), dict(tensors))

    def entries(self) -> list[Path]:
        """Every complete entry (those with a manifest), oldest use first."""
        if not self.root.is_dir():
            return []
        found = [
            path
            for shard in self.root.iterdir()
            if shard.is_dir()
            for path in shard.iterdir()
            if path.is_dir() and read_manifest(path) is not None
        ]
        return sorted(found, key=_mtime)

    def size_bytes(self) -> int:
        """Bytes the complete entries hold."""
        return sum(_entry_bytes(path) for path in self.entries())

    def evict(self) -> list[Path]:
        """Remove the least recently used entries until the cache holds at most ``max_bytes``
        (and orphaned partial entries of dead writers); returns what was removed."""
        entries = self.entries()
        sizes = {path: _entry_bytes(path) for path in entries}
        total = sum(sizes.values())
        removed = []
        for path in entries:
            if total <= self.max_bytes:
                break
            atomic.discard(path)
            total -= sizes[path]
            removed.append(path)
        for shard in {path.parent for path in entries}:
            atomic.remove_orphans(shard)
        return removed

    def clear(self) -> int:
        """Remove every entry (``--clear-cache``); returns how many there were."""
        entries = self.entries()
        for path in entries:
            atomic.discard(path)
        return len(entries)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # another process evicted it
        return 0.0


def _entry_bytes(path: Path) -> int:
    manifest = read_manifest(path) or {}
    return sum(int(entry.get("size", 0)) for entry in manifest.values())
