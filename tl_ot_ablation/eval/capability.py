"""Capability under an intervention: multiple-choice accuracy read from next-token logits.

Each question is asked as one chat turn (the question, its four choices "A." .. "D.", and "Answer
with the letter only."); the model's answer is the letter among A-D whose first token is most
likely at the first generated position. No generation, so one forward pass per question. The
package ships 240 questions it wrote (arithmetic, code, science, everyday facts; 60 each,
answers balanced over the letters: ``shipped_questions``); ``load_questions`` reads a user's
file, including MMLU-style CSV (``question, A, B, C, D, answer``, with or without a header).
"""

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.errors import UserInputError
from .evaluate import next_token_logprobs
from .metrics import Estimate, with_ci

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Question:
    """One multiple-choice question with four choices and the letter of the right one."""

    question: str
    choices: tuple[str, str, str, str]
    answer: str
    topic: str = ""

    def __post_init__(self) -> None:
        if self.answer not in LETTERS:
            raise UserInputError(f"answer must be one of {LETTERS}, got {self.answer!r}")
        if len(self.choices) != 4 or not all(str(c).strip() for c in self.choices):
            raise UserInputError(f"a question needs four non-empty choices, got {self.choices!r}")
        if not self.question.strip():
            raise UserInputError("the question text is empty")

    def prompt(self) -> str:
        """The user turn asking it."""
        options = "\n".join(
            f"{letter}. {c}" for letter, c in zip(LETTERS, self.choices, strict=True)
        )
        return f"{self.question}\n{options}\nAnswer with the letter only."


def shipped_questions() -> list[Question]:
    """The package's 240 questions (``data/capability.json``)."""
    text = resources.files("tl_ot_ablation").joinpath("data", "capability.json").read_text("utf-8")
    return [
        Question(row["question"], tuple(row["choices"]), row["answer"], row["topic"])
        for row in json.loads(text)
    ]


def _json_question(row: Any, at: str) -> Question:
    """One question of a JSON file, every field checked (``at`` names the file and index)."""
    if not isinstance(row, dict):
        raise UserInputError(
            f"{at}: expected an object with 'question', 'choices' and 'answer', got "
            f"{type(row).__name__} ({row!r:.40})"
        )
    for key in ("question", "choices", "answer"):
        if key not in row:
            raise UserInputError(
                f"{at}: no field {key!r} (its keys: {sorted(row)[:10]}); each question needs "
                "'question', 'choices' (a list of 4 strings) and 'answer' (A-D)"
            )
    text, choices, answer = (row[k] for k in ("question", "choices", "answer"))
    topic = row.get("topic", "")
    if isinstance(choices, str):  # tuple("ABCD") would pass as four one-letter choices
        raise UserInputError(
            f"{at}: 'choices' must be a list of 4 strings, got a string ({choices!r:.40}); "
            'write it as ["first", "second", "third", "fourth"]'
        )
    if not (
        isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)
    ):
        raise UserInputError(f"{at}: 'choices' must be a list of 4 strings, got {choices!r:.60}")
    for key, value in (("question", text), ("answer", answer), ("topic", topic)):
        if not isinstance(value, str):
            raise UserInputError(
                f"{at}: {key!r} must be a string, got {type(value).__name__} ({value!r:.40})"
            )
    try:
        return Question(text, tuple(choices), answer, topic)
    except ValueError as err:
        raise UserInputError(f"{at}: {err}") from err


def _no_questions(path: Path) -> UserInputError:
    return UserInputError(
        f"{path} holds no questions; add some, or skip the capability check with "
        "--n-questions 0 (n_questions=0)"
    )


def load_questions(path: str | Path) -> list[Question]:
    """Questions from a JSON list (the shipped format) or an MMLU-style CSV file.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: if the file holds no questions, or naming the index (JSON) or row (CSV) of
            the first bad one: a missing field, ``choices`` that are not a list of four
            strings, an answer that is not A-D.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no question file at {path}")
    if path.suffix.lower() == ".json":
        try:  # utf-8-sig: a byte-order mark is not part of the JSON
            rows = json.loads(path.read_text("utf-8-sig"))
        except json.JSONDecodeError as err:
            raise UserInputError(f"{path} is not valid JSON ({err})") from err
        if not isinstance(rows, list):
            raise UserInputError(
                f"{path}: expected a JSON list of questions, got {type(rows).__name__}"
            )
        if not rows:
            raise _no_questions(path)
        return [_json_question(row, f"{path}, index {i}") for i, row in enumerate(rows)]
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and [c.strip().lower() for c in rows[0][:6]] == [
        "question",
        "a",
        "b",
        "c",
        "d",
        "answer",
    ]:
        rows = rows[1:]
    questions = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 6:
            raise UserInputError(f"{path}, row {number}: expected question, A, B, C, D, answer")
        try:
            questions.append(Question(row[0], tuple(row[1:5]), row[5].strip().upper()))
        except ValueError as err:
            raise UserInputError(f"{path}, row {number}: {err}") from err
    if not questions:
        raise _no_questions(path)
    return questions


def letter_token_ids(tokenizer: Any) -> list[int]:
    """The first token of each letter as the answer would start (no leading space)."""
    ids = [tokenizer(letter, add_special_tokens=False)["input_ids"][0] for letter in LETTERS]
    if len(set(ids)) != len(LETTERS):
        raise UserInputError("the tokenizer maps two answer letters to the same first token")
    return ids


def answers(
    model: Any,
    questions: Sequence[Question],
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    batch_size: int = 16,
    system: str | None = None,
) -> Tensor:
    """Whether each question is answered right (1.0) or wrong (0.0) under ``fwd_hooks``."""
    if not questions:
        raise UserInputError("no questions to ask")
    logprobs = next_token_logprobs(
        model,
        [q.prompt() for q in questions],
        fwd_hooks=fwd_hooks,
        batch_size=batch_size,
        system=system,
    )
    chosen = logprobs[:, letter_token_ids(model.tokenizer)].argmax(-1)
    truth = torch.tensor([LETTERS.index(q.answer) for q in questions])
    return (chosen == truth).double()


def capability_accuracy(
    model: Any,
    questions: Sequence[Question],
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    batch_size: int = 16,
    system: str | None = None,
    seed: int = 0,
) -> Estimate:
    """Multiple-choice accuracy with its bootstrap CI (chance: 0.25)."""
    correct = answers(model, questions, fwd_hooks=fwd_hooks, batch_size=batch_size, system=system)
    return with_ci(correct, seed=seed)
