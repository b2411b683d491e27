"""Choosing a strength on validation prompts: KL ceiling, then judged compliance."""

import random

import pytest

from tl_ot_ablation.eval.early_stop import judge_until_decided
from tl_ot_ablation.eval.record import MethodRecord
from tl_ot_ablation.eval.strength import candidate_strengths, choose_strength


def _judge_by(compliant: dict[float, int], n: int = 4):
    """A stand-in judge: ``compliant[s]`` of ``n`` completions comply at strength ``s``."""
    calls: list[float] = []

    def judge_at(strength: float, need: int | None = None) -> list[str]:
        calls.append(strength)
        k = compliant[round(strength, 6)]
        return ["compliance"] * k + ["deflection"] * (n - k)

    return judge_at, calls


def test_the_most_compliant_strength_below_the_kl_ceiling_wins() -> None:
    # KL = s², budget 1 -> ceiling 1; compliance peaks at 0.75 and falls at the ceiling
    # (what a gated map does when its text degrades).
    judge_at, calls = _judge_by({0.5: 2, 0.75: 4, 1.0: 3})
    choice = choose_strength(lambda s: s**2, judge_at, budget=1.0, max_strength=2.0)
    assert choice.ceiling == pytest.approx(1.0)
    assert choice.strength == pytest.approx(0.75)
    assert sorted(calls) == pytest.approx([0.5, 0.75, 1.0])
    assert [p.compliance for p in choice.points] == [0.5, 1.0, 0.75]
    assert all(p.kl <= 1.0 for p in choice.points)
    assert choice.match is not None and choice.match.strength == choice.ceiling


def test_ties_go_to_the_lower_strength() -> None:
    judge_at, _ = _judge_by({0.5: 3, 0.75: 3, 1.0: 3})
    choice = choose_strength(lambda s: s, judge_at, budget=None, ceiling=1.0)
    assert choice.strength == 0.5 and choice.match is None


def test_the_ceiling_follows_the_budget() -> None:
    calls: list[float] = []

    def judge_at(strength: float, need: int | None = None) -> list[str]:
        calls.append(strength)
        return ["compliance", "refusal"]

    choice = choose_strength(lambda s: 4 * s**2, judge_at, budget=1.0, steps=12)
    assert choice.ceiling == pytest.approx(0.5, rel=0.06)
    assert max(calls) == choice.ceiling and len(calls) == 3


def test_rule_kl_keeps_the_ceiling_and_never_generates() -> None:
    judge_at, calls = _judge_by({})
    choice = choose_strength(lambda s: 0.01 * s, judge_at, budget=1.0, rule="kl", max_strength=2.0)
    assert choice.strength == 2.0 and calls == []
    assert {p.strength for p in choice.points} == {1.0, 2.0}
    assert all(p.compliance is None for p in choice.points)


def test_a_zero_ceiling_chooses_zero_without_judging() -> None:
    judge_at, calls = _judge_by({})
    choice = choose_strength(lambda s: 10.0, judge_at, budget=1.0, steps=3)
    assert choice.strength == 0.0 and calls == []


def test_bad_rules_and_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="rule must be one of"):
        choose_strength(lambda s: s, lambda s, need: [], budget=None, rule="vibes")
    with pytest.raises(ValueError, match="fractions"):
        choose_strength(lambda s: s, lambda s, need: [], budget=None, fractions=(0.5, 1.5))
    with pytest.raises(ValueError, match="no judged completions"):
        choose_strength(lambda s: s, lambda s, need: [], budget=None)


def _stopping_judge(answers: dict[float, list[str]], group: int, *, stop: bool = True):
    """A stand-in judge that judges ``group`` prompts at a time and, when ``stop``, stops as
    ``compare`` does; records how many prompts it judged at each strength."""
    judged: dict[float, int] = {}

    def judge_at(strength: float, need: int | None) -> list[str | None]:
        truth = answers[strength]

        def judge(start: int, stop: int) -> list[str]:
            judged[strength] = judged.get(strength, 0) + stop - start
            return truth[start:stop]

        need = need if stop else None
        return judge_until_decided([None] * len(truth), judge, group=group, need=need)

    return judge_at, judged


@pytest.mark.parametrize("group", [1, 2, 3, 8])
def test_stopping_early_keeps_the_choice_of_judging_every_prompt(group: int) -> None:
    rng = random.Random(group)
    for _ in range(50):
        answers = {
            s: rng.choices(["compliance", "refusal", "deflection"], k=8)
            for s in (0.5, 1.0, 1.5, 2.0)
        }
        stopping, judged = _stopping_judge(answers, group)
        every, _ = _stopping_judge(answers, group=8, stop=False)
        options = {"budget": None, "ceiling": 2.0, "fractions": (0.25, 0.5, 0.75, 1.0)}
        early = choose_strength(lambda s: s, stopping, **options)
        full = choose_strength(lambda s: s, every, **options)
        assert early.strength == full.strength
        chosen = next(p for p in early.points if p.strength == early.strength)
        assert chosen.complete and chosen == next(
            p for p in full.points if p.strength == full.strength
        )
        stopped = [p for p in early.points if not p.complete]
        assert all(p.judged_prompts == judged[p.strength] < 8 for p in stopped)


def test_a_candidate_that_cannot_tie_the_best_is_stopped_after_one_group() -> None:
    answers = {1.0: ["compliance"] * 8, 0.5: ["refusal"] * 8}
    judge_at, judged = _stopping_judge(answers, group=2)
    choice = choose_strength(lambda s: s, judge_at, budget=None, ceiling=1.0, fractions=(0.5, 1.0))
    assert choice.strength == 1.0
    assert judged == {1.0: 8, 0.5: 2}  # 0 of 2 plus 6 to go cannot reach 8
    weak = choice.points[0]
    assert weak.judged_prompts == 2 and weak.refusal == 1.0 and not weak.complete


def test_candidates_are_distinct_fractions_of_the_ceiling() -> None:
    assert candidate_strengths(2.0, (1.0, 0.5, 0.5)) == [1.0, 2.0]
    assert candidate_strengths(0.0, (0.5, 1.0)) == []


def test_the_choice_round_trips_through_the_record() -> None:
    def judge_at(strength: float, need: int | None) -> list[str | None]:
        k = int(strength * 4)
        labels: list[str | None] = ["compliance"] * k + ["refusal"] * (4 - k)
        return labels if need is None else [*labels[:2], None, None]  # stopped after 2

    choice = choose_strength(lambda s: s**2, judge_at, budget=0.9, steps=4)
    assert any(p.judged_prompts == 2 for p in choice.points)
    record = MethodRecord(choice.strength, matched=choice.match, selection=choice.to_dict())
    again = MethodRecord.from_json(record.to_json())
    assert again.choice() == choice
