"""Which sweep placement is best (``eval.sweep_scorer``): within budget, in the chosen measure."""

import pytest

from tl_ot_ablation.eval.metrics import Estimate
from tl_ot_ablation.eval.record import SweepPoint
from tl_ot_ablation.eval.sweep_scorer import best_placement, point_damage


def _point(layer: int, kl: float, log_odds: float, compliance: float | None) -> SweepPoint:
    def est(value: float) -> Estimate:
        return Estimate(value, value, value)

    share = None if compliance is None else est(compliance)
    return SweepPoint(
        "layer", "ot_selective", (layer,), 4, 1.0, est(log_odds), est(kl), None, share
    )


def test_the_best_placement_is_the_most_compliant_within_budget() -> None:
    judged = [_point(1, 0.01, -3.0, 0.5), _point(2, 0.02, 1.0, 0.9), _point(3, 0.5, -5.0, 1.0)]
    assert best_placement(judged, budget=0.1).layers == (2,)  # layer 3 costs too much
    tie = [_point(1, 0.01, -1.0, 0.9), _point(2, 0.02, -2.0, 0.9)]
    assert best_placement(tie, budget=0.1).layers == (2,)  # then the lower log-odds
    tie = [_point(1, 0.02, 0.0, 0.9), _point(2, 0.01, 0.0, 0.9)]
    assert best_placement(tie, budget=0.1).layers == (2,)  # then the cheaper edit
    plain = [_point(1, 0.01, -3.0, None), _point(2, 0.02, 1.0, None)]
    assert best_placement(plain, budget=0.1).layers == (1,)  # the lowest log-odds
    assert best_placement(judged, budget=0.001) is None


# --- sweeps -----------------------------------------------------------------------------------


def _flat(value: float) -> Estimate:
    return Estimate(value, value, value)


def _spread_point(layer: int, mean: float, p90: float, compliance: float) -> SweepPoint:
    return SweepPoint(
        "layer", "ot_selective", (layer,), 4, 1.0, _flat(-1.0), _flat(mean),
        compliance=_flat(compliance), kl_harmless_median=_flat(mean / 2),
        kl_harmless_p90=_flat(p90), kl_harmless_share_above=_flat(0.5),
    )  # fmt: skip


def test_best_placement_respects_the_measure() -> None:
    # Layer 0: low mean, one large KL (high p90); layer 1: even spread.
    points = [_spread_point(0, 0.05, 0.5, 0.9), _spread_point(1, 0.08, 0.1, 0.6)]
    assert best_placement(points, 0.1).layers == (0,)
    assert best_placement(points, 0.2, "p90").layers == (1,)
    assert point_damage(points[0], "median") == 0.025
    bare = SweepPoint("layer", "ot_selective", (0,), 4, 1.0, Estimate(0.0, 0.0, 0.0), _flat(1.0))
    assert SweepPoint.from_json(bare.to_json()) == bare  # older sweeps: no distribution
    with pytest.raises(ValueError, match="mean only"):
        point_damage(bare, "p90")
