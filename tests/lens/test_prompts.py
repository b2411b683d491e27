"""Prompt sets (``lens.prompts``): the shipped splits, prompt files in every format, and bad
prompts named where they are."""

import json
from pathlib import Path

import pytest

from tl_ot_ablation import default_prompts, load_prompts
from tl_ot_ablation.lens.prompts import check_prompts


def test_shipped_prompt_sets_are_disjoint_splits() -> None:
    sizes = {"train": 256, "validation": 64, "eval": 32}
    seen: set[str] = set()
    for kind in ("harmful", "harmless"):
        for split, size in sizes.items():
            prompts = default_prompts(kind, split)  # type: ignore[arg-type]
            normalised = {p.strip().lower() for p in prompts}
            assert len(prompts) == len(normalised) == size, (kind, split)
            assert not normalised & seen, (kind, split)
            seen |= normalised
    assert default_prompts("harmful") == default_prompts("harmful", "train")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("p.json", json.dumps(["a b", "c"])),
        ("p.json", json.dumps([{"instruction": "a b", "category": None}, {"instruction": "c"}])),
        ("p.csv", "instruction,other\na b,1\nc,2\n"),
        ("p.txt", "a b\n\nc\n"),
    ],
)
def test_load_prompts_formats(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert load_prompts(path) == ["a b", "c"]


def test_load_prompts_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "missing.json")
    (tmp_path / "bad.csv").write_text("prompt\nx\n")
    with pytest.raises(ValueError, match="no column 'instruction'"):
        load_prompts(tmp_path / "bad.csv")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="holds no prompts"):
        load_prompts(tmp_path / "empty.json")
    (tmp_path / "blank.json").write_text('["ok", ""]')
    with pytest.raises(ValueError, match="not non-empty strings"):
        load_prompts(tmp_path / "blank.json")


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


# --- the Python API: check_prompts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "problem"),
    [(None, "is None"), ("", "is empty"), (" \n", "is only whitespace"), (123, "is of type int")],
)
def test_check_prompts_rejects_entries_that_are_not_text(bad: object, problem: str) -> None:
    with pytest.raises(ValueError, match=rf"harmful: 1 of 3 entries .*at index 1, {problem}"):
        check_prompts(["a", bad, "c"], where="harmful")


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


# --- a UTF-8 byte-order mark is not part of the first prompt ------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("p.txt", "first\nsecond\n"),
        ("p.json", '["first", "second"]'),
        ("p.jsonl", '"first"\n{"instruction": "second"}\n'),
        ("p.csv", "instruction,id\nfirst,1\nsecond,2\n"),
    ],
)
def test_a_byte_order_mark_is_stripped(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + content.encode("utf-8"))
    assert load_prompts(path) == ["first", "second"]
