"""Prompt sets, chat formatting and left-padded tokenisation.

The package ships small instruction sets that it wrote itself (``default_prompts``): a fitting
split of 64 clearly harmful requests in the style of AdvBench and 64 everyday harmless ones, a
disjoint evaluation split of 32 + 32, and a few paragraphs of plain prose (``plain_text``) for
perplexity. ``load_prompts`` reads user files. Instructions are wrapped in the tokenizer's own
chat template; the template tokens after the user message (``<|im_end|>\\n<|im_start|>assistant\\n``
for Qwen) are the *post-instruction* positions where Arditi et al. (2024) read the refusal
direction and where this package fits and applies its maps by default.
"""

import csv
import json
from collections.abc import Sequence
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


def load_prompts(path: str | Path, *, field: str = "instruction") -> list[str]:
    """Read instructions from a JSON list (of strings, or of objects with ``field``), a CSV
    file (column ``field``) or a text file (one instruction per non-empty line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list, got {type(data).__name__}")
        prompts = [item[field] if isinstance(item, dict) else item for item in data]
    elif suffix == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or field not in reader.fieldnames:
                raise ValueError(f"{path}: no column {field!r}; columns are {reader.fieldnames}")
            prompts = [row[field] for row in reader]
    else:
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"{path}: {len(bad)} entries are not non-empty strings (e.g. {bad[0]!r})")
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts


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
    """Wrap each instruction as a user turn followed by the assistant's turn header."""
    _require_template(tokenizer)
    if isinstance(instructions, str):
        raise TypeError("instructions must be a list of strings, not one string")
    if len(instructions) == 0:
        raise ValueError("the prompt list is empty; pass at least one instruction")
    prefix = [{"role": "system", "content": system}] if system else []
    return [
        tokenizer.apply_chat_template(
            [*prefix, {"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        for text in instructions
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


def tokenize(
    tokenizer: Any, texts: Sequence[str], *, max_length: int | None = None
) -> tuple[Tensor, Tensor]:
    """Left-padded ``(input_ids, attention_mask)`` for already formatted texts.

    No special tokens are added (chat templates carry their own). Raises if a text is longer
    than ``max_length`` (the model's context), rather than silently truncating it.
    """
    if len(texts) == 0:
        raise ValueError("the prompt list is empty; pass at least one prompt")
    tokenizer.padding_side = "left"
    encoded = tokenizer(list(texts), add_special_tokens=False, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if max_length is not None and ids.shape[1] > max_length:
        longest = int(mask.sum(1).argmax())
        raise ValueError(
            f"prompt {longest} is {int(mask[longest].sum())} tokens long, more than the model's "
            f"context of {max_length} tokens; shorten it or drop it"
        )
    return ids, mask.to(torch.long)
