"""Prompt sets, chat formatting and left-padded tokenisation.

The package ships small instruction sets that it wrote itself (``default_prompts``): a fitting
split of 64 clearly harmful requests in the style of AdvBench and 64 everyday harmless ones, a
disjoint evaluation split of 32 + 32, and a few paragraphs of plain prose (``plain_text``) for
perplexity. ``load_prompts`` reads user files. Instructions are wrapped in the tokenizer's own
chat template; the template tokens after the user message (``<|im_end|>\\n<|im_start|>assistant\\n``
for Qwen) are the *post-instruction* positions where Arditi et al. (2024) read the refusal
direction and where this package fits and applies its maps by default.
"""

import contextlib
import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

PromptKind = Literal["harmful", "harmless"]
Split = Literal["train", "eval"]


def _read_data(filename: str) -> list[str]:
    return list(
        json.loads(resources.files("tl_ot_ablation").joinpath("data", filename).read_text())
    )


def default_prompts(kind: PromptKind, split: Split = "train") -> list[str]:
    """The package's own instructions: 64 harmful or 64 harmless for fitting (``"train"``),
    or a disjoint 32 + 32 for evaluation (``"eval"``)."""
    if kind not in ("harmful", "harmless"):
        raise ValueError(f"kind must be 'harmful' or 'harmless', got {kind!r}")
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    return _read_data(f"{kind}.json" if split == "train" else f"{kind}_eval.json")


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
        raise ValueError(f"{where} holds no prompts (the prompt list is empty); pass at least one")
    bad = [(at, problem) for at, value in entries if (problem := _problem(value)) is not None]
    if bad:
        at, problem = bad[0]
        raise ValueError(
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
        ValueError: harmful: 1 of 2 entries are not non-empty strings; the first, at index 1, \
is None. Fix or drop it
    """
    if isinstance(prompts, str | bytes):
        raise TypeError(f"{where} must be a list of strings, not one string; wrap it in a list")
    if isinstance(prompts, Mapping) or not isinstance(prompts, Iterable):
        raise TypeError(f"{where} must be a list of strings, got {type(prompts).__name__}")
    return _check_entries([(f"index {i}", value) for i, value in enumerate(prompts)], where)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err})") from err


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON ({err})") from err


def _entry(at: str, item: Any, field: str, path: Path) -> tuple[str, Any]:
    """``(location, value)`` of one JSON item: a JSON object's ``field``, else the item."""
    if not isinstance(item, dict):
        return at, item
    if field not in item:
        raise ValueError(
            f"{path}, {at}: the object has no field {field!r} (its keys: {sorted(item)[:10]}); "
            "pass field=<the key that holds the instruction> to load_prompts"
        )
    return f"{at}, field {field!r}", item[field]


def _read_json(path: Path, field: str) -> Entries:
    data = _parse_json(_read_text(path), str(path))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list, got {type(data).__name__}")
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
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or field not in reader.fieldnames:
            raise ValueError(f"{path}: no column {field!r}; columns are {reader.fieldnames}")
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


def _require_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "the tokenizer has no chat template, so instructions cannot be formatted as chat "
            "turns; use a chat (instruct) model, set tokenizer.chat_template, or pass "
            "chat=False to use the raw text"
        )


def format_chat(
    tokenizer: Any, instructions: Sequence[str], *, system: str | None = None
) -> list[str]:
    """Wrap each instruction as a user turn followed by the assistant's turn header.

    Raises:
        TypeError: if ``instructions`` is one string rather than a list.
        ValueError: if it is empty or holds an entry that is not a non-empty string (see
            ``check_prompts``), or the tokenizer has no chat template.
    """
    _require_template(tokenizer)
    texts = check_prompts(instructions, where="instructions")
    prefix = [{"role": "system", "content": system}] if system else []
    return [
        tokenizer.apply_chat_template(
            [*prefix, {"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        for text in texts
    ]


def post_instruction_length(tokenizer: Any, *, system: str | None = None) -> int:
    """Number of template tokens after the user's message (the common suffix of two turns)."""
    a, b = (
        tokenizer(text, add_special_tokens=False)["input_ids"]
        for text in format_chat(tokenizer, ["first", "the second one?"], system=system)
    )
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    if n == 0:
        raise ValueError("could not find the chat template's post-instruction tokens")
    return n


@contextlib.contextmanager
def padding_side(tokenizer: Any, side: Literal["left", "right"]) -> Iterator[Any]:
    """Pad on ``side`` inside the block, then restore the caller's setting (the tokenizer is
    the user's object: the package never leaves it changed)."""
    before = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = before


def padded(tokenizer: Any, texts: Sequence[str], side: Literal["left", "right"]) -> Any:
    """``tokenizer(texts)`` padded on ``side``, no special tokens added, as tensors."""
    with padding_side(tokenizer, side):
        return tokenizer(list(texts), add_special_tokens=False, padding=True, return_tensors="pt")


def tokenize(
    tokenizer: Any, texts: Sequence[str], *, max_length: int | None = None
) -> tuple[Tensor, Tensor]:
    """Left-padded ``(input_ids, attention_mask)`` for already formatted texts.

    No special tokens are added (chat templates carry their own). Raises if a text is longer
    than ``max_length`` (the model's context), rather than silently truncating it.
    """
    if len(texts) == 0:
        raise ValueError("the prompt list is empty; pass at least one prompt")
    encoded = padded(tokenizer, texts, "left")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if max_length is not None and ids.shape[1] > max_length:
        longest = int(mask.sum(1).argmax())
        raise ValueError(
            f"prompt {longest} is {int(mask[longest].sum())} tokens long, more than the model's "
            f"context of {max_length} tokens; shorten it or drop it"
        )
    return ids, mask.to(torch.long)
