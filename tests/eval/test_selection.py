"""Choosing the map's settings from training data (``eval.selection``): k and the covariance
estimator by held-out likelihood, layers by W2 (never an identical one), judged candidates."""

import math

import pytest
import torch

import tl_ot_ablation as tlo
from tests.helpers import HARMFUL, HARMLESS, gaussian_pair, gaussian_rows, random_spd
from tl_ot_ablation import CollectOptions, GaussianStats
from tl_ot_ablation.core.degeneracy import IdenticalClassesError
from tl_ot_ablation.core.pca import PCABasis
from tl_ot_ablation.core.shrinkage import ledoit_wolf_covariance
from tl_ot_ablation.eval.selection import (
    best_trial,
    heldout_log_likelihood,
    judged_candidates,
    layers_by_w2,
)


def _low_rank_rows(n: int, d: int, rank: int, shift: float, seed: int) -> torch.Tensor:
    loadings = torch.randn(
        d, rank, generator=torch.Generator().manual_seed(99), dtype=torch.float64
    )
    cov = loadings @ loadings.T * 4 + 0.25 * torch.eye(d, dtype=torch.float64)
    mean = torch.full((d,), shift, dtype=torch.float64)
    return gaussian_rows(n, mean, cov, seed=seed)


def test_score_equals_a_direct_density_computation() -> None:
    source = _low_rank_rows(40, 12, 3, 1.0, seed=1)
    target = _low_rank_rows(40, 12, 3, 0.0, seed=2)
    (score,) = heldout_log_likelihood(
        source, target, n_components=[4], estimators=["ledoit_wolf"], reg=0.0
    )
    basis = PCABasis.from_rows(torch.cat([source[:30], target[:30]]), 4, method="exact")
    total = 0.0
    for rows in (source, target):
        train, held = rows[:30], rows[30:]
        z_train, z_held = basis.project(train), basis.project(held)
        cov, _ = ledoit_wolf_covariance(z_train)
        inside = torch.distributions.MultivariateNormal(z_train.mean(0), cov).log_prob(z_held)
        var = (train - basis.reconstruct(z_train)).square().sum(-1).mean() / 8
        residual = held - basis.reconstruct(z_held)
        outside = torch.distributions.Normal(0.0, var.sqrt()).log_prob(residual).sum(-1)
        # The isotropic residual lives in 8 of the 12 dimensions, not all 12.
        outside = outside + 0.5 * 4 * torch.log(2 * math.pi * var)
        total += float((inside + outside).mean())
    assert score.log_likelihood == pytest.approx(total / 2, rel=1e-9)


def test_likelihood_prefers_a_k_near_the_true_rank() -> None:
    source = _low_rank_rows(60, 40, 4, 0.5, seed=3)
    target = _low_rank_rows(60, 40, 4, -0.5, seed=4)
    scores = heldout_log_likelihood(source, target, n_components=[1, 2, 4, 8, 30])
    assert 4 <= scores[0].n_components <= 8


def test_shrinkage_wins_when_rows_are_fewer_than_dimensions() -> None:
    d = 40
    cov = random_spd(d, condition=5.0, seed=5)
    source = gaussian_rows(24, torch.full((d,), 0.3, dtype=torch.float64), cov, seed=6)
    target = gaussian_rows(24, torch.zeros(d, dtype=torch.float64), cov, seed=7)
    scores = heldout_log_likelihood(source, target, n_components=[30])
    by_estimator = {s.estimator: s.log_likelihood for s in scores}
    assert by_estimator["ledoit_wolf"] > by_estimator["ridge"]
    assert by_estimator["oas"] > by_estimator["ridge"]


def test_bad_requests_are_refused() -> None:
    rows = torch.randn(10, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown estimator"):
        heldout_log_likelihood(rows, rows, n_components=[2], estimators=["magic"])
    with pytest.raises(ValueError, match="held_out_fraction"):
        heldout_log_likelihood(rows, rows, n_components=[2], held_out_fraction=1.0)
    with pytest.raises(ValueError, match="n_components=99"):
        heldout_log_likelihood(rows, rows, n_components=[99])


def test_layers_by_w2_takes_the_largest_scale_free_distance() -> None:
    rows = [
        {"layer": 0, "w2": 1.0, "w2_relative": 0.1},
        {"layer": 1, "w2": 5.0, "w2_relative": 0.4},
        {"layer": 2, "w2": 50.0, "w2_relative": 0.3},  # largest raw W2, not the choice
    ]
    assert layers_by_w2(rows) == [1]
    assert layers_by_w2(rows, count=2) == [1, 2]
    with pytest.raises(ValueError, match=r"count must be in 1\.\.3"):
        layers_by_w2(rows, count=4)


def test_select_layers_ranks_the_models_layers_by_the_training_statistics(tiny_bridge) -> None:

    from tl_ot_ablation.eval.selection import w2_by_layer
    from tl_ot_ablation.lens.training import collect_stats_pair

    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(3)]
    stats = collect_stats_pair(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        names,
        CollectOptions(progress=False),
    )
    ranking = w2_by_layer(stats, 3, n_components=4)
    chosen = tlo.select_layers(tiny_bridge, HARMFUL, HARMLESS, n_components=4, progress=False)
    assert chosen == layers_by_w2(ranking)
    two = tlo.select_layers(tiny_bridge, HARMFUL, HARMLESS, count=2, n_components=4, progress=False)
    assert len(two) == 2 and chosen[0] in two


def test_select_layers_reuses_a_pass_from_the_same_prompts_only(tiny_bridge) -> None:
    """The quickstart's one pass: same choice as a fresh pass; other prompts or a pass
    missing layers are refused with a message rather than silently used."""

    from tl_ot_ablation.lens.training import collect_training

    options = {"n_components": 4, "progress": False}
    acts = tlo.collect_every_layer(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        tlo.CollectOptions(progress=False),
    )
    fresh = tlo.select_layers(tiny_bridge, HARMFUL, HARMLESS, count=2, **options)
    reused = tlo.select_layers(tiny_bridge, HARMFUL, HARMLESS, count=2, training=acts, **options)
    assert reused == fresh
    with pytest.raises(ValueError, match="not collected from these prompts"):
        tlo.select_layers(tiny_bridge, HARMFUL[:-1], HARMLESS, training=acts, **options)
    one_layer = collect_training(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        ["blocks.0.hook_resid_pre"],
        CollectOptions(progress=False),
    )
    with pytest.raises(ValueError, match="lacks some layers"):
        tlo.select_layers(tiny_bridge, HARMFUL, HARMLESS, training=one_layer, **options)


def _w2_rows(n_layers: int, peak: int) -> list[dict[str, int | float]]:
    return [{"layer": i, "w2_relative": 1.0 if i == peak else 0.1} for i in range(n_layers)]


def test_candidates_are_the_papers_depths_and_the_w2_pick() -> None:
    assert judged_candidates(28, _w2_rows(28, 23)) == [11, 14, 17, 23]
    assert judged_candidates(28, _w2_rows(28, 14)) == [11, 14, 17]  # no layer twice
    assert judged_candidates(24, _w2_rows(24, 22)) == [10, 12, 14, 22]
    assert judged_candidates(3, _w2_rows(3, 0)) == [0, 1, 2]


def _trial(layer: int, kl: float, compliance: float | None) -> dict[str, float | None]:
    return {"layer": layer, "kl": kl, "compliance": compliance}


def test_the_most_compliant_layer_wins_and_ties_go_to_the_cheaper_edit() -> None:
    assert best_trial([_trial(11, 0.1, 0.5), _trial(14, 0.2, 0.9)])["layer"] == 14
    assert best_trial([_trial(11, 0.1, 0.9), _trial(14, 0.05, 0.9)])["layer"] == 14
    assert best_trial([_trial(11, 0.1, 0.9), _trial(14, 0.1, 0.9)])["layer"] == 11
    # A layer whose KL ceiling was 0 was never judged: any judged layer beats it.
    assert best_trial([_trial(11, 0.0, None), _trial(14, 0.3, 0.0)])["layer"] == 14
    with pytest.raises(ValueError, match="no layer trials"):
        best_trial([])


def test_w2_ranking_never_picks_an_identical_layer() -> None:
    from tl_ot_ablation.eval.selection import layers_by_w2, w2_by_layer

    source, target = gaussian_pair()
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(3)]
    # Layers 0 and 2: the same rows in both classes (layer 2 reordered); layer 1 differs.
    rows = {
        names[0]: (source, source),
        names[1]: (source, target),
        names[2]: (source, source.flip(0)),
    }
    stats = tuple({n: GaussianStats.from_rows(rows[n][i]) for n in names} for i in range(2))
    table = w2_by_layer(stats, 3, n_components=4)  # type: ignore[arg-type]
    assert [row["w2"] for row in table][::2] == [0.0, 0.0] and table[1]["w2"] > 0
    assert layers_by_w2(table) == [1]
    with pytest.raises(IdenticalClassesError, match=r"only 1 layer.*2 were asked for"):
        layers_by_w2(table, count=2)
    with pytest.raises(IdenticalClassesError, match=r"identical .* at 3 of 3 layers"):
        layers_by_w2([{**row, "w2": 0.0, "w2_relative": 0.0} for row in table])
