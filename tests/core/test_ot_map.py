"""GaussianOTMap (``core.ot_map``, ``core.ot_fit``, ``core.ot_apply``): exact transport in the
subspace, untouched complement, oracle, batching, the norm-preserving and covariance-only
variants, any shape and dtype (hypothesis), and the same map on every device."""

import pytest
import torch
from hypothesis import given, settings

import tl_ot_ablation as tlo
from tests.helpers import DEVICES, device_classes, gaussian_rows, problems, random_spd
from tl_ot_ablation import GaussianOTMap, GaussianStats, MeanShift

ot = pytest.importorskip("ot")


def _pair(
    d: int = 12, n: int = 400, batch: tuple[int, ...] = (), seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    cov_s = random_spd(d, condition=20, batch=batch, seed=seed)
    cov_t = random_spd(d, condition=20, batch=batch, seed=seed + 1) * 2
    mean_s = torch.full((*batch, d), 1.0, dtype=torch.float64)
    mean_t = torch.zeros(*batch, d, dtype=torch.float64)
    return gaussian_rows(n, mean_s, cov_s, seed=seed + 2), gaussian_rows(
        n + 50, mean_t, cov_t, seed=seed + 3
    )


def test_full_space_matches_pot_oracle() -> None:
    source, target = _pair()
    ours = GaussianOTMap.fit(source, target, n_components=None, reg=0.0)
    a, b = ot.gaussian.empirical_bures_wasserstein_mapping(
        source.numpy(), target.numpy(), reg=0.0, bias=True
    )
    # POT's empirical covariance divides by n, ours by n - 1: feed POT our estimates instead.
    a, b = ot.gaussian.bures_wasserstein_mapping(
        source.mean(0).numpy(),
        target.mean(0).numpy(),
        torch.cov(source.T).numpy(),
        torch.cov(target.T).numpy(),
    )
    expected = torch.from_numpy(source.numpy() @ a + b)
    torch.testing.assert_close(ours(source), expected, rtol=1e-8, atol=1e-8)


def test_mapped_samples_reach_target_moments_inside_the_subspace() -> None:
    source, target = _pair(d=16)
    ot_map = GaussianOTMap.fit(source, target, n_components=5, reg=0.0)
    v = ot_map.basis.components
    moved = ot_map(source)
    z_moved = (moved - ot_map.basis.mean) @ v.mT
    z_target = (target - ot_map.basis.mean) @ v.mT
    torch.testing.assert_close(z_moved.mean(0), z_target.mean(0), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(torch.cov(z_moved.T), torch.cov(z_target.T), rtol=1e-9, atol=1e-9)


def test_complement_of_the_subspace_is_unchanged() -> None:
    source, target = _pair(d=16)
    ot_map = GaussianOTMap.fit(source, target, n_components=5)
    x = torch.randn(7, 16, dtype=torch.float64) * 10
    v = ot_map.basis.components
    complement = torch.eye(16, dtype=torch.float64) - v.mT @ v
    torch.testing.assert_close(ot_map(x) @ complement, x @ complement, rtol=0, atol=1e-12)
    assert not torch.allclose(ot_map(x), x)


def test_strength_interpolates_between_identity_and_map() -> None:
    source, target = _pair()
    ot_map = GaussianOTMap.fit(source, target, n_components=6)
    x = source[:10]
    assert torch.equal(ot_map.with_strength(0.0)(x), x)
    half = ot_map.with_strength(0.5)(x)
    torch.testing.assert_close(half, (x + ot_map(x)) / 2)
    with pytest.warns(UserWarning, match="extrapolates"):
        ot_map.with_strength(1.5)


def test_inverse_round_trip() -> None:
    source, target = _pair()
    ot_map = GaussianOTMap.fit(source, target, n_components=6, reg=1e-3)
    x = torch.randn(20, 12, dtype=torch.float64)
    torch.testing.assert_close(ot_map.inverse()(ot_map(x)), x, rtol=1e-9, atol=1e-9)


def test_batched_over_layers_equals_per_layer_fit() -> None:
    source, target = _pair(d=10, batch=(3,))
    batched = GaussianOTMap.fit(source, target, n_components=4)
    assert batched.batch_shape == (3,) and len(batched) == 3
    x = torch.randn(3, 2, 5, 10, dtype=torch.float64)
    out = batched(x)
    for i in range(3):
        single = GaussianOTMap.fit(source[i], target[i], n_components=4)
        torch.testing.assert_close(out[i], single(x[i]), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(batched[i](x[i]), single(x[i]), rtol=1e-9, atol=1e-9)


def test_from_stats_equals_fit_on_rows() -> None:
    source, target = _pair()
    stats_s, stats_t = GaussianStats(12), GaussianStats(12)
    for chunk in source.split(37):
        stats_s.update(chunk)
    for chunk in target.split(41):
        stats_t.update(chunk)
    streamed = GaussianOTMap.from_stats(stats_s, stats_t, n_components=5, dtype=torch.float64)
    direct = GaussianOTMap.fit(source, target, n_components=5)
    torch.testing.assert_close(streamed(source), direct(source), rtol=1e-9, atol=1e-9)


def test_singular_covariances_with_few_samples_stay_finite() -> None:
    source, target = _pair(d=32, n=10)  # n < k: covariances of rank 9
    ot_map = GaussianOTMap.fit(source, target, n_components=20)
    assert torch.isfinite(ot_map(source)).all()
    diag = ot_map.diagnostics()
    assert diag.transport_residual < 1e-6  # exact for the regularised covariances


def test_mean_diff_basis_keeps_a_low_variance_shift() -> None:
    d = 10
    noise = torch.diag(torch.logspace(1, -3, d, dtype=torch.float64))
    shift = torch.zeros(d, dtype=torch.float64)
    shift[-1] = 0.5  # the means differ only along the lowest-variance axis
    source = gaussian_rows(500, shift, noise, seed=1)
    target = gaussian_rows(500, torch.zeros(d, dtype=torch.float64), noise, seed=2)
    plain = GaussianOTMap.fit(source, target, n_components=3)
    with_diff = GaussianOTMap.fit(source, target, n_components=3, basis="pca+mean_diff")
    gap_plain = (plain(source).mean(0) - target.mean(0)).norm()
    gap_diff = (with_diff(source).mean(0) - target.mean(0)).norm()
    assert gap_diff < 0.05 < gap_plain


def test_mean_shift_only_translates() -> None:
    source, target = _pair()
    shift = MeanShift.fit(source, target, n_components=None)
    torch.testing.assert_close(shift.matrix, torch.eye(12, dtype=torch.float64))
    moved = shift(source)
    torch.testing.assert_close(moved - source, (target.mean(0) - source.mean(0)).expand_as(source))
    torch.testing.assert_close(shift.inverse()(moved), source)


def test_diagnostics_split_w2_like_pot() -> None:
    source, target = _pair(d=6)
    ot_map = GaussianOTMap.fit(source, target, n_components=None, reg=0.0)
    diag = ot_map.diagnostics()
    w = ot.gaussian.bures_wasserstein_distance(
        source.mean(0).numpy(),
        target.mean(0).numpy(),
        torch.cov(source.T).numpy(),
        torch.cov(target.T).numpy(),
    )
    torch.testing.assert_close(diag.w2, torch.tensor(float(w) ** 2, dtype=torch.float64))
    torch.testing.assert_close(diag.w2_mean, (source.mean(0) - target.mean(0)).square().sum())
    assert diag.transport_residual < 1e-10
    assert set(diag.to_dict()) >= {"w2", "w2_mean", "w2_bures", "max_stretch"}


def test_dtype_and_device_contract() -> None:
    source, target = _pair()
    ot_map = GaussianOTMap.fit(source.float(), target.float(), n_components=4)
    assert ot_map.matrix.dtype == torch.float32
    x = source[:3].to(torch.bfloat16)
    out = ot_map(x)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    torch.testing.assert_close(out.float(), ot_map(x.float()), rtol=2e-2, atol=5e-2)
    x_before = x.clone()
    ot_map(x)
    assert torch.equal(x, x_before)  # never in place
    moved = ot_map.to("cpu", dtype=torch.float64)
    assert moved.basis.components.dtype == torch.float64 and moved.strength == ot_map.strength


@pytest.mark.parametrize("basis", ["pca", "pca+mean_diff"])
def test_rows_route_equals_covariance_route_when_exact(basis: str) -> None:
    source, target = _pair(d=40, n=12)  # n + m <= d: the Gram matrix gives the exact top-k
    via_rows = GaussianOTMap.fit(source, target, n_components=6, route="rows", basis=basis)
    via_cov = GaussianOTMap.fit(source, target, n_components=6, route="covariance", basis=basis)
    x = torch.randn(9, 40, dtype=torch.float64)
    torch.testing.assert_close(via_rows(x), via_cov(x), rtol=1e-8, atol=1e-8)


def test_rows_route_randomized_matches_covariance_route_closely() -> None:
    d = 512
    scales = 1 / torch.arange(1, d + 1, dtype=torch.float64).sqrt()
    source = torch.randn(600, d, dtype=torch.float64) * scales + 0.05
    target = torch.randn(700, d, dtype=torch.float64) * scales * 1.3
    fast = GaussianOTMap.fit(source, target, n_components=32, route="rows")
    exact = GaussianOTMap.fit(
        source, target, n_components=32, route="covariance", eigen_method="exact"
    )
    kept_fast = fast.basis.explained_variance.sum()
    assert kept_fast / exact.basis.explained_variance.sum() > 0.99


def test_stats_project_equals_statistics_of_projected_rows() -> None:
    rows = torch.randn(50, 8, dtype=torch.float64) + 3
    components = torch.linalg.qr(torch.randn(8, 3, dtype=torch.float64)).Q.mT
    centre = torch.randn(8, dtype=torch.float64)
    projected = GaussianStats.from_rows(rows).project(components, centre)
    direct = GaussianStats.from_rows((rows - centre) @ components.mT)
    torch.testing.assert_close(projected.mean, direct.mean)
    torch.testing.assert_close(projected.cov, direct.cov)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_map_is_finite_and_well_formed(problem: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    source, target, k = problem
    ot_map = GaussianOTMap.fit(source, target, n_components=k)
    assert ot_map.matrix.dtype == source.dtype
    out = ot_map(source)
    assert out.shape == source.shape and out.dtype == source.dtype
    assert torch.isfinite(out).all()
    torch.testing.assert_close(ot_map.matrix, ot_map.matrix.mT)
    # A is p.s.d. in float64; storing it in its dtype moves its eigenvalues by at most
    # eps·‖A‖_F (Weyl), whatever the BLAS.
    matrix = ot_map.matrix.double()
    eps = torch.finfo(source.dtype).eps
    assert (torch.linalg.eigvalsh(matrix).min(-1).values >= -eps * matrix.norm(dim=(-2, -1))).all()
    assert torch.equal(ot_map.with_strength(0.0)(source), source)
    # The edit lies in the subspace: projecting it onto the complement leaves (almost) nothing.
    v = ot_map.basis.components.double()
    edit = (out - source).double()
    leak = edit - (edit @ v.mT) @ v
    # The leak is rounding: of x + edit, and of the stored basis's orthonormality, a few d·eps
    # of the magnitudes (d <= 10; at most ~10 eps seen in 1500 examples). 1000 eps leaves room.
    tolerance = 1000 * torch.finfo(source.dtype).eps
    assert leak.abs().max() <= tolerance * (1 + source.double().abs().max())


# --- geometry variants ------------------------------------------------------------------------


def test_norm_preserving_map_keeps_norms_and_the_transported_direction(separated) -> None:
    source, _, plain = separated
    kept = plain.with_options(preserve_norm=True)
    out = kept(source[:50])
    torch.testing.assert_close(out.norm(dim=-1), source[:50].norm(dim=-1))
    cosine = torch.nn.functional.cosine_similarity(out, plain(source[:50]), dim=-1)
    torch.testing.assert_close(cosine, torch.ones(50, dtype=torch.float64))


def test_covariance_part_is_the_map_without_its_translation(separated) -> None:
    source, target, plain = separated
    linear = plain.with_options(part="covariance")
    basis = plain.basis
    z = basis.project(source[:30])
    expected_z = plain.mean_source + (z - plain.mean_source) @ plain.matrix
    moved = linear(source[:30])
    torch.testing.assert_close(basis.project(moved), expected_z)
    # The complement of the subspace is untouched.
    v = basis.components
    torch.testing.assert_close(moved - moved @ v.T @ v, source[:30] - source[:30] @ v.T @ v)
    # The translation alone (MeanShift) plus the linear part alone make up the full edit.
    shift = MeanShift.fit(source, target, n_components=4, basis=basis)
    x = source[:30]
    torch.testing.assert_close(shift(x) - x + moved - x, plain(x) - x)


def test_options_survive_save_load_and_inverse(separated, tmp_path) -> None:
    _, _, plain = separated
    variant = plain.with_options(gate="posterior", gate_prior=0.3, preserve_norm=True)
    loaded = tlo.load(tlo.save(variant, tmp_path / "v"))
    assert (loaded.gate, loaded.gate_prior, loaded.preserve_norm) == ("posterior", 0.3, True)
    x = torch.randn(5, 10, dtype=torch.float64)
    torch.testing.assert_close(loaded(x), variant(x))
    assert variant.inverse().gate == "posterior"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gate": "soft"}, "gate must be one of"),
        ({"gate_prior": 1.0}, "strictly between 0 and 1"),
        ({"part": "mean"}, "part must be"),
    ],
)
def test_bad_options_are_rejected(separated, options, message, as_user) -> None:
    with pytest.raises(ValueError, match=message):
        separated[2].with_options(**options)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("route", ["covariance", "rows"])
@pytest.mark.parametrize("gate", ["none", "posterior"])
def test_fitted_maps_live_and_run_on_the_device(device: str, route: str, gate: str) -> None:
    source, target = device_classes(device)
    fitted = tlo.GaussianOTMap.fit(source, target, n_components=6, route=route).with_options(
        gate=gate
    )
    assert fitted.matrix.device.type == torch.device(device).type
    on_cpu = tlo.GaussianOTMap.fit(
        source.cpu(), target.cpu(), n_components=6, route=route
    ).with_options(gate=gate)
    moved = fitted(source)
    assert moved.device == source.device and moved.dtype == source.dtype
    torch.testing.assert_close(moved.cpu(), on_cpu(source.cpu()), rtol=1e-3, atol=1e-3)
