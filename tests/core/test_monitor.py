"""The monitor's scores (``core.monitor``) against independent references: float64, synthetic
Gaussians."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from tests.helpers import gaussian_rows, null_sd, random_spd
from tl_ot_ablation import GaussianOTMap
from tl_ot_ablation.core.monitor import GaussianMonitor
from tl_ot_ablation.eval.detect import auroc

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


# ---------------------------------------------------------------- core: synthetic Gaussians


def two_classes(d: int = 10, n_h: int = 300, n_b: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    mean_h = torch.linspace(-1, 1, d, dtype=F64)
    harmful = gaussian_rows(n_h, mean_h, random_spd(d, condition=20, seed=1), seed=3)
    harmless = gaussian_rows(
        n_b, torch.zeros(d, dtype=F64), random_spd(d, condition=20, seed=2), seed=4
    )
    return harmful, harmless


def numpy_subspace(harmful: torch.Tensor, harmless: torch.Tensor, k: int) -> np.ndarray:
    """Top-k eigenvectors (columns) of the pooled covariance, by numpy."""
    pooled = np.cov(torch.cat([harmful, harmless]).numpy().T)
    values, vectors = np.linalg.eigh(pooled)
    # A clear eigengap makes the subspace well determined (no ambiguity between libraries).
    assert values[-k] - values[-k - 1] > 0.01 * values[-1]
    return vectors[:, -k:]


def test_likelihood_matches_scipy_logpdf_of_the_implied_gaussians() -> None:
    """(a) is the mixture of Gaussians ``N(mean_c, Q S_c Q + σ_c² (I − Q))`` with ``Q`` the
    pooled top-k projector and ``σ_c² = tr((I − Q) S_c) / (d − k)``, all built here by numpy."""
    d, k, prior = 10, 3, 0.3
    harmful, harmless = two_classes(d)
    monitor = GaussianMonitor.fit(
        harmful, harmless, n_components=k, estimator="ridge", reg=0.0, prior=prior
    )
    v = numpy_subspace(harmful, harmless, k)
    q = v @ v.T
    perp = np.eye(d) - q

    def implied(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        cov = np.cov(rows.numpy().T)
        return rows.numpy().mean(0), q @ cov @ q + np.trace(perp @ cov) / (d - k) * perp

    x = gaussian_rows(50, torch.full((d,), 0.5, dtype=F64), torch.eye(d, dtype=F64), seed=5)
    log_h = multivariate_normal(*implied(harmful)).logpdf(x.numpy())
    log_b = multivariate_normal(*implied(harmless)).logpdf(x.numpy())
    expected = -np.logaddexp(math.log(prior) + log_h, math.log1p(-prior) + log_b)
    # float64 throughout, condition numbers <= ~100: rounding is ~1e-13 relative.
    np.testing.assert_allclose(monitor.negative_log_likelihood(x).numpy(), expected, rtol=1e-9)
    class_h, class_b = monitor.class_log_densities(x)
    np.testing.assert_allclose(class_h.numpy(), log_h, rtol=1e-9)
    np.testing.assert_allclose(class_b.numpy(), log_b, rtol=1e-9)


def test_verdicts_are_the_two_linear_discriminants_scaled_to_the_class_means() -> None:
    d, k, prior = 10, 3, 0.3
    harmful, harmless = two_classes(d)
    monitor = GaussianMonitor.fit(
        harmful, harmless, n_components=k, estimator="ridge", reg=0.0, prior=prior
    )
    x = gaussian_rows(40, torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64), seed=6).numpy()
    h, b = harmful.numpy(), harmless.numpy()
    mu = np.concatenate([h, b]).mean(0)
    v = numpy_subspace(harmful, harmless, k)
    # Subspace: LDA log-odds with the pooled within-class covariance, divided by Δ².
    zh, zb, zx = (h - mu) @ v, (b - mu) @ v, (x - mu) @ v
    n_h, n_b = len(h), len(b)
    within = ((n_h - 1) * np.cov(zh.T) + (n_b - 1) * np.cov(zb.T)) / (n_h + n_b - 2)
    gap = zh.mean(0) - zb.mean(0)
    separation_sq = gap @ np.linalg.solve(within, gap)
    lda = multivariate_normal(zh.mean(0), within).logpdf(zx) - multivariate_normal(
        zb.mean(0), within
    ).logpdf(zx)
    # Complement: position between the complement parts of the class means.
    perp = np.eye(d) - v @ v.T
    a_h, a_b = perp @ (h.mean(0) - mu), perp @ (b.mean(0) - mu)
    v_perp = (x - mu - (a_h + a_b) / 2) @ (a_h - a_b) / np.sum((a_h - a_b) ** 2)

    got_sub, got_perp = monitor.verdicts(torch.from_numpy(x))
    np.testing.assert_allclose(got_sub.numpy(), lda / separation_sq, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_perp.numpy(), v_perp, rtol=1e-9, atol=1e-12)
    odds_sub, _ = monitor.log_odds(torch.from_numpy(x))
    np.testing.assert_allclose(odds_sub.numpy(), lda + math.log(prior / (1 - prior)), rtol=1e-9)
    # Linear reads: over the training rows, each class's mean verdict is exactly ±1/2 and
    # its mean disagreement exactly 0 (float64 rounding of O(1) sums: ~1e-15).
    for rows, sign in ((harmful, 0.5), (harmless, -0.5)):
        v_sub, v_perp_rows = monitor.verdicts(rows)
        assert v_sub.mean().item() == pytest.approx(sign, abs=1e-12)
        assert v_perp_rows.mean().item() == pytest.approx(sign, abs=1e-12)
        assert monitor.disagreement(rows).mean().item() == pytest.approx(0, abs=1e-12)


def test_disagreement_flags_an_edit_confined_to_the_subspace() -> None:
    """Classes differ along axis 0 (variance 10, inside the top-4 subspace) and axis 8
    (variance 1, mostly outside it). An OT map in the monitor's own subspace moves harmful
    rows' subspace coordinates onto the harmless ones and leaves the complement alone: the
    complement still reads harmful (v_perp ≈ +½), the subspace harmless (v_sub ≈ −½)."""
    d, k = 16, 4
    cov = torch.diag(torch.tensor([10.0] * 4 + [1.0] * 12, dtype=F64))
    shift = torch.zeros(d, dtype=F64)
    shift[0], shift[8] = 6.0, 4.0
    harmful = gaussian_rows(2000, shift, cov, seed=1)
    harmless = gaussian_rows(2000, torch.zeros(d, dtype=F64), cov, seed=2)
    monitor = GaussianMonitor.fit(harmful, harmless, n_components=k)
    ot = GaussianOTMap.fit(harmful, harmless, n_components=k, basis=monitor.basis)
    held_h = gaussian_rows(400, shift, cov, seed=3)
    held_b = gaussian_rows(400, torch.zeros(d, dtype=F64), cov, seed=4)
    edited = ot(held_h)
    moved = edited - held_h
    basis = monitor.basis.components
    # The complement of the monitor's subspace is untouched (float64 rounding of O(10) values).
    assert (moved - moved @ basis.mT @ basis).abs().max() < 1e-10
    v_sub, v_perp = monitor.verdicts(edited)
    assert v_sub.mean().item() < -0.4 and v_perp.mean().item() > 0.4
    positive = monitor.disagreement(edited)
    negative = torch.cat([monitor.disagreement(held_h), monitor.disagreement(held_b)])
    assert auroc(positive, negative) > 0.5 + 5 * null_sd(400, 800)
    assert all(torch.isfinite(s).all() for s in monitor.scores(edited).values())


def test_batched_monitor_equals_one_per_layer() -> None:
    harmful, harmless = two_classes(8, 100, 120)
    stacked_h, stacked_b = torch.stack([harmful, 2 * harmful]), torch.stack([harmless, harmless])
    batched = GaussianMonitor.fit(stacked_h, stacked_b, n_components=3)
    x = torch.randn(2, 5, 8, dtype=F64)
    scores = batched.scores(x)
    for i in range(2):
        alone = GaussianMonitor.fit(stacked_h[i], stacked_b[i], n_components=3).scores(x[i])
        for name, value in alone.items():
            torch.testing.assert_close(scores[name][i], value, rtol=1e-10, atol=1e-10)
    assert batched[1].batch_shape == () and len(batched) == 2


def test_monitor_scores_keep_leading_dims_and_take_float32() -> None:
    harmful, harmless = two_classes(8, 50, 60)
    monitor = GaussianMonitor.fit(harmful.float(), harmless.float(), n_components=2)
    x = torch.randn(3, 4, 8)
    scores = monitor.scores(x)
    assert {name: tuple(v.shape) for name, v in scores.items()} == {
        "likelihood": (3, 4),
        "disagreement": (3, 4),
    }
    assert all(v.dtype == F64 and torch.isfinite(v).all() for v in scores.values())
    assert monitor.dtype == F64 and monitor.n_components == 2 and monitor.d_model == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"harmful": torch.randn(20, 5, dtype=F64)}, "share d_model"),
        ({"harmful": torch.randn(1, 8, dtype=F64)}, "at least 2 samples in harmful"),
        ({"harmless": torch.full((20, 8), math.nan, dtype=F64)}, "non-finite"),
        ({"harmful": torch.ones(20, 8, dtype=F64)}, "zero variance"),
        ({"n_components": 8}, "below d_model"),
        ({"n_components": 0}, "n_components must be in"),
        ({"prior": 1.0}, "prior must be a probability"),
        ({"estimator": "ledoit_wolf"}, "estimator must be"),
        ({"reg": -1.0}, "reg must be"),
    ],
)
def test_monitor_fit_rejects_bad_input(change: dict, message: str, as_user: None) -> None:
    harmful, harmless = two_classes(8, 30, 30)
    kwargs = {"harmful": harmful, "harmless": harmless, "n_components": 3, **change}
    with pytest.raises(ValueError, match=message):
        GaussianMonitor.fit(**kwargs)


def test_monitor_scoring_rejects_bad_input(as_user: None) -> None:
    monitor = GaussianMonitor.fit(*two_classes(8, 30, 30), n_components=3)
    with pytest.raises(ValueError, match="d_model=8"):
        monitor.scores(torch.randn(4, 9))
    with pytest.raises(ValueError, match="non-finite"):
        monitor.scores(torch.full((2, 8), math.inf))
    with pytest.raises(ValueError, match="floating-point"):
        monitor.scores(torch.ones(2, 8, dtype=torch.long))
