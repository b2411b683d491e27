"""Input checks (``core.validate``): bad input fails early with a message that names the problem
and the fix (as users see it); activations at any float32 scale, integer activations refused
rather than truncated, float16 overflow as an error; public constructors check what fitting
checks, once per tensor."""

import dataclasses
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
    PCABasis,
    PerNeuronOT,
)


def _fit(source: torch.Tensor, target: torch.Tensor, **kwargs) -> GaussianOTMap:
    return GaussianOTMap.fit(source, target, **{"n_components": 2, **kwargs})


@pytest.mark.usefixtures("as_user")
def test_mismatched_d_model() -> None:
    with pytest.raises(ValueError, match=r"must share d_model; got \(10, 4\) and \(10, 5\)"):
        _fit(torch.randn(10, 4), torch.randn(10, 5))


@pytest.mark.usefixtures("as_user")
@pytest.mark.parametrize("k", [0, 5, -1])
def test_n_components_out_of_range(k: int) -> None:
    with pytest.raises(ValueError, match=r"n_components must be in \[1, 4\]"):
        _fit(torch.randn(10, 4), torch.randn(10, 4), n_components=k)


@pytest.mark.usefixtures("as_user")
def test_fewer_than_two_samples() -> None:
    with pytest.raises(ValueError, match=r"at least 2 samples in source.*got n=1"):
        _fit(torch.randn(1, 4), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2 samples in source_stats"):
        GaussianOTMap.from_stats(
            GaussianStats.from_rows(torch.randn(1, 4)),
            GaussianStats.from_rows(torch.randn(5, 4)),
            n_components=2,
        )


@pytest.mark.usefixtures("as_user")
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_activations(bad: float) -> None:
    source = torch.randn(10, 4)
    source[3, 1] = bad
    with pytest.raises(ValueError, match="source contains 1 non-finite"):
        _fit(source, torch.randn(10, 4))


@pytest.mark.usefixtures("as_user")
def test_integer_activations() -> None:
    with pytest.raises(
        ValueError, match=r"floating-point tensor, got dtype torch.int64.*\.float\(\)"
    ):
        _fit(torch.ones(10, 4, dtype=torch.int64), torch.randn(10, 4))


@pytest.mark.usefixtures("as_user")
def test_non_finite_fit_suggests_reg() -> None:
    huge = torch.randn(10, 4, dtype=torch.float64) * 1e200  # covariance overflows to inf
    with pytest.raises(ValueError, match="non-finite"):
        _fit(huge, torch.randn(10, 4, dtype=torch.float64))


@pytest.mark.usefixtures("as_user")
def test_bad_reg_and_basis() -> None:
    with pytest.raises(ValueError, match="reg must be"):
        _fit(torch.randn(10, 4), torch.randn(10, 4), reg=-1.0)
    with pytest.raises(ValueError, match="basis must be"):
        _fit(torch.randn(10, 4), torch.randn(10, 4), basis="ica")


@pytest.mark.usefixtures("as_user")
def test_activation_shape_mismatch_at_call_time() -> None:
    ot_map = _fit(torch.randn(10, 4), torch.randn(10, 4) + 1)
    with pytest.raises(ValueError, match="d_model=4, got \\(3, 5\\)"):
        ot_map(torch.randn(3, 5))


@pytest.mark.usefixtures("as_user")
def test_index_out_of_range() -> None:
    ot_map = GaussianOTMap.fit(torch.randn(2, 10, 4), torch.randn(2, 10, 4), n_components=2)
    with pytest.raises(IndexError, match="out of range"):
        ot_map[2]


@pytest.mark.usefixtures("as_user")
def test_rows_route_needs_more_rows_than_components() -> None:
    with pytest.raises(ValueError, match=r"rows route needs n_components < n.*route='covariance'"):
        GaussianOTMap.fit(torch.randn(3, 40), torch.randn(3, 40), n_components=8, route="rows")
    # "auto" falls back to the covariance route instead.
    assert (
        GaussianOTMap.fit(torch.randn(3, 40), torch.randn(3, 40), n_components=8).n_components == 8
    )


@pytest.mark.usefixtures("as_user")
def test_unknown_route() -> None:
    with pytest.raises(ValueError, match="route must be"):
        _fit(torch.randn(10, 4), torch.randn(10, 4), route="fast")


EPS32 = torch.finfo(torch.float32).eps


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
    source, target = (rows.float() for rows in gaussian_pair())
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
    source, target = (rows.float() for rows in gaussian_pair())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for scale in (1e-6, 1.0, 1e6):
            fitted = GaussianOTMap.fit(source * scale, target * scale, n_components=4)
            assert fitted.matrix.dtype == torch.float32


# --- integer activations at call time -----------------------------------------------------------


def _fitted() -> list:
    source, target = (rows.float() for rows in gaussian_pair())
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


# --- overflow of the activations' dtype ---------------------------------------------------------

F16_MAX = torch.finfo(torch.float16).max


def _overflowing() -> dict[str, object]:
    """Interventions that push float16 activations near 6e4 past float16's range (65504)."""
    d = 4
    stretch = GaussianOTMap.fit(
        torch.randn(60, d) + 3, torch.randn(80, d) * 100, n_components=2, route="covariance"
    )
    return {
        "ot": stretch,
        "actadd": ActAdd(vector=torch.full((d,), 1e4)),
        "direction": DirectionAblation(direction=torch.tensor([1.0, -1.0, -1.0, -1.0]) / 2),
        "per_neuron": PerNeuronOT(
            mean_source=torch.zeros(d), mean_target=torch.zeros(d), scale=torch.full((d,), 2.0)
        ),
    }


@pytest.mark.parametrize("kind", ["ot", "actadd", "direction", "per_neuron"])
def test_float16_overflow_is_an_error_not_inf(kind: str) -> None:
    intervention = _overflowing()[kind]
    x = torch.full((3, 4), 6e4)
    assert bool(torch.isfinite(intervention(x)).all())  # float32: fine
    with pytest.raises(ValueError, match=r"range of torch\.float16.*bfloat16.*strength"):
        intervention(x.half())  # type: ignore[operator]


def test_non_finite_inputs_pass_through_without_an_overflow_error() -> None:
    ablation = _overflowing()["direction"]
    x = torch.ones(2, 4, dtype=torch.float16)
    x[0, 0] = float("inf")
    out = ablation(x)  # type: ignore[operator]
    assert bool(torch.isfinite(out[1]).all()) and not bool(torch.isfinite(out[0]).all())


# --- public constructors check what fitting checks ----------------------------------------------


def test_a_direction_must_be_a_finite_unit_vector() -> None:
    e1 = torch.eye(4)[0]
    with pytest.raises(ValueError, match=r"unit norm .* got norm 3.*direction / direction\.norm"):
        DirectionAblation(direction=3 * e1)
    with pytest.raises(ValueError, match=r"direction is zero.*change nothing"):
        DirectionAblation(direction=torch.zeros(4))
    with pytest.raises(ValueError, match="direction holds 1 NaN or inf"):
        DirectionAblation(direction=torch.tensor([float("nan"), 0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"unit norm.*in layer\(s\) \[1\] of 2"):
        DirectionAblation(direction=torch.stack([e1, 2 * e1]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_copies_in_other_dtypes_pass_the_checks(dtype: torch.dtype) -> None:
    source, target = (rows.float() for rows in gaussian_pair())
    wide = DirectionAblation.random(4096, batch_shape=(2,))
    for fitted in [*_fitted(), wide[1]]:
        copy = fitted.to(dtype=dtype)
        assert copy.with_strength(0.5).strength == 0.5
        x = source if copy.d_model == 8 else torch.randn(3, 4096)
        assert copy(x.to(dtype)).dtype == dtype
    assert wide.to(dtype=dtype)[0].direction.dtype == dtype
    batched = GaussianOTMap.fit(
        torch.stack([source, source + 1]), torch.stack([target] * 2), n_components=4
    )
    assert batched[1].to(dtype=dtype).inverse().n_components == 4


def _hand_built() -> GaussianOTMap:
    source, target = (rows.float() for rows in gaussian_pair())
    return GaussianOTMap.fit(source, target, n_components=4)


def test_a_hand_built_map_with_nan_is_refused() -> None:
    fitted = _hand_built()
    for name in ("matrix", "mean_source", "cov_target"):
        bad = getattr(fitted, name).clone()
        bad.view(-1)[0] = float("nan")
        with pytest.raises(ValueError, match=rf"GaussianOTMap\.{name} holds 1 NaN or inf"):
            dataclasses.replace(fitted, **{name: bad})


def test_a_map_with_fields_of_inconsistent_shapes_names_them(as_user: None) -> None:
    fitted = _hand_built()
    with pytest.raises(ValueError, match=r"cov_source \(shape \(3, 3\)\) has k=3, but basis"):
        dataclasses.replace(fitted, cov_source=fitted.cov_source[:3, :3])
    with pytest.raises(ValueError, match=r"mean_target \(shape \(2, 4\)\) and basis .*leading"):
        dataclasses.replace(fitted, mean_target=fitted.mean_target.expand(2, 4))
    with pytest.raises(ValueError, match=r"matrix must have shape \[\*batch, k, k\], got \(4,\)"):
        dataclasses.replace(fitted, matrix=fitted.mean_source)
    with pytest.raises(ValueError, match=r"PerNeuronOT: scale \(shape \(3,\)\) has d_model=3"):
        PerNeuronOT(mean_source=torch.zeros(4), mean_target=torch.zeros(4), scale=torch.ones(3))


def test_covariances_and_the_transport_matrix_must_be_symmetric_psd() -> None:
    fitted = _hand_built()
    flipped = torch.diag(torch.tensor([1.0, 1.0, 1.0, -0.5]))
    with pytest.raises(ValueError, match=r"cov_source must be positive semi-definite.*-0\.5"):
        dataclasses.replace(fitted, cov_source=flipped)
    skew = fitted.matrix + torch.triu(torch.ones(4, 4), 1)
    with pytest.raises(ValueError, match="matrix must be symmetric"):
        dataclasses.replace(fitted, matrix=skew)
    # Rounding-level negatives (a singular covariance, reg=0) are p.s.d. within tolerance.
    singular = GaussianOTMap.fit(*(r[:3].float() for r in gaussian_pair()), n_components=4, reg=0.0)
    assert float(torch.linalg.eigvalsh(singular.cov_source.double())[0]) < 1e-5


def test_pca_components_must_be_orthonormal(as_user: None) -> None:
    basis = _hand_built().basis
    with pytest.raises(ValueError, match=r"orthonormal rows.*off by 3.*torch\.linalg\.qr"):
        dataclasses.replace(basis, components=2 * basis.components)
    with pytest.raises(ValueError, match="at most d_model"):
        PCABasis(torch.zeros(2), torch.eye(3)[:, :2], torch.ones(3), torch.tensor(3.0))


def test_other_constructors_refuse_what_their_fit_never_makes(as_user: None) -> None:
    with pytest.raises(ValueError, match=r"ActAdd\.vector is zero.*strength=0"):
        ActAdd(vector=torch.zeros(4))
    with pytest.raises(ValueError, match=r"ActAdd\.vector holds 1 NaN"):
        ActAdd(vector=torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="scale must be >= 0"):
        PerNeuronOT(mean_source=torch.zeros(2), mean_target=torch.zeros(2), scale=-torch.ones(2))
    with pytest.raises(TypeError, match=r"PerNeuronOT\.scale must be a torch\.Tensor, got list"):
        PerNeuronOT(mean_source=torch.zeros(2), mean_target=torch.zeros(2), scale=[1.0, 1.0])


def test_copies_do_not_repeat_the_costly_checks(monkeypatch) -> None:
    fitted = _hand_built()
    calls = []
    factorise = torch.linalg.cholesky_ex
    monkeypatch.setattr(torch.linalg, "cholesky_ex", lambda m: calls.append(1) or factorise(m))
    for strength in (0.25, 0.5, 1.0):
        fitted = fitted.with_strength(strength)
    assert calls == []  # the same tensors: checked once, at the fit
    fitted.matrix.neg_()  # an in-place edit is seen (the version counter moves)
    with pytest.raises(ValueError, match="matrix must be positive semi-definite"):
        fitted.with_strength(0.5)


# --- reg that drowns the covariances ------------------------------------------------------------


def test_an_absurd_reg_is_refused_with_the_right_advice() -> None:
    from tl_ot_ablation.lens.map_spec import MapSpec

    source, target = gaussian_pair()
    for fit in (
        lambda: GaussianOTMap.fit(source, target, n_components=4, reg=1e300),
        lambda: PerNeuronOT.fit(source, target, reg=1e300),
        lambda: MapSpec(reg=1e300),
    ):
        with pytest.raises(
            ValueError, match=r"reg=1e\+300 is too large.*below 1.*MeanShift"
        ) as err:
            fit()
        assert "increase" not in str(err.value)
    GaussianOTMap.fit(source, target, n_components=4, reg=1e6)  # large, but meaningful
