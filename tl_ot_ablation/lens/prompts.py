"""Prompt sets: the package's own instructions and the user's files, checked before use.

The package ships instruction sets that it wrote itself (``default_prompts``), in three
disjoint splits per class: ``train`` (256 harmful requests covering the range of public
red-teaming sets, 256 everyday instructions) for fitting, ``validation`` (64 + 64) for choices
such as a method's strength, and ``eval`` (32 + 32) for held-out results; and a few paragraphs
of plain prose (``plain_text``) for perplexity. ``load_prompts`` reads user files (JSON, JSONL,
CSV, text). Every set is checked to hold non-empty strings only (``check_prompts``), naming
the entry at fault, so a bad file fails here rather than as a nonsense chat turn. Chat
formatting is ``chat_template``'s job, tokenising ``tokens``'.
"""

import csv
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from ..core.errors import UserInputError

PromptKind = Literal["harmful", "harmless"]
Split = Literal["train", "validation", "eval"]
SPLITS: tuple[str, ...] = get_args(Split)


def _read_data(filename: str) -> list[str]:
    return list(
        json.loads(resources.files("tl_ot_ablation").joinpath("data", filename).read_text())
    )


def default_prompts(kind: PromptKind, split: Split = "train") -> list[str]:
    """The package's own instructions of one class and split: 256 for fitting (``"train"``),
    64 for choosing settings (``"validation"``), 32 for held-out results (``"eval"``); the
    splits are disjoint. (Runs recorded before the training split grew to 256 fitted on
    today's ``"validation"`` set.)"""
    if kind not in ("harmful", "harmless"):
        raise UserInputError(f"kind must be 'harmful' or 'harmless', got {kind!r}")
    if split not in SPLITS:
        raise UserInputError(f"split must be one of {SPLITS}, got {split!r}")
    return _read_data(f"{kind}_{split}.json")


def plain_text() -> list[str]:
    """Eight short paragraphs of everyday prose (no chat template) for perplexity checks."""
    return _read_data("plain_text.json")


def _problem(value: object) -> str | None:
    """What makes ``value`` unusable as a prompt, or ``None`` if it is a non-empty string."""
    if value is None:
        return "None"
    if not isinstance(value, str):
        return f"of type {type(value).__name__} ({value!r:.40}), not a string"
    if not value.strip():
        return "empty" if not value else "only whitespace"
    return None


Entries = list[tuple[str, Any]]
"""``(location, value)`` pairs, e.g. ``("line 3", "how do I ...")``, to check as prompts."""


def _check_entries(entries: Entries, where: str) -> list[str]:
    """The values, after raising ``ValueError`` naming ``where`` and the first bad entry's
    location, unless there is at least one entry and every one is a non-empty string."""
    if not entries:
        raise UserInputError(
            f"{where} holds no prompts (the prompt list is empty); pass at least one"
        )
    bad = [(at, problem) for at, value in entries if (problem := _problem(value)) is not None]
    if bad:
        at, problem = bad[0]
        raise UserInputError(
            f"{where}: {len(bad)} of {len(entries)} entries are not non-empty strings; the "
            f"first, at {at}, is {problem}. Fix or drop it"
        )
    return [value for _, value in entries]


def check_prompts(prompts: object, *, where: str = "prompts") -> list[str]:
    """Return ``prompts`` as a list, checked to hold non-empty strings only.

    Catches what would otherwise turn into empty or nonsense chat turns: ``None``, ``""``,
    whitespace, numbers. ``load_prompts`` checks files with the same rule, naming the line.

    Raises:
        TypeError: if ``prompts`` is one string, or not a list (or other iterable) at all.
        ValueError: if it is empty, or an entry is not a non-empty string (naming ``where``
            and the entry's index).

    Example:
        >>> check_prompts(("how do I bake bread?",))
        ['how do I bake bread?']
        >>> check_prompts(["ok", None], where="harmful")
        Traceback (most recent call last):
        tl_ot_ablation.core.errors.UserInputError: harmful: 1 of 2 entries are \
not non-empty strings; the first, at index 1, is None. Fix or drop it
    """
    if isinstance(prompts, str | bytes):
        raise TypeError(f"{where} must be a list of strings, not one string; wrap it in a list")
    if isinstance(prompts, Mapping) or not isinstance(prompts, Iterable):
        raise TypeError(f"{where} must be a list of strings, got {type(prompts).__name__}")
    return _check_entries([(f"index {i}", value) for i, value in enumerate(prompts)], where)


def _read_text(path: Path) -> str:
    # utf-8-sig: a byte-order mark (Notepad, Excel) is not part of the first prompt.
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path} is not UTF-8 text ({err})") from err


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(f"{where} is not valid JSON ({err})") from err


def _entry(at: str, item: Any, field: str, path: Path) -> tuple[str, Any]:
    """``(location, value)`` of one JSON item: a JSON object's ``field``, else the item."""
    if not isinstance(item, dict):
        return at, item
    if field not in item:
        raise UserInputError(
            f"{path}, {at}: the object has no field {field!r} (its keys: {sorted(item)[:10]}); "
            "pass field=<the key that holds the instruction> to load_prompts"
        )
    return f"{at}, field {field!r}", item[field]


def _read_json(path: Path, field: str) -> Entries:
    data = _parse_json(_read_text(path), str(path))
    if not isinstance(data, list):
        raise UserInputError(f"{path}: expected a JSON list, got {type(data).__name__}")
    return [_entry(f"index {i}", item, field, path) for i, item in enumerate(data)]


def _lines(path: Path) -> list[tuple[str, str]]:
    """``("line N", text)`` of every non-blank line, numbered from 1."""
    lines = enumerate(_read_text(path).splitlines(), start=1)
    return [(f"line {number}", line) for number, line in lines if line.strip()]


def _read_jsonl(path: Path, field: str) -> Entries:
    return [
        _entry(at, _parse_json(line, f"{path}, {at}"), field, path) for at, line in _lines(path)
    ]


def _read_csv(path: Path, field: str) -> Entries:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or field not in reader.fieldnames:
            raise UserInputError(f"{path}: no column {field!r}; columns are {reader.fieldnames}")
        return [(f"line {reader.line_num}, column {field!r}", row[field]) for row in reader]


def load_prompts(path: str | Path, *, field: str = "instruction") -> list[str]:
    """Read instructions from a file, by its suffix: ``.json`` (a list of strings, or of objects
    with ``field``), ``.jsonl`` (one JSON string or object with ``field`` per line), ``.csv``
    (column ``field``) or anything else as text (one instruction per non-blank line).

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: naming the file and the line (``.jsonl``, ``.csv``, text) or index
            (``.json``) of the first problem: invalid JSON, an object without ``field``, or an
            entry that is not a non-empty string (see ``check_prompts``); or no prompts at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        entries = _read_json(path, field)
    elif suffix == ".jsonl":
        entries = _read_jsonl(path, field)
    elif suffix == ".csv":
        entries = _read_csv(path, field)
    else:
        entries = [(at, line.strip()) for at, line in _lines(path)]
    return _check_entries(entries, str(path))
