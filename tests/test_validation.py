"""Bad input fails early with a message that names the problem and the fix (as users see it)."""

import pytest
import torch

from tl_ot_ablation import GaussianOTMap, GaussianStats

pytestmark = pytest.mark.usefixtures("as_user")


def _fit(source: torch.Tensor, target: torch.Tensor, **kwargs) -> GaussianOTMap:
    return GaussianOTMap.fit(source, target, **{"n_components": 2, **kwargs})


def test_mismatched_d_model() -> None:
    with pytest.raises(ValueError, match=r"must share d_model; got \(10, 4\) and \(10, 5\)"):
        _fit(torch.randn(10, 4), torch.randn(10, 5))


@pytest.mark.parametrize("k", [0, 5, -1])
def test_n_components_out_of_range(k: int) -> None:
    with pytest.raises(ValueError, match=r"n_components must be in \[1, 4\]"):
        _fit(torch.randn(10, 4), torch.randn(10, 4), n_components=k)


def test_fewer_than_two_samples() -> None:
    with pytest.raises(ValueError, match=r"at least 2 samples in source.*got n=1"):
        _fit(torch.randn(1, 4), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2 samples in source_stats"):
        GaussianOTMap.from_stats(
            GaussianStats.from_rows(torch.randn(1, 4)),
            GaussianStats.from_rows(torch.randn(5, 4)),
            n_components=2,
        )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_activations(bad: float) -> None:
    source = torch.randn(10, 4)
    source[3, 1] = bad
    with pytest.raises(ValueError, match="source contains 1 non-finite"):
        _fit(source, torch.randn(10, 4))


def test_integer_activations() -> None:
    with pytest.raises(
        ValueError, match=r"floating-point tensor, got dtype torch.int64.*\.float\(\)"
    ):
        _fit(torch.ones(10, 4, dtype=torch.int64), torch.randn(10, 4))


def test_non_finite_fit_suggests_reg() -> None:
    huge = torch.randn(10, 4, dtype=torch.float64) * 1e200  # covariance overflows to inf
    with pytest.raises(ValueError, match="non-finite"):
        _fit(huge, torch.randn(10, 4, dtype=torch.float64))


def test_bad_reg_and_basis() -> None:
    with pytest.raises(ValueError, match="reg must be"):
        _fit(torch.randn(10, 4), torch.randn(10, 4), reg=-1.0)
    with pytest.raises(ValueError, match="basis must be"):
        _fit(torch.randn(10, 4), torch.randn(10, 4), basis="ica")


def test_activation_shape_mismatch_at_call_time() -> None:
    ot_map = _fit(torch.randn(10, 4), torch.randn(10, 4) + 1)
    with pytest.raises(ValueError, match="d_model=4, got \\(3, 5\\)"):
        ot_map(torch.randn(3, 5))


def test_index_out_of_range() -> None:
    ot_map = GaussianOTMap.fit(torch.randn(2, 10, 4), torch.randn(2, 10, 4), n_components=2)
    with pytest.raises(IndexError, match="out of range"):
        ot_map[2]


def test_rows_route_needs_more_rows_than_components() -> None:
    with pytest.raises(ValueError, match=r"rows route needs n_components < n.*route='covariance'"):
        GaussianOTMap.fit(torch.randn(3, 40), torch.randn(3, 40), n_components=8, route="rows")
    # "auto" falls back to the covariance route instead.
    assert (
        GaussianOTMap.fit(torch.randn(3, 40), torch.randn(3, 40), n_components=8).n_components == 8
    )


def test_unknown_route() -> None:
    with pytest.raises(ValueError, match="route must be"):
        _fit(torch.randn(10, 4), torch.randn(10, 4), route="fast")
