"""Fits that would change nothing or degenerate (``core.degeneracy``): classes without variance
are warned of, identical classes are refused, a small real difference is fitted."""

import warnings

import pytest
import torch

from tests.helpers import gaussian_pair
from tl_ot_ablation import (
    ActAdd,
    DirectionAblation,
    GaussianOTMap,
    GaussianStats,
    MeanShift,
    PerNeuronOT,
)
from tl_ot_ablation.core.degeneracy import IdenticalClassesError

# --- classes with (near) zero variance ----------------------------------------------------------


@pytest.mark.parametrize("degenerate", ["source", "target"])
@pytest.mark.parametrize("route", ["covariance", "rows"])
def test_a_class_without_variance_is_warned_of(degenerate: str, route: str) -> None:
    source, target = gaussian_pair()
    rows = {"source": source, "target": target}
    rows[degenerate] = torch.full_like(rows[degenerate], 0.3)  # every row the same
    with pytest.warns(UserWarning, match=rf"the {degenerate} activations have \(near\) zero") as w:
        GaussianOTMap.fit(rows["source"], rows["target"], n_components=4, route=route)
    message = str(w[0].message)
    assert "`reg`" in message and "`estimator`" in message
    assert w[0].filename == __file__  # points at the caller's line


def test_near_zero_variance_is_warned_of_too() -> None:
    source, target = gaussian_pair()
    squeezed = source.mean(0) + (source - source.mean(0)) * 1e-6  # variance 1e-12 of target's
    with pytest.warns(UserWarning, match=r"source activations have \(near\) zero variance"):
        GaussianOTMap.fit(squeezed, target, n_components=4)


def test_per_layer_degenerate_class_names_the_layers() -> None:
    source, target = gaussian_pair()
    batched_source = torch.stack([source, torch.full_like(source, 1.0)])
    batched_target = torch.stack([target, target])
    with pytest.warns(UserWarning, match="source activations .* in 1 of 2 layers"):
        GaussianOTMap.fit(batched_source, batched_target, n_components=4)


def test_mean_shift_ignores_the_covariances_and_does_not_warn() -> None:
    _, target = gaussian_pair()
    constant = torch.full((40, 8), 2.0, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shift = MeanShift.fit(constant, target, n_components=4)
    torch.testing.assert_close(shift.basis.project(shift(constant)).mean(0), shift.mean_target)


def test_per_neuron_ot_warns_of_a_constant_target() -> None:
    source, _ = gaussian_pair()
    with pytest.warns(UserWarning, match=r"PerNeuronOT: the target activations have \(near\)"):
        PerNeuronOT.fit(source, torch.full_like(source, -1.0))


def test_healthy_classes_do_not_warn() -> None:
    source, target = gaussian_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GaussianOTMap.fit(source, target, n_components=4)
        PerNeuronOT.fit(source, target)


# --- identical classes: a fit that would change nothing is refused -----------------------------

IDENTICAL = "identical \\(up to rounding\\).*prompts"


def _fit(kind: str, source: torch.Tensor, target: torch.Tensor):
    if kind in ("ot_covariance", "ot_rows"):
        return GaussianOTMap.fit(source, target, n_components=4, route=kind[3:])
    if kind == "mean_shift":
        return MeanShift.fit(source, target, n_components=4)
    return {"per_neuron": PerNeuronOT, "actadd": ActAdd, "direction": DirectionAblation}[kind].fit(
        source, target
    )


FIT_KINDS = ["ot_covariance", "ot_rows", "mean_shift", "per_neuron", "actadd", "direction"]


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_identical_classes_are_refused(kind: str) -> None:
    source, _ = (rows.float() for rows in gaussian_pair())
    with pytest.raises(IdenticalClassesError, match=IDENTICAL):
        _fit(kind, source, source.clone())


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_the_same_rows_in_another_order_are_refused_too(kind: str) -> None:
    # Shuffled float32 rows: the statistics differ by rounding only (a large common mean makes
    # that rounding as large as it gets), and that is still no difference between the classes.
    source = gaussian_pair()[0].float() + 300
    shuffled = source[torch.randperm(source.shape[0], generator=torch.Generator().manual_seed(1))]
    a, b = GaussianStats.from_rows(source), GaussianStats.from_rows(shuffled)
    assert not (torch.equal(a.mean, b.mean) and torch.equal(a.cov, b.cov))  # rounding differs
    with pytest.raises(IdenticalClassesError, match=IDENTICAL):
        _fit(kind, source, shuffled)


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_a_small_real_difference_is_fitted(kind: str) -> None:
    # Means 1e-3 of the spread apart (6e-5 of the rows' norm, under a common mean of 30): small,
    # but ~100x the rounding of the means (8·sqrt(d)·eps32 ≈ 2.7e-6 of the spread).
    source = gaussian_pair()[0].float() + 30
    spread = float(source.var(0).sum())
    shift = 1e-3 * (spread / source.shape[-1]) ** 0.5
    _fit(kind, source, source + shift)


def test_identical_layers_of_a_batched_fit_are_named() -> None:
    source, target = gaussian_pair()
    source, target = source[:60], target[:60]
    with pytest.raises(IdenticalClassesError, match=r"in layer\(s\) \[1\] of 2"):
        GaussianOTMap.fit(
            torch.stack([source, source]), torch.stack([target, source]), n_components=4
        )
