"""The embedded models' cache (``lens.model_cache``): GGUF parts joined and verified, atomic
writes with orphan partials removed, checksummed de-quantised copies, rebuilt when damaged."""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

from tl_ot_ablation.lens import model_cache, models


def _fake_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunks: list[bytes], sha: str
) -> str:
    """Install importable-looking fake part packages and register a fake embedded model."""
    for i, chunk in enumerate(chunks, start=1):
        data = tmp_path / "site" / f"fakepart_x{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("raise RuntimeError('never import me')\n")
        (data / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fake = model_cache.EmbeddedModel("fake", "fake/hub", "fakepart-x", len(chunks), sha, "models")
    monkeypatch.setitem(model_cache.EMBEDDED_MODELS, "fake", fake)
    monkeypatch.setenv("TL_OT_ABLATION_CACHE", str(tmp_path / "cache"))
    return "fake"


def test_parts_are_joined_in_order_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [b"first-", b"second-", b"third"]
    name = _fake_parts(tmp_path, monkeypatch, chunks, hashlib.sha256(b"".join(chunks)).hexdigest())
    path = model_cache.embedded_gguf_path(name)
    assert path.read_bytes() == b"first-second-third"
    assert "fakepart_x1" not in sys.modules  # located, never imported
    assert model_cache.embedded_gguf_path(name) == path  # cached


def test_corrupt_part_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _fake_parts(tmp_path, monkeypatch, [b"a", b"b"], "0" * 64)
    with pytest.raises(ValueError, match=r"a part is corrupt.*pip install --force-reinstall"):
        model_cache.embedded_gguf_path(name)
    assert not list((tmp_path / "cache").glob("*.gguf"))


def test_missing_part_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = model_cache.EmbeddedModel("gone", "x/y", "no-such-pkg-part", 2, "0" * 64, "models")
    monkeypatch.setitem(model_cache.EMBEDDED_MODELS, "gone", fake)
    with pytest.raises(
        FileNotFoundError, match=r"no-such-pkg-part1 is not installed.*tl-ot-ablation\[models\]"
    ):
        model_cache.embedded_gguf_path("gone")


def test_unknown_embedded_model() -> None:
    with pytest.raises(ValueError, match="unknown embedded model"):
        model_cache.embedded_gguf_path("llama-9000")


# --- the model cache: atomic writes, orphan partials removed ------------------------------------


def _fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunks: list[bytes]) -> str:
    """Register a fake embedded model whose parts are plain files (never imported)."""
    for i, chunk in enumerate(chunks, start=1):
        data = tmp_path / "site" / f"orphanpart_x{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("raise RuntimeError('never import me')\n")
        (data / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sha = hashlib.sha256(b"".join(chunks)).hexdigest()
    fake = model_cache.EmbeddedModel("fake", "fake/hub", "orphanpart-x", len(chunks), sha, "models")
    monkeypatch.setitem(model_cache.EMBEDDED_MODELS, "fake", fake)
    monkeypatch.setenv("TL_OT_ABLATION_CACHE", str(tmp_path / "cache"))
    return "fake"


def _dead_pid() -> int:
    """A pid no process has (999999 unless, unusually, that one is alive)."""
    for pid in range(999999, 999999 + 1000):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            continue
    pytest.skip("no free pid found")


@pytest.mark.skipif(os.name == "nt", reason="pids are probed with signal 0 on POSIX only")
def test_a_load_removes_orphan_partials_of_dead_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _fake_model(tmp_path, monkeypatch, [b"one-", b"two"])
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = _dead_pid()
    orphan_file = cache / f"fake-0123456789ab.gguf.partial-{dead}"
    orphan_file.write_bytes(b"x" * 1000)
    orphan_folder = cache / f"fake-0123456789ab-bfloat16.partial-{dead}"
    orphan_folder.mkdir()
    (orphan_folder / "model.safetensors").write_bytes(b"half")
    live = cache / f"other.gguf.partial-{os.getpid()}"  # being written by a live process
    live.write_bytes(b"mid-write")
    stale = cache / f"stale.gguf.partial-{os.getpid()}"  # live pid, but two days old
    stale.write_bytes(b"old")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    unrelated = cache / "notes.partial-abc"
    unrelated.write_text("not ours")

    path = model_cache.embedded_gguf_path(name)

    assert path.read_bytes() == b"one-two"
    assert not orphan_file.exists() and not orphan_folder.exists() and not stale.exists()
    assert live.read_bytes() == b"mid-write" and unrelated.exists()
    assert sorted(p.name for p in cache.iterdir()) == sorted([path.name, live.name, unrelated.name])


def test_an_interrupted_write_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _fake_model(tmp_path, monkeypatch, [b"one-", b"two"])
    real_part_file = model_cache._part_file

    def second_part_vanishes(model: model_cache.EmbeddedModel, index: int) -> Path:
        path = real_part_file(model, index)
        return path.with_name("gone.bin") if index == 2 else path

    monkeypatch.setattr(model_cache, "_part_file", second_part_vanishes)
    with pytest.raises(FileNotFoundError):
        model_cache.embedded_gguf_path(name)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written stays


def test_a_corrupt_assembly_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _fake_model(tmp_path, monkeypatch, [b"one-", b"two"])
    fake = model_cache.EMBEDDED_MODELS[name]
    monkeypatch.setitem(
        model_cache.EMBEDDED_MODELS,
        name,
        model_cache.EmbeddedModel(**{**vars(fake), "sha256": "0" * 64}),
    )
    with pytest.raises(ValueError, match="a part is corrupt"):
        model_cache.embedded_gguf_path(name)
    assert list((tmp_path / "cache").iterdir()) == []


# --- the de-quantised model cache is checksummed ------------------------------------------------


def _cache_entry(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "x"}')
    (folder / "model.safetensors").write_bytes(os.urandom(3 << 20))
    (folder / "sub").mkdir()
    (folder / "sub" / "tokenizer.json").write_text("{}")
    model_cache.write_checksums(folder)
    return folder


def test_a_checksummed_cache_entry_verifies(tmp_path: Path) -> None:
    entry = _cache_entry(tmp_path / "entry")
    assert model_cache.checksum_problem(entry) is None
    record = json.loads((entry / model_cache.CHECKSUMS).read_text())
    weights = record["files"]["model.safetensors"]
    assert weights["size"] == 3 << 20
    assert (
        weights["sha256"] == hashlib.sha256((entry / "model.safetensors").read_bytes()).hexdigest()
    )
    assert sorted(record["files"]) == ["config.json", "model.safetensors", "sub/tokenizer.json"]


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda e: _flip_one_byte(e / "model.safetensors"), "model.safetensors has SHA-256"),
        (lambda e: (e / "model.safetensors").write_bytes(b"short"), "model.safetensors is 5 bytes"),
        (lambda e: (e / "sub" / "tokenizer.json").unlink(), "sub/tokenizer.json is missing"),
        (lambda e: (e / "model-2.safetensors").write_bytes(b"x"), "model-2.safetensors is not"),
        (lambda e: (e / model_cache.CHECKSUMS).unlink(), "has no checksum record"),
        (lambda e: (e / model_cache.CHECKSUMS).write_text("{"), "checksum record is unreadable"),
        (lambda e: (e / model_cache.CHECKSUMS).write_text('{"files": 3}'), "record is unreadable"),
    ],
)
def test_a_damaged_cache_entry_is_found(tmp_path: Path, damage, problem: str) -> None:
    entry = _cache_entry(tmp_path / "entry")
    damage(entry)
    found = model_cache.checksum_problem(entry)
    assert found is not None and problem in found


def _fake_converted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake embedded model whose de-quantised cache entry holds a tiny saved model."""
    from tl_ot_ablation.lens.tiny import tiny_hf_model

    fake = model_cache.EmbeddedModel("fake", "fake/hub", "nopart-x", 1, "ab" * 32, "models")
    monkeypatch.setitem(model_cache.EMBEDDED_MODELS, "fake", fake)
    monkeypatch.setenv("TL_OT_ABLATION_CACHE", str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "fake-abababababab-float32"
    hf_model, tokenizer = tiny_hf_model(n_layers=1, d_model=16)
    hf_model.save_pretrained(entry)
    tokenizer.save_pretrained(entry)
    model_cache.write_checksums(entry)
    return entry


class _Rebuilt(Exception):
    pass


def _no_rebuild(name: str = "") -> Path:
    raise _Rebuilt("the cache was rebuilt")


def test_a_verified_cache_entry_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    _fake_converted(tmp_path, monkeypatch)
    monkeypatch.setattr(models, "embedded_gguf_path", _no_rebuild)
    hf_model, _, name = models._load_hf("fake", torch.float32)
    assert name == "fake/hub" and hf_model.config.num_hidden_layers == 1


@pytest.mark.parametrize("damage", ["flip", "no_record"])
def test_a_corrupt_cache_entry_is_rebuilt_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    import torch

    entry = _fake_converted(tmp_path, monkeypatch)
    if damage == "flip":
        _flip_one_byte(entry / "model.safetensors")
    else:  # written by an older version, without a record
        (entry / model_cache.CHECKSUMS).unlink()
    monkeypatch.setattr(models, "embedded_gguf_path", _no_rebuild)
    with pytest.warns(UserWarning, match=r"cached de-quantised model .* rebuilding it"):
        with pytest.raises(_Rebuilt):
            models._load_hf("fake", torch.float32)
    assert not entry.exists()  # set aside, never loaded
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_corrupt_cached_gguf_is_assembled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _fake_model(tmp_path, monkeypatch, [b"one-", b"two"])
    path = model_cache.embedded_gguf_path(name)
    path.write_bytes(b"one-twX")
    with pytest.warns(UserWarning, match=r"cached .*\.gguf.*SHA-256.*assembling it again"):
        assert model_cache.embedded_gguf_path(name) == path
    assert path.read_bytes() == b"one-two"
