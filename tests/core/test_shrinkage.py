"""Covariance estimators (``core.shrinkage``): OAS and Ledoit-Wolf against scikit-learn, batched
over layers, and used by the maps in their subspace."""

import numpy as np
import pytest
import torch
from sklearn.covariance import OAS, LedoitWolf

import tl_ot_ablation as tlo
from tests.helpers import gaussian_rows, random_spd
from tl_ot_ablation import GaussianOTMap
from tl_ot_ablation.core.shrinkage import ledoit_wolf_covariance, oas_covariance


def _rows(n: int, k: int, seed: int) -> torch.Tensor:
    return gaussian_rows(
        n, torch.zeros(k, dtype=torch.float64), random_spd(k, condition=50, seed=seed), seed=seed
    )


# --- shrinkage against scikit-learn -----------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(10, 16), (40, 16), (500, 8)])
def test_oas_matches_scikit_learn(n: int, k: int) -> None:
    rows = _rows(n, k, seed=n)
    centred = rows - rows.mean(0)
    cov, weight = oas_covariance(centred.T @ centred / n, n)
    reference = OAS().fit(rows.numpy())
    np.testing.assert_allclose(cov.numpy(), reference.covariance_, rtol=1e-10, atol=1e-12)
    assert float(weight) == pytest.approx(reference.shrinkage_, rel=1e-10)


@pytest.mark.parametrize(("n", "k"), [(10, 16), (40, 16), (500, 8)])
def test_ledoit_wolf_matches_scikit_learn(n: int, k: int) -> None:
    rows = _rows(n, k, seed=n + 1)
    cov, weight = ledoit_wolf_covariance(rows)
    reference = LedoitWolf().fit(rows.numpy())
    np.testing.assert_allclose(cov.numpy(), reference.covariance_, rtol=1e-10, atol=1e-12)
    assert float(weight) == pytest.approx(reference.shrinkage_, rel=1e-10)


def test_shrinkage_is_batched_over_layers() -> None:
    rows = torch.stack([_rows(30, 6, seed=s) for s in range(3)])
    batched, weights = ledoit_wolf_covariance(rows)
    for i in range(3):
        one, weight = ledoit_wolf_covariance(rows[i])
        torch.testing.assert_close(batched[i], one)
        torch.testing.assert_close(weights[i], weight)


def test_shrinkage_weight_falls_as_samples_grow() -> None:
    few = ledoit_wolf_covariance(_rows(20, 16, seed=0))[1]
    many = ledoit_wolf_covariance(_rows(5000, 16, seed=0))[1]
    assert 0 <= float(many) < float(few) <= 1


@pytest.mark.parametrize("estimator", ["oas", "ledoit_wolf"])
def test_maps_use_the_estimator_in_their_subspace(estimator: str) -> None:
    source, target = _rows(60, 12, seed=3) + 1.0, _rows(80, 12, seed=4)
    fitted = GaussianOTMap.fit(
        source, target, n_components=6, reg=0.0, estimator=estimator, route="rows"
    ).to(dtype=torch.float64)
    coords = fitted.basis.project(source)
    sk = (OAS if estimator == "oas" else LedoitWolf)().fit(coords.numpy())
    np.testing.assert_allclose(fitted.cov_source.numpy(), sk.covariance_, rtol=1e-8, atol=1e-10)
    assert fitted.estimator == estimator
    # The map is still exact for the covariances it uses: A S A = C.
    a, s, c = fitted.matrix, fitted.cov_source, fitted.cov_target
    torch.testing.assert_close(a @ s @ a, c, rtol=1e-7, atol=1e-9)


def test_ledoit_wolf_from_streamed_statistics_is_refused() -> None:
    source, target = _rows(30, 8, seed=1), _rows(30, 8, seed=2)
    stats = tlo.GaussianStats.from_rows
    with pytest.raises(ValueError, match="needs the rows"):
        GaussianOTMap.from_stats(
            stats(source), stats(target), n_components=4, estimator="ledoit_wolf"
        )
    oas = GaussianOTMap.from_stats(stats(source), stats(target), n_components=4, estimator="oas")
    assert oas.estimator == "oas"
