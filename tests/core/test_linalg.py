"""Exact float64 properties of the matrix functions behind the transport map."""

import pytest
import torch

from tests.helpers import random_spd
from tl_ot_ablation.core.linalg import (
    bures_distance_squared,
    bures_ot_matrix,
    psd_sqrt,
    psd_sqrt_and_pinv_sqrt,
)

ot = pytest.importorskip("ot")


@pytest.mark.parametrize("d", [1, 2, 5, 16, 64])
def test_psd_sqrt_squares_back(d: int) -> None:
    m = random_spd(d, condition=1e4, seed=d)
    root = psd_sqrt(m)
    torch.testing.assert_close(root @ root, m, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(root, root.mT, rtol=0, atol=0)
    assert torch.linalg.eigvalsh(root).min() >= 0


def test_pinv_sqrt_of_singular_matrix_is_finite_and_inverts_on_the_range() -> None:
    x = torch.randn(6, 3, dtype=torch.float64)
    singular = x @ x.mT  # rank 3 in 6 dimensions
    root, inv_root = psd_sqrt_and_pinv_sqrt(singular)
    assert torch.isfinite(inv_root).all()
    projector = root @ inv_root
    torch.testing.assert_close(projector, torch.linalg.pinv(singular) @ singular, atol=1e-8, rtol=0)
    torch.testing.assert_close(inv_root @ singular @ inv_root, projector, atol=1e-8, rtol=0)


def test_batched_equals_looped() -> None:
    s = random_spd(7, batch=(3, 2), seed=1)
    c = random_spd(7, batch=(3, 2), seed=2)
    batched = bures_ot_matrix(s, c)
    for i in range(3):
        for j in range(2):
            torch.testing.assert_close(batched[i, j], bures_ot_matrix(s[i, j], c[i, j]))


@pytest.mark.parametrize("d", [1, 2, 3, 8, 32, 64])
def test_map_pushes_source_covariance_onto_target(d: int) -> None:
    s = random_spd(d, condition=100, seed=10 + d)
    c = random_spd(d, condition=100, seed=20 + d)
    a = bures_ot_matrix(s, c)
    torch.testing.assert_close(a @ s @ a, c, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(a, a.mT, rtol=0, atol=0)
    assert torch.linalg.eigvalsh(a).min() > 0


def test_equal_covariances_give_identity() -> None:
    s = random_spd(12, condition=1e3, seed=3)
    torch.testing.assert_close(bures_ot_matrix(s, s), torch.eye(12, dtype=torch.float64))


def test_matches_pot_oracle() -> None:
    s = random_spd(10, condition=50, seed=4)
    c = random_spd(10, condition=50, seed=5)
    zero = torch.zeros(10, dtype=torch.float64).numpy()
    a_pot, _ = ot.gaussian.bures_wasserstein_mapping(zero, zero, s.numpy(), c.numpy())
    torch.testing.assert_close(bures_ot_matrix(s, c), torch.from_numpy(a_pot), rtol=1e-8, atol=1e-8)


def test_shortcut_formula_is_wrong_for_non_commuting_covariances() -> None:
    """Guards against a regression to A = C^{1/2} S^{-1/2}, valid only when S C = C S."""
    s = random_spd(6, condition=30, seed=6)
    c = random_spd(6, condition=30, seed=7)
    assert not torch.allclose(s @ c, c @ s)
    shortcut = psd_sqrt(c) @ torch.linalg.inv(psd_sqrt(s))
    exact = bures_ot_matrix(s, c)
    assert (shortcut - exact).abs().max() > 1e-2
    # The shortcut does push S onto C, but it is not symmetric, so it is not the gradient of a
    # convex function: not the optimal map (Brenier), which is the unique symmetric p.s.d. one.
    torch.testing.assert_close(shortcut @ s @ shortcut.mT, c)
    assert (shortcut - shortcut.mT).abs().max() > 1e-2


def test_shortcut_agrees_when_covariances_commute() -> None:
    q = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64)).Q
    s = (q * torch.tensor([1.0, 2, 3, 4, 5], dtype=torch.float64)) @ q.mT
    c = (q * torch.tensor([5.0, 1, 2, 7, 3], dtype=torch.float64)) @ q.mT
    shortcut = psd_sqrt(c) @ torch.linalg.inv(psd_sqrt(s))
    torch.testing.assert_close(bures_ot_matrix(s, c), shortcut)


def test_bures_distance_matches_pot() -> None:
    s = random_spd(9, seed=8)
    c = random_spd(9, seed=9)
    zero = torch.zeros(9, dtype=torch.float64).numpy()
    w_pot = ot.gaussian.bures_wasserstein_distance(zero, zero, s.numpy(), c.numpy())
    torch.testing.assert_close(
        bures_distance_squared(s, c).sqrt(), torch.tensor(float(w_pot), dtype=torch.float64)
    )
