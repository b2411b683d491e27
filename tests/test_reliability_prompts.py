"""Reliability of prompt input and the model cache: bad prompts are named where they are, and an
interrupted cache write leaves nothing behind for good."""

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tl_ot_ablation import format_chat, load_prompts
from tl_ot_ablation.lens import models
from tl_ot_ablation.lens.prompts import check_prompts
from tl_ot_ablation.lens.testing import tiny_tokenizer

# --- .jsonl files ------------------------------------------------------------------------------


def test_jsonl_of_strings_and_objects(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [json.dumps("a b"), "", json.dumps({"instruction": "c", "id": 2}), json.dumps("d")]
    path.write_text("\n".join(lines) + "\n")
    assert load_prompts(path) == ["a b", "c", "d"]


def test_jsonl_with_another_field(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"goal": "x y"}) + "\n" + json.dumps({"goal": "z"}) + "\n")
    assert load_prompts(path, field="goal") == ["x y", "z"]


# --- errors name the file, the line or index, and the field -------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        # .jsonl: counted in lines from 1, blank lines included.
        ("p.jsonl", '"ok"\n\n{"instruction": "x"\n', r"p\.jsonl, line 3 is not valid JSON"),
        ("p.jsonl", '"ok"\n{"prompt": "x"}\n', r"p\.jsonl, line 2: .*no field 'instruction'"),
        ("p.jsonl", '"ok"\n{"instruction": ""}\n', r"p\.jsonl.*line 2, field 'instruction'.*empty"),
        ("p.jsonl", '"ok"\nnull\n', r"p\.jsonl.*at line 2, is None"),
        # .json: an index into the list.
        ("p.json", '["a", "b",', r"p\.json is not valid JSON"),
        ("p.json", '["a", {"prompt": "b"}]', r"p\.json, index 1: .*no field 'instruction'.*field="),
        (
            "p.json",
            '["a", {"instruction": 123}]',
            r"index 1, field 'instruction', is of type int \(123\)",
        ),
        ("p.json", '["a", "   "]', r"p\.json: 1 of 2 entries .* index 1, is only whitespace"),
        ("p.json", '{"instruction": "a"}', r"p\.json: expected a JSON list, got dict"),
        # .csv: the line of the row, and the column.
        ("p.csv", 'instruction\na\n" "\n', r"p\.csv.*line 3, column 'instruction'"),
    ],
)
def test_file_errors_name_the_place(tmp_path: Path, name: str, content: str, pattern: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern):
        load_prompts(path)


def test_undecodable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match=r"p\.txt is not UTF-8 text"):
        load_prompts(path)


# --- the Python API: check_prompts and format_chat ----------------------------------------------


@pytest.mark.parametrize(
    ("bad", "problem"),
    [(None, "is None"), ("", "is empty"), (" \n", "is only whitespace"), (123, "is of type int")],
)
def test_check_prompts_rejects_entries_that_are_not_text(bad: object, problem: str) -> None:
    with pytest.raises(ValueError, match=rf"harmful: 1 of 3 entries .*at index 1, {problem}"):
        check_prompts(["a", bad, "c"], where="harmful")


@pytest.mark.parametrize("bad", [None, "", "   ", 123])
def test_format_chat_rejects_what_would_become_an_empty_turn(bad: object, as_user: None) -> None:
    with pytest.raises(ValueError, match=r"instructions: 1 of 2 entries are not non-empty"):
        format_chat(tiny_tokenizer(), ["hello", bad])  # type: ignore[list-item]


def test_check_prompts_containers() -> None:
    assert check_prompts(("a", "b")) == ["a", "b"]
    assert check_prompts(p for p in ["a"]) == ["a"]
    with pytest.raises(TypeError, match="not one string"):
        check_prompts("one prompt")
    with pytest.raises(TypeError, match="must be a list of strings, got int"):
        check_prompts(5)
    with pytest.raises(TypeError, match="got dict"):
        check_prompts({"instruction": "a"})
    with pytest.raises(ValueError, match="prompts holds no prompts"):
        check_prompts([])


def test_file_and_api_give_the_same_kind_of_message(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('["a", null]')
    with pytest.raises(ValueError) as from_file:
        load_prompts(path)
    with pytest.raises(ValueError) as from_api:
        check_prompts(["a", None], where=str(path))
    assert str(from_file.value) == str(from_api.value)


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
    fake = models.EmbeddedModel("fake", "fake/hub", "orphanpart-x", len(chunks), sha, "models")
    monkeypatch.setitem(models.EMBEDDED_MODELS, "fake", fake)
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

    path = models.embedded_gguf_path(name)

    assert path.read_bytes() == b"one-two"
    assert not orphan_file.exists() and not orphan_folder.exists() and not stale.exists()
    assert live.read_bytes() == b"mid-write" and unrelated.exists()
    assert sorted(p.name for p in cache.iterdir()) == sorted([path.name, live.name, unrelated.name])


def test_an_interrupted_write_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _fake_model(tmp_path, monkeypatch, [b"one-", b"two"])
    real_part_file = models._part_file

    def second_part_vanishes(model: models.EmbeddedModel, index: int) -> Path:
        path = real_part_file(model, index)
        return path.with_name("gone.bin") if index == 2 else path

    monkeypatch.setattr(models, "_part_file", second_part_vanishes)
    with pytest.raises(FileNotFoundError):
        models.embedded_gguf_path(name)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written stays


def test_a_corrupt_assembly_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _fake_model(tmp_path, monkeypatch, [b"one-", b"two"])
    fake = models.EMBEDDED_MODELS[name]
    monkeypatch.setitem(
        models.EMBEDDED_MODELS, name, models.EmbeddedModel(**{**vars(fake), "sha256": "0" * 64})
    )
    with pytest.raises(ValueError, match="a part is corrupt"):
        models.embedded_gguf_path(name)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_folder_entry_that_another_process_finished_is_kept(tmp_path: Path) -> None:
    entry = tmp_path / "converted"
    entry.mkdir()
    (entry / "config.json").write_text("theirs")
    with models._written_atomically(entry) as partial:
        partial.mkdir()
        (partial / "config.json").write_text("ours")
    assert (entry / "config.json").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]
