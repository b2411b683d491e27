"""PCA bases (``core.pca``): orthonormal, ordered, exact on full rank, and the randomised route
is accurate (its Ritz values are the true Rayleigh quotients)."""

import torch

from tests.helpers import random_spd
from tl_ot_ablation import PCABasis
from tl_ot_ablation.core.pca import top_eigenvectors


def test_components_orthonormal_and_variances_descending() -> None:
    cov = random_spd(20, condition=1e3, seed=1)
    basis = PCABasis.from_covariance(torch.zeros(20, dtype=torch.float64), cov, 8)
    torch.testing.assert_close(
        basis.components @ basis.components.mT, torch.eye(8, dtype=torch.float64)
    )
    assert (basis.explained_variance.diff() <= 1e-12).all()
    top = torch.linalg.eigvalsh(cov).flip(0)[:8]
    torch.testing.assert_close(basis.explained_variance, top)


def test_full_rank_project_reconstruct_is_identity() -> None:
    cov = random_spd(6, seed=2)
    mean = torch.randn(6, dtype=torch.float64)
    basis = PCABasis.from_covariance(mean, cov, None)
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(basis.reconstruct(basis.project(x)), x)
    torch.testing.assert_close(
        basis.explained_variance_ratio, torch.tensor(1.0, dtype=torch.float64)
    )


def test_included_direction_comes_first_and_stays_orthonormal() -> None:
    cov = random_spd(10, seed=3)
    direction = torch.randn(10, dtype=torch.float64)
    basis = PCABasis.from_covariance(
        torch.zeros(10, dtype=torch.float64), cov, 4, include=direction
    )
    torch.testing.assert_close(basis.components[0], direction / direction.norm())
    torch.testing.assert_close(
        basis.components @ basis.components.mT, torch.eye(4, dtype=torch.float64)
    )


def test_included_direction_with_rank_deficient_covariance() -> None:
    x = torch.randn(3, 10, dtype=torch.float64)
    cov = x.mT @ x  # rank 3, so k - 1 = 5 directions include null-space eigenvectors
    direction = torch.randn(10, dtype=torch.float64)
    basis = PCABasis.from_covariance(
        torch.zeros(10, dtype=torch.float64), cov, 6, include=direction
    )
    torch.testing.assert_close(
        basis.components @ basis.components.mT, torch.eye(6, dtype=torch.float64)
    )


def test_randomized_keeps_the_top_k_variance() -> None:
    # Activations have a decaying spectrum; so does this covariance (eigenvalues ~ 1/i).
    d, k = 600, 64
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    cov = (q / torch.arange(1, d + 1, dtype=torch.float64)) @ q.mT
    exact, _ = top_eigenvectors(cov, k, method="exact")
    approx, vectors = top_eigenvectors(cov, k, method="randomized")
    kept = torch.einsum("kd,de,ke->", vectors, cov, vectors)
    assert kept / exact.sum() > 0.99  # the target set for the fast route in issue 2
    torch.testing.assert_close(vectors @ vectors.mT, torch.eye(k, dtype=torch.float64))
    # Ritz values never exceed the eigenvalues (Cauchy interlacing) once Qᵀ M Q is formed in
    # float64: only float64 rounding, d·eps·‖M‖, can put them above.
    assert (approx <= exact + d * torch.finfo(torch.float64).eps * exact[0]).all()


def test_batched_basis_equals_per_layer() -> None:
    cov = random_spd(8, batch=(3,), seed=4)
    mean = torch.randn(3, 8, dtype=torch.float64)
    batched = PCABasis.from_covariance(mean, cov, 3)
    for i in range(3):
        single = PCABasis.from_covariance(mean[i], cov[i], 3)
        # Eigenvectors are defined up to sign: compare the projectors.
        torch.testing.assert_close(
            batched[i].components.mT @ batched[i].components,
            single.components.mT @ single.components,
        )


def _projector(basis: PCABasis) -> torch.Tensor:
    return basis.components.mT @ basis.components


def test_rows_route_gram_is_exact_when_n_is_below_d() -> None:
    rows = torch.randn(2, 30, 50, dtype=torch.float64) * torch.linspace(
        3, 0.1, 50, dtype=torch.float64
    )
    from_rows = PCABasis.from_rows(rows, 5)
    centred = rows - rows.mean(-2, keepdim=True)
    from_cov = PCABasis.from_covariance(rows.mean(-2), centred.mT @ centred / 29, 5)
    torch.testing.assert_close(_projector(from_rows), _projector(from_cov))
    torch.testing.assert_close(from_rows.explained_variance, from_cov.explained_variance)
    torch.testing.assert_close(from_rows.total_variance, from_cov.total_variance)


def test_rows_route_with_included_direction() -> None:
    rows = torch.randn(40, 20, dtype=torch.float64)
    direction = torch.randn(20, dtype=torch.float64)
    for n_rows in (40, 15):  # covariance-sized and Gram-sized problems
        basis = PCABasis.from_rows(rows[:n_rows], 4, include=direction)
        torch.testing.assert_close(basis.components[0], direction / direction.norm())
        torch.testing.assert_close(
            basis.components @ basis.components.mT, torch.eye(4, dtype=torch.float64)
        )


def test_rows_route_randomized_keeps_the_variance() -> None:
    rows = (
        torch.randn(900, 600, dtype=torch.float64)
        / torch.arange(1, 601, dtype=torch.float64).sqrt()
    )
    exact = PCABasis.from_rows(rows, 64, method="exact")
    fast = PCABasis.from_rows(rows, 64, method="randomized")
    assert fast.explained_variance.sum() / exact.explained_variance.sum() > 0.99


EPS64 = torch.finfo(torch.float64).eps


# --- randomized eigenvectors: the Rayleigh-Ritz step in the matrix's dtype ----------------------


def test_randomized_values_are_the_rayleigh_quotients_of_the_vectors() -> None:
    d, k = 600, 64
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    cov = (q / torch.arange(1, d + 1, dtype=torch.float64)) @ q.mT
    values, vectors = top_eigenvectors(cov, k, method="randomized")
    # True Ritz values of float64 vectors: a float32 Rayleigh-Ritz step was ~4e-7 off.
    quotients = torch.einsum("kd,de,ke->k", vectors, cov, vectors)
    torch.testing.assert_close(values, quotients, rtol=0, atol=d * EPS64 * float(values[0]))
    exact = torch.linalg.eigvalsh(cov).flip(0)[:k]
    assert (values <= exact + d * EPS64 * float(exact[0])).all()
