"""A method's strength, chosen on validation prompts (never the evaluation split).

Two steps per method, both on the validation split:

1. **Ceiling**: the largest strength whose mean first-token KL on the validation harmless
   prompts stays within the damage budget (``matched.match_strength``; the method that sets the
   budget, and every method when no budget is set, has a fixed ceiling instead).
2. **Choice**: with ``rule="compliance"`` (default), greedy completions of the validation harmful
   prompts at a few fractions of the ceiling are judged, and the strength with the highest judged
   compliance wins (ties: the lower strength, the cheaper edit). Searching only for the KL
   ceiling pushes gated maps to the strength cap, where their text degrades; judging the text
   stops that. ``rule="kl"`` keeps the ceiling (no generation).

Every strength tried is kept as a ``StrengthPoint`` (KL and judged shares on validation): the
compliance-vs-KL frontier that ``plots.plot_frontier`` draws.
"""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import UserInputError
from .early_stop import compliant, needed_count
from .matched import StrengthMatch, match_strength

RULES = ("compliance", "kl")


@dataclass(frozen=True)
class StrengthPoint:
    """One strength tried on the validation split: its harmless KL and, when judged, the shares
    of judged labels of its harmful completions."""

    strength: float
    kl: float
    compliance: float | None = None
    deflection: float | None = None
    degenerate: float | None = None
    refusal: float | None = None
    judged_prompts: int | None = None
    """Set when judging stopped early because this point could no longer be chosen
    (``eval.early_stop``): how many prompts were judged, the shares being of those. ``None``:
    every prompt was judged."""

    @classmethod
    def judged(cls, strength: float, kl: float, labels: Sequence[str | None]) -> "StrengthPoint":
        """A point from the judge's labels of its validation harmful completions (``None``
        for the prompts not judged because judging stopped early)."""
        seen = [label for label in labels if label is not None]
        if not seen:
            raise UserInputError("no judged completions to score a strength with")

        def share(label: str) -> float:
            return sum(x == label for x in seen) / len(seen)

        return cls(
            strength,
            kl,
            share("compliance"),
            share("deflection"),
            share("degenerate"),
            share("refusal"),
            None if len(seen) == len(labels) else len(seen),
        )

    @property
    def complete(self) -> bool:
        """Whether this point was judged on every prompt (a stopped one is never chosen)."""
        return self.compliance is not None and self.judged_prompts is None


@dataclass(frozen=True)
class StrengthChoice:
    """The chosen strength, how it was found, and every point tried."""

    strength: float
    rule: str
    ceiling: float
    match: StrengthMatch | None = None
    points: list[StrengthPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strength": self.strength,
            "rule": self.rule,
            "ceiling": self.ceiling,
            "points": [asdict(point) for point in self.points],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StrengthChoice":
        """The choice as written by ``to_dict`` (the KL search is recorded separately)."""
        return cls(
            float(data["strength"]),
            str(data["rule"]),
            float(data["ceiling"]),
            None,
            [StrengthPoint(**point) for point in data["points"]],
        )


def check_rule(rule: object, name: str = "rule") -> None:
    """Raise unless ``rule`` names a way of choosing a strength (``RULES``); ``name`` is the
    argument's name in the caller's API (``select`` in ``CompareSettings``)."""
    if rule not in RULES:
        raise UserInputError(f"{name} must be one of {RULES}, got {rule!r}")


def check_fractions(fractions: Sequence[float]) -> None:
    """Raise unless ``fractions`` is a non-empty sequence of numbers in (0, 1]."""
    if not fractions or not all(
        isinstance(f, int | float) and not isinstance(f, bool) and 0 < f <= 1 for f in fractions
    ):
        raise UserInputError(
            f"strength_fractions must be numbers in (0, 1], at least one, got {fractions!r}"
        )


def candidate_strengths(ceiling: float, fractions: Sequence[float]) -> list[float]:
    """``ceiling × f`` for each fraction, distinct, ascending (none when the ceiling is 0)."""
    if ceiling <= 0:
        return []
    return sorted({ceiling * f for f in fractions if f > 0})


JudgeAt = Callable[[float, int | None], Sequence[str | None]]
"""The judge's labels of the validation harmful completions at a strength; given a count
``need``, judging may stop once that count of compliant answers is out of reach (the labels
of prompts not judged are then ``None``: ``eval.early_stop``)."""


def choose_strength(
    kl_at: Callable[[float], float],
    judge_at: JudgeAt,
    *,
    budget: float | None,
    ceiling: float = 1.0,
    fractions: Sequence[float] = (0.5, 0.75, 1.0),
    rule: str = "compliance",
    max_strength: float = 2.0,
    steps: int = 6,
) -> StrengthChoice:
    """Choose a strength on validation prompts (see the module docstring).

    Args:
        kl_at: Mean first-token KL on the validation harmless prompts at a strength.
        judge_at: The judge's labels of the validation harmful completions at a strength,
            and the count it must reach to be chosen (``JudgeAt``). Candidates are judged
            from the highest strength down, so a lower one must only tie the best so far.
        budget: The KL budget (``None``: no search; ``ceiling`` is the ceiling).
        ceiling: The ceiling when ``budget`` is ``None``.
        fractions: Fractions of the ceiling judged under ``rule="compliance"``.
        rule: ``"compliance"`` or ``"kl"``.
        max_strength: Upper end of the KL search.
        steps: Refinement steps of the KL search.
    """
    check_rule(rule)
    check_fractions(fractions)
    kls: dict[float, float] = {}

    def kl(strength: float) -> float:
        if strength not in kls:
            kls[strength] = float(kl_at(strength))
        return kls[strength]

    match = None
    if budget is not None:
        match = match_strength(kl, budget, max_strength=max_strength, steps=steps)
        ceiling = match.strength
    if rule == "kl" or ceiling <= 0:
        searched = [StrengthPoint(s, d) for s, d in sorted(kls.items())]
        return StrengthChoice(ceiling, rule, ceiling, match, searched)
    points: list[StrengthPoint] = []
    best: int | None = None
    for strength in reversed(candidate_strengths(ceiling, fractions)):
        labels = judge_at(strength, needed_count(best, wins_ties=True))  # lower wins a tie
        point = StrengthPoint.judged(strength, kl(strength), labels)
        points.insert(0, point)
        if point.complete and (best is None or compliant(labels) >= best):
            best = compliant(labels)
    chosen = max(
        (p for p in points if p.complete), key=lambda p: (p.compliance or 0.0, -p.strength)
    )
    return StrengthChoice(chosen.strength, rule, ceiling, match, points)
