"""Streaming statistics (``core.stats``) equal one-shot estimates, whatever the chunking, merge
order or device."""

import pytest
import torch

import tl_ot_ablation as tlo
from tests.helpers import DEVICES, device_classes
from tl_ot_ablation import GaussianStats


def _rows(n: int, d: int, *, batch: tuple[int, ...] = ()) -> torch.Tensor:
    return torch.randn(*batch, n, d, dtype=torch.float64) * 3 + 100  # large offset: tests stability


def test_chunked_updates_equal_one_shot() -> None:
    rows = _rows(103, 7)
    stats = GaussianStats(7)
    for chunk in rows.split([1, 10, 50, 2, 40]):
        stats.update(chunk)
    assert stats.count == 103
    torch.testing.assert_close(stats.mean, rows.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.cov, torch.cov(rows.T), rtol=1e-10, atol=1e-10)


def test_float32_rows_accumulate_in_float64_at_float32_precision() -> None:
    # A large offset, as residual streams have: an uncentred float32 product would lose
    # ~1e-1 relative accuracy here; centring first keeps float32 precision.
    rows = torch.randn(640, 5, dtype=torch.float64) * 3 + 1e3
    stats = GaussianStats(5)
    for chunk in rows.float().split(64):
        stats.update(chunk)
    assert stats.cov.dtype == torch.float64 and stats.mean.dtype == torch.float64
    exact = torch.cov(rows.float().double().T)
    # Float32 products of 64-row chunks err by at most 64·eps32·Σ|x_i y_i| <= 4e-6 of the
    # largest variance, in any summation order (any BLAS): 1e-5 of it bounds that.
    torch.testing.assert_close(stats.cov, exact, rtol=1e-5, atol=1e-5 * exact.diag().max().item())
    torch.testing.assert_close(stats.mean, rows.float().double().mean(0), rtol=1e-7, atol=0)


def test_batched_over_layers_equals_per_layer() -> None:
    rows = _rows(30, 4, batch=(3, 2))
    stats = GaussianStats.from_rows(rows)
    for i in range(3):
        for j in range(2):
            torch.testing.assert_close(stats.cov[i, j], torch.cov(rows[i, j].T))
    torch.testing.assert_close(stats[1].mean, rows[1].mean(-2))


def test_merge_is_exact_and_associative() -> None:
    a, b, c = _rows(11, 6), _rows(23, 6) * 2, _rows(5, 6) - 50
    sa, sb, sc = (GaussianStats.from_rows(x) for x in (a, b, c))
    left = sa.merge(sb).merge(sc)
    right = sa.merge(sb.merge(sc))
    everything = torch.cat([a, b, c])
    for merged in (left, right):
        assert merged.count == 39
        torch.testing.assert_close(merged.mean, everything.mean(0), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(merged.cov, torch.cov(everything.T), rtol=1e-10, atol=1e-10)
    assert sa.count == 11  # inputs untouched


def test_merge_with_empty_is_identity() -> None:
    stats = GaussianStats.from_rows(_rows(9, 3))
    merged = GaussianStats(3).merge(stats)
    torch.testing.assert_close(merged.cov, stats.cov)


def test_too_few_rows_for_covariance() -> None:
    stats = GaussianStats.from_rows(_rows(1, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        _ = stats.cov


def test_bad_rows_raise_helpful_errors(as_user: None) -> None:
    stats = GaussianStats(4)
    with pytest.raises(ValueError, match=r"shape \[\*batch, n, d\]"):
        stats.update(torch.randn(3, 5))
    with pytest.raises(ValueError, match="floating-point"):
        stats.update(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-finite"):
        stats.update(torch.tensor([[1.0, float("nan"), 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="different shapes"):
        stats.merge(GaussianStats(5))


def test_stack_adds_a_leading_axis_that_indexing_undoes() -> None:
    rows = [torch.randn(9, 4, dtype=torch.float64) + i for i in range(3)]
    stacked = GaussianStats.stack([GaussianStats.from_rows(r) for r in rows])
    assert stacked.batch_shape == (3,) and stacked.count == 9
    torch.testing.assert_close(stacked.cov, GaussianStats.from_rows(torch.stack(rows)).cov)
    torch.testing.assert_close(stacked[1].mean, rows[1].mean(0))
    with pytest.raises(ValueError, match="one shape and row count"):
        GaussianStats.stack(
            [GaussianStats.from_rows(rows[0]), GaussianStats.from_rows(rows[1][:5])]
        )
    with pytest.raises(ValueError, match="at least one"):
        GaussianStats.stack([])


def test_public_moments_round_trip_without_touching_private_state() -> None:
    """What other modules read (``running_mean``, ``scatter``, ``scatter_diagonal``) rebuilds
    the statistics exactly through ``from_moments``, and the views are copies."""
    stats = GaussianStats.from_rows(_rows(20, 4, batch=(3,)))
    rebuilt = GaussianStats.from_moments(stats.count, stats.running_mean, stats.scatter)
    assert rebuilt.count == stats.count and rebuilt.batch_shape == stats.batch_shape
    torch.testing.assert_close(rebuilt.mean, stats.mean, rtol=0, atol=0)
    torch.testing.assert_close(rebuilt.cov, stats.cov, rtol=0, atol=0)
    torch.testing.assert_close(
        stats.scatter_diagonal, torch.diagonal(stats.scatter, dim1=-2, dim2=-1), rtol=0, atol=0
    )
    stats.scatter_diagonal.zero_()
    stats.running_mean.zero_()
    assert stats.scatter_diagonal.abs().min() > 0 and stats.mean.abs().min() > 0


def test_running_mean_is_zero_before_rows_where_mean_raises() -> None:
    empty = GaussianStats(3)
    assert empty.running_mean.equal(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 1 rows"):
        _ = empty.mean


def test_from_moments_names_a_shape_mismatch(as_user: None) -> None:
    with pytest.raises(ValueError, match=r"scatter must be \[\*batch, d, d\]"):
        GaussianStats.from_moments(5, torch.zeros(2, 3), torch.zeros(2, 3, 4))


@pytest.mark.parametrize("device", DEVICES)
def test_statistics_accumulate_on_the_rows_device_and_match_the_cpu(device: str) -> None:
    source, _ = device_classes(device)
    stats = tlo.GaussianStats(source.shape[-1], batch_shape=(2,), device=device)
    for chunk in source.split(37, dim=1):
        stats.update(chunk)
    assert stats.cov.device.type == torch.device(device).type
    assert stats.cov.dtype == torch.float64
    reference = tlo.GaussianStats.from_rows(source.cpu().double())
    torch.testing.assert_close(stats.cov.cpu(), reference.cov, rtol=1e-5, atol=1e-5)
