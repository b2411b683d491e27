"""Reliability of the math core: true Ritz values, fits at any scale, warnings on degenerate
classes, and integer activations refused rather than truncated."""

import warnings

import pytest
import torch
from conftest import gaussian_rows, random_spd

from tl_ot_ablation import (
    ActAdd,
    DirectionAblation,
    GaussianOTMap,
    GaussianStats,
    MeanShift,
    PCABasis,
    PerNeuronOT,
)
from tl_ot_ablation.core.pca import top_eigenvectors

EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps


def _pair(d: int = 8, n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    source = gaussian_rows(n, torch.ones(d, dtype=torch.float64), random_spd(d, seed=1), seed=2)
    target = gaussian_rows(n + 10, torch.zeros(d, dtype=torch.float64), random_spd(d, seed=3))
    return source, target


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


# --- scale: float32 second moments that would under- or overflow -------------------------------

# Powers of two, so the scaled float32 rows are exactly the rows times the scale.
SCALES = [2.0**-75, 2.0**75]  # ~2.6e-23 and ~3.8e22


@pytest.mark.parametrize("scale", SCALES)
def test_streamed_statistics_keep_float32_rows_at_any_scale(scale: float) -> None:
    rows = torch.randn(50, 6)
    stats = GaussianStats.from_rows(rows * scale)
    reference = GaussianStats.from_rows(rows.double())
    torch.testing.assert_close(stats.mean / scale, reference.mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(stats.cov / scale**2, reference.cov, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("route", ["covariance", "rows"])
@pytest.mark.parametrize("scale", SCALES)
def test_fit_at_a_tiny_or_huge_scale_is_the_same_map(route: str, scale: float) -> None:
    source, target = (rows.float() for rows in _pair())
    reference = GaussianOTMap.fit(source.double(), target.double(), n_components=4, route=route)
    with pytest.warns(UserWarning, match="outside float32's range.*stored in float64") as w:
        scaled = GaussianOTMap.fit(source * scale, target * scale, n_components=4, route=route)
    assert len(w) == 1 and w[0].filename == __file__
    # Basis-independent (eigenvector signs may differ): the map's d × d linear part Vᵀ A V.
    linear = scaled.basis.components.mT @ scaled.matrix @ scaled.basis.components
    expected = reference.basis.components.mT @ reference.matrix @ reference.basis.components
    torch.testing.assert_close(linear, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(scaled.cov_source / scale**2, reference.cov_source.to(linear.dtype))
    out = scaled(source * scale) / scale
    assert out.dtype == torch.float32
    # Applied in float32: rounding of order d·eps32 of the values' magnitude.
    bound = 8 * source.shape[-1] * EPS32 * float(source.abs().max() + out.abs().max())
    torch.testing.assert_close(out.double(), reference(source.double()), rtol=0, atol=bound)


def test_pca_rows_at_a_tiny_scale() -> None:
    rows = torch.randn(30, 12) * torch.linspace(3, 0.1, 12)
    with pytest.warns(UserWarning, match="outside float32's range"):
        tiny = PCABasis.from_rows(rows * 2.0**-75, 4)
    reference = PCABasis.from_rows(rows.double(), 4)
    torch.testing.assert_close(
        tiny.components.mT @ tiny.components, reference.components.mT @ reference.components
    )
    torch.testing.assert_close(tiny.explained_variance_ratio, reference.explained_variance_ratio)


def test_ordinary_scales_keep_float32_storage_without_warnings() -> None:
    source, target = (rows.float() for rows in _pair())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (1e-6, 1.0, 1e6):
            fitted = GaussianOTMap.fit(source * scale, target * scale, n_components=4)
            assert fitted.matrix.dtype == torch.float32


# --- classes with (near) zero variance ----------------------------------------------------------


@pytest.mark.parametrize("degenerate", ["source", "target"])
@pytest.mark.parametrize("route", ["covariance", "rows"])
def test_a_class_without_variance_is_warned_of(degenerate: str, route: str) -> None:
    source, target = _pair()
    rows = {"source": source, "target": target}
    rows[degenerate] = torch.full_like(rows[degenerate], 0.3)  # every row the same
    with pytest.warns(UserWarning, match=rf"the {degenerate} activations have \(near\) zero") as w:
        GaussianOTMap.fit(rows["source"], rows["target"], n_components=4, route=route)
    message = str(w[0].message)
    assert "`reg`" in message and "`estimator`" in message
    assert w[0].filename == __file__  # points at the caller's line


def test_near_zero_variance_is_warned_of_too() -> None:
    source, target = _pair()
    squeezed = source.mean(0) + (source - source.mean(0)) * 1e-6  # variance 1e-12 of target's
    with pytest.warns(UserWarning, match=r"source activations have \(near\) zero variance"):
        GaussianOTMap.fit(squeezed, target, n_components=4)


def test_per_layer_degenerate_class_names_the_layers() -> None:
    source, target = _pair()
    batched_source = torch.stack([source, torch.full_like(source, 1.0)])
    batched_target = torch.stack([target, target])
    with pytest.warns(UserWarning, match="source activations .* in 1 of 2 layers"):
        GaussianOTMap.fit(batched_source, batched_target, n_components=4)


def test_mean_shift_ignores_the_covariances_and_does_not_warn() -> None:
    _, target = _pair()
    constant = torch.full((40, 8), 2.0, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shift = MeanShift.fit(constant, target, n_components=4)
    torch.testing.assert_close(shift.basis.project(shift(constant)).mean(0), shift.mean_target)


def test_per_neuron_ot_warns_of_a_constant_target() -> None:
    source, _ = _pair()
    with pytest.warns(UserWarning, match=r"PerNeuronOT: the target activations have \(near\)"):
        PerNeuronOT.fit(source, torch.full_like(source, -1.0))


def test_healthy_classes_do_not_warn() -> None:
    source, target = _pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GaussianOTMap.fit(source, target, n_components=4)
        PerNeuronOT.fit(source, target)


# --- integer activations at call time -----------------------------------------------------------


def _fitted() -> list:
    source, target = (rows.float() for rows in _pair())
    return [
        GaussianOTMap.fit(source, target, n_components=4),
        GaussianOTMap.fit(source, target, n_components=4).with_strength(0.0),
        GaussianOTMap.fit(source, target, n_components=4).with_options(gate="posterior"),
        MeanShift.fit(source, target, n_components=4),
        DirectionAblation.fit(source, target),
        ActAdd.fit(source, target),
        PerNeuronOT.fit(source, target),
    ]


@pytest.mark.parametrize("index", range(7))
def test_integer_activations_are_refused_not_truncated(index: int, as_user: None) -> None:
    intervention = _fitted()[index]
    tokens = torch.ones(3, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"floating-point tensor, got dtype torch.int64.*\.float"):
        intervention(tokens)
    assert intervention(tokens.float()).dtype == torch.float32


def test_integer_activations_are_refused_by_edit_and_log_odds(as_user: None) -> None:
    ot_map = _fitted()[0]
    tokens = torch.ones(3, 8, dtype=torch.int32)
    for method in (ot_map.edit, ot_map.harmful_log_odds):
        with pytest.raises(ValueError, match=r"convert it with x\.float\(\)"):
            method(tokens)
