"""The prompts a job runs on: training, validation and held-out splits, kept disjoint.

Every job fits on one split and measures on another (``compare`` also chooses strengths on a
third), and a result on prompts it was fitted on measures memorisation, not generalisation.
So the splits, where they come from (``JobPrompts.shipped``: the package's own, or the user's
files, ``PromptFiles``) and the overlap checks between them live in one place, shared by the
jobs, their records and the CLI.
"""

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..lens.control_tokens import check_control_tokens
from ..lens.prompts import default_prompts, load_prompts, plain_text
from .capability import Question, load_questions, shipped_questions
from .xstest import OverRefusalPrompts, load_over_refusal


@dataclass
class EvalPrompts:
    """Held-out prompts: harmful and harmless instructions, plain prose, multiple-choice
    questions for the capability check (none: the check is skipped) and an XSTest-style
    over-refusal set (``None``: not run)."""

    harmful: list[str]
    harmless: list[str]
    texts: list[str]
    questions: list[Question] = field(default_factory=list)
    xstest: OverRefusalPrompts | None = None

    def sets(self) -> dict[str, list[str]]:
        """The instruction sets by name, as the completions are keyed: harmful, harmless and,
        when given, xstest_safe and xstest_unsafe."""
        named = {"harmful": self.harmful, "harmless": self.harmless}
        if self.xstest is not None:
            named |= {"xstest_safe": self.xstest.safe, "xstest_unsafe": self.xstest.unsafe}
        return named


@dataclass
class ValidationPrompts:
    """Prompts for choosing each method's strength (``eval.strength``), disjoint from both the
    training and the evaluation prompts."""

    harmful: list[str]
    harmless: list[str]


def overlap(train: Sequence[str], held_out: Sequence[str]) -> list[str]:
    """Prompts found in both sets (compared after stripping whitespace and case)."""
    seen = {p.strip().lower() for p in train}
    return [p for p in held_out if p.strip().lower() in seen]


def held_out_overlap(train: Mapping[str, Sequence[str]], held_out: EvalPrompts) -> list[str]:
    """Held-out prompts that also appear among the training prompts of their class."""
    return [
        text
        for kind in ("harmful", "harmless")
        for text in overlap(train[kind], getattr(held_out, kind))
    ]


def validation_overlap(
    train: Mapping[str, Sequence[str]], held_out: EvalPrompts, validation: ValidationPrompts
) -> list[str]:
    """Validation prompts that also appear among the training or evaluation prompts."""
    return [
        text
        for kind in ("harmful", "harmless")
        for text in overlap([*train[kind], *getattr(held_out, kind)], getattr(validation, kind))
    ]


def spread(items: list[Any], n: int) -> list[Any]:
    """``n`` items spread evenly over ``items`` (all of them when ``n`` is larger), so a subset
    of the shipped questions keeps every topic."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


@dataclass(frozen=True)
class PromptFiles:
    """User files that replace the shipped splits (``None``: the shipped one).

    Attributes:
        harmful: Training harmful prompts.
        harmless: Training harmless prompts.
        eval_harmful: Held-out harmful prompts.
        eval_harmless: Held-out harmless prompts.
        texts: Prose paragraphs for the perplexity check.
        questions: Multiple-choice questions (``capability.load_questions``).
        validation_harmful: Validation harmful prompts.
        validation_harmless: Validation harmless prompts.
        xstest: An XSTest-style CSV or ``"shipped"`` (``xstest.load_over_refusal``); ``None``
            (default): no over-refusal prompts at all.
    """

    harmful: str | Path | None = None
    harmless: str | Path | None = None
    eval_harmful: str | Path | None = None
    eval_harmless: str | Path | None = None
    texts: str | Path | None = None
    questions: str | Path | None = None
    validation_harmful: str | Path | None = None
    validation_harmless: str | Path | None = None
    xstest: str | Path | None = None


def _questions(path: str | Path | None, n: int) -> list[Question]:
    """``n`` questions spread over the shipped ones or the file's (none when ``n`` is 0: the
    file is not even read)."""
    if n <= 0:
        return []
    pool = load_questions(path) if path else shipped_questions()
    if len(pool) < n:
        warnings.warn(
            f"WARNING: {path or 'the shipped questions'} hold(s) {len(pool)} "
            f"questions, fewer than n_questions={n}: asking all {len(pool)} "
            "(results.json records the number asked)",
            stacklevel=3,
        )
    return spread(pool, n)


def _prompts(path: str | Path | None, kind: str, split: str, n: int) -> list[str]:
    prompts = load_prompts(path) if path else default_prompts(kind, split)  # type: ignore[arg-type]
    return prompts[:n]


@dataclass
class JobPrompts:
    """Training, validation and held-out prompts of a job (``fit`` uses only the training ones;
    ``compare`` chooses strengths on the validation ones)."""

    train_harmful: list[str]
    train_harmless: list[str]
    held_out: EvalPrompts
    validation: ValidationPrompts | None = None

    @classmethod
    def shipped(
        cls, settings: Any, files: PromptFiles | None = None, *, allow_overlap: bool = False
    ) -> "JobPrompts":
        """The shipped splits, each replaced by a user file where ``files`` gives one, cut to
        their first ``settings.n_train`` / ``n_validation`` / ``n_eval`` prompts (``n_texts``
        prose paragraphs, and ``n_questions`` multiple-choice questions spread over the shipped
        or given ones). Validation prompts only for settings with ``n_validation``; over-refusal
        prompts only when ``files.xstest`` names a set, cut to ``settings.n_xstest`` per class.
        Overlapping splits raise unless ``allow_overlap`` (``check_overlap``)."""
        files = files or PromptFiles()
        n_eval = getattr(settings, "n_eval", 32)
        n_texts = getattr(settings, "n_texts", 8)
        prompts = cls(
            _prompts(files.harmful, "harmful", "train", settings.n_train),
            _prompts(files.harmless, "harmless", "train", settings.n_train),
            EvalPrompts(
                _prompts(files.eval_harmful, "harmful", "eval", n_eval),
                _prompts(files.eval_harmless, "harmless", "eval", n_eval),
                load_prompts(files.texts) if files.texts else plain_text()[:n_texts],
                _questions(files.questions, getattr(settings, "n_questions", 0)),
            ),
        )
        n_validation = getattr(settings, "n_validation", None)
        if n_validation is not None:
            prompts.validation = ValidationPrompts(
                _prompts(files.validation_harmful, "harmful", "validation", n_validation),
                _prompts(files.validation_harmless, "harmless", "validation", n_validation),
            )
        if files.xstest is not None:
            prompts.held_out.xstest = load_over_refusal(files.xstest).cut(
                getattr(settings, "n_xstest", None)
            )
        prompts.check_overlap(allow=allow_overlap)
        return prompts

    @property
    def train(self) -> dict[str, list[str]]:
        """The training prompts by class."""
        return {"harmful": self.train_harmful, "harmless": self.train_harmless}

    def check_control_tokens(self, tokenizer: Any, *, system: str | None = None) -> None:
        """Raise ``ValueError`` if ``system`` or a prompt the jobs format as a chat turn (every
        instruction and capability question; not the prose ``texts``) holds one of the
        tokenizer's control tokens (``control_tokens.check_control_tokens``)."""
        held_out = self.held_out
        parts = {
            "training harmful prompts": self.train_harmful,
            "training harmless prompts": self.train_harmless,
            "held-out harmful prompts": held_out.harmful,
            "held-out harmless prompts": held_out.harmless,
            "capability questions": [question.prompt() for question in held_out.questions],
        }
        if held_out.xstest is not None:
            parts["over-refusal safe prompts"] = held_out.xstest.safe
            parts["over-refusal unsafe prompts"] = held_out.xstest.unsafe
        if self.validation is not None:
            parts["validation harmful prompts"] = self.validation.harmful
            parts["validation harmless prompts"] = self.validation.harmless
        check_control_tokens(tokenizer, (), system=system)
        for where, texts in parts.items():
            check_control_tokens(tokenizer, texts, where=where)

    def check_overlap(self, *, allow: bool) -> int:
        """Raise (or, with ``allow``, warn) if held-out prompts appear in the training ones, or
        validation prompts in either; returns how many do."""
        found = {
            "held-out prompt(s) also appear in the training prompts": held_out_overlap(
                self.train, self.held_out
            )
        }
        if self.validation is not None:
            found["validation prompt(s) also appear in the training or held-out prompts"] = (
                validation_overlap(self.train, self.held_out, self.validation)
            )
        for what, shared in found.items():
            if not shared:
                continue
            message = (
                f"{len(shared)} {what} (e.g. {shared[0]!r}); results on them measure "
                "memorisation, not generalisation"
            )
            if not allow:
                raise UserInputError(
                    f"{message}. Use disjoint files, or allow the overlap (allow_overlap=True; "
                    "CLI: --allow-overlap)"
                )
            warnings.warn(f"WARNING: {message}", stacklevel=2)
        return sum(len(shared) for shared in found.values())
