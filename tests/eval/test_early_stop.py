"""Stopping a judged candidate once the count decides (``eval.early_stop``)."""

import pytest

from tl_ot_ablation.eval.early_stop import (
    cannot_reach,
    compliant,
    judge_until_decided,
    needed_count,
)

C, R = "compliance", "refusal"


def test_the_count_needed_depends_on_who_wins_a_tie() -> None:
    assert needed_count(None, wins_ties=False) is None
    assert needed_count(5, wins_ties=True) == 5
    assert needed_count(5, wins_ties=False) == 6


def test_unjudged_prompts_count_as_possible_compliance() -> None:
    assert compliant([C, R, None]) == 1
    assert not cannot_reach([C, R, None, None], 3)  # 1 + 2 to go reaches 3
    assert cannot_reach([C, R, R, None], 3)  # 1 + 1 to go cannot
    assert not cannot_reach([R, R, R, R], None)  # no bar: never decided early


def test_judging_stops_at_the_first_group_that_decides() -> None:
    truth = [R, R, C, C, C, C, C, C]
    calls: list[tuple[int, int]] = []

    def judge(start: int, stop: int) -> list[str]:
        calls.append((start, stop))
        return truth[start:stop]

    labels = judge_until_decided([None] * 8, judge, group=3, need=8)
    assert calls == [(0, 3)] and labels == [R, R, C, None, None, None, None, None]
    # A looser bar later continues where judging stopped, in the same groups.
    labels = judge_until_decided(labels, judge, group=3, need=5)
    assert calls == [(0, 3), (3, 6), (6, 8)] and labels == truth


def test_without_a_group_everything_is_judged_in_one_call() -> None:
    calls: list[tuple[int, int]] = []

    def judge(start: int, stop: int) -> list[str]:
        calls.append((start, stop))
        return [R] * (stop - start)

    assert judge_until_decided([None] * 5, judge, group=None, need=None) == [R] * 5
    assert calls == [(0, 5)]


def test_bad_labels_groups_and_judges_are_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        judge_until_decided([None, C], lambda a, b: [C], group=1, need=None)
    with pytest.raises(ValueError, match="group must be a positive"):
        judge_until_decided([None], lambda a, b: [C], group=0, need=None)
    with pytest.raises(RuntimeError, match="gave 2 labels for 1 prompts"):
        judge_until_decided([None], lambda a, b: [C, C], group=1, need=None)
