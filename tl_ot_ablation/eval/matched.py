"""Matched damage: the strength at which an intervention costs a given harmless KL.

Comparing refusal rates at each method's default strength rewards whichever method breaks the
model hardest. ``match_strength`` finds, by bisection, the largest strength whose damage (any
increasing function of strength, in practice the mean first-token KL on harmless prompts) stays
within a budget, so methods are compared at equal cost. Strength 0 is the unmodified model
(zero damage); the search starts at strength 1 and goes up to ``max_strength`` only when the
method at full strength is cheaper than the budget.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.errors import UserInputError


@dataclass(frozen=True)
class StrengthMatch:
    """The result of ``match_strength``.

    Attributes:
        strength: The largest strength tried whose damage is within the budget (0 if none).
        damage: The damage at ``strength``.
        budget: The damage budget.
        reached: Whether ``damage`` is within ``rtol`` of the budget (``False``: even
            ``max_strength`` costs less, or bisection ran out of steps).
        path: Every ``(strength, damage)`` evaluated, in order.
    """

    strength: float
    damage: float
    budget: float
    reached: bool
    path: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "strength": self.strength,
            "damage": self.damage,
            "budget": self.budget,
            "reached": self.reached,
            "path": [list(point) for point in self.path],
        }


def match_strength(
    damage_at: Callable[[float], float],
    budget: float,
    *,
    max_strength: float = 2.0,
    steps: int = 6,
    rtol: float = 0.1,
) -> StrengthMatch:
    """Largest strength in ``[0, max_strength]`` with ``damage_at(strength) <= budget``.

    Assumes damage increases with strength (the evaluated ``path`` is returned so that a
    violation can be seen). Stops once the damage is within ``rtol × budget`` below the budget
    or after ``steps`` refinements; never returns a strength whose damage exceeds the budget.
    """
    if not budget > 0:
        raise UserInputError(f"the damage budget must be positive, got {budget}")
    if not max_strength >= 1:
        raise UserInputError(f"max_strength must be >= 1, got {max_strength}")
    path: list[tuple[float, float]] = []

    def evaluate(strength: float) -> float:
        damage = float(damage_at(strength))
        if damage != damage:  # NaN
            raise UserInputError(f"the damage at strength {strength} is NaN")
        path.append((strength, damage))
        return damage

    def close(damage: float) -> bool:
        return budget * (1 - rtol) <= damage <= budget

    target = budget * (1 - rtol / 2)  # aim at the middle of the accepted window
    best = (0.0, 0.0)
    damage = evaluate(1.0)
    if damage <= budget:
        best = (1.0, damage)
        if close(damage) or max_strength == 1:
            return StrengthMatch(1.0, damage, budget, close(damage), path)
        top = evaluate(max_strength)
        if top <= budget:
            return StrengthMatch(max_strength, top, budget, close(top), path)
        low, highs = (1.0, damage), [(max_strength, top)]
    else:
        low, highs = (0.0, 0.0), [(1.0, damage)]
    for _ in range(steps):
        middle = _next_strength(low, highs, target)
        damage = evaluate(middle)
        if damage <= budget:
            low = best = (middle, damage)
            if close(damage):
                break
        else:
            highs.append((middle, damage))
    return StrengthMatch(best[0], best[1], budget, close(best[1]), path)


def _log_slope(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Slope of log-damage against log-strength between two points (NaN if undefined)."""
    if min(a + b) <= 0 or a[0] == b[0] or a[1] == b[1]:
        return math.nan
    return math.log(b[1] / a[1]) / math.log(b[0] / a[0])


def _next_strength(
    low: tuple[float, float], highs: list[tuple[float, float]], target: float
) -> float:
    """Interpolate log-damage against log-strength inside the bracket ``(low, highs[-1])``
    (from zero: a power law through the last two points above budget, else damage ~
    strength²); fall back to bisection near the bracket's ends."""
    s_low, d_low = low
    s_high, d_high = highs[-1]
    if s_low == 0 or d_low <= 0:
        slope = _log_slope(highs[-2], highs[-1]) if len(highs) > 1 else 2.0
    else:
        slope = _log_slope(low, highs[-1])
    if slope > 0:
        guess = s_high * math.exp(math.log(target / d_high) / slope)
    else:  # not increasing, or undefined: bisect
        guess = math.nan
    margin = 0.05 * (s_high - s_low)
    if not s_low + margin <= guess <= s_high - margin:  # also catches NaN
        return (s_low + s_high) / 2
    return guess
