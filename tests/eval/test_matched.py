"""Matched damage (``eval.matched``): the strength search finds the budget without exceeding it."""

import math

import pytest

from tl_ot_ablation.eval.matched import match_strength

# --- match_strength -------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0.01, 0.3, 0.9, 1.7])
def test_match_strength_finds_the_budget_without_exceeding_it(budget: float) -> None:
    match = match_strength(lambda s: s**2, budget, max_strength=2.0, steps=12, rtol=0.01)
    assert match.damage <= budget
    assert match.reached
    assert match.strength == pytest.approx(math.sqrt(budget), rel=0.01)
    assert match.path[0][0] == 1.0  # always starts at full strength


@pytest.mark.parametrize(
    "damage", [lambda s: s**2, lambda s: 0.05 * s**3 + 0.3 * s, lambda s: 20 * s**4]
)
@pytest.mark.parametrize("budget", [0.01, 0.3, 1.7])
def test_match_strength_needs_few_evaluations_on_power_law_curves(damage, budget) -> None:
    match = match_strength(damage, budget, max_strength=2.0)
    if damage(2.0) > budget:
        assert match.reached and len(match.path) <= 4
        assert budget * 0.9 <= match.damage <= budget


def test_match_strength_stops_at_max_strength_when_the_method_is_cheap() -> None:
    match = match_strength(lambda s: 0.01 * s, 1.0, max_strength=3.0)
    assert (match.strength, match.reached) == (3.0, False)
    assert [s for s, _ in match.path] == [1.0, 3.0]


def test_match_strength_never_returns_an_over_budget_point() -> None:
    # A step function: every strength > 0.3 costs 10x the budget.
    match = match_strength(lambda s: 10.0 if s > 0.3 else 0.0, 1.0, steps=6)
    assert match.damage <= 1.0 and match.strength <= 0.3
    assert not match.reached


def test_match_strength_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="positive"):
        match_strength(lambda s: s, 0.0)
    with pytest.raises(ValueError, match="max_strength"):
        match_strength(lambda s: s, 1.0, max_strength=0.5)
    with pytest.raises(ValueError, match="NaN"):
        match_strength(lambda s: float("nan"), 1.0)
