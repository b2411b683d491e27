"""Reliability of the math core: true Ritz values, fits at any scale, warnings on degenerate
classes, and integer activations refused rather than truncated."""

import dataclasses
import warnings

import pytest
import torch
from conftest import gaussian_rows, random_spd

from tl_ot_ablation import (
    RECOMMENDED_MAP,
    ActAdd,
    CollectOptions,
    DirectionAblation,
    GaussianOTMap,
    GaussianStats,
    MeanShift,
    PCABasis,
    PerNeuronOT,
)
from tl_ot_ablation.core.degeneracy import IdenticalClassesError
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
    source, _ = (rows.float() for rows in _pair())
    with pytest.raises(IdenticalClassesError, match=IDENTICAL):
        _fit(kind, source, source.clone())


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_the_same_rows_in_another_order_are_refused_too(kind: str) -> None:
    # Shuffled float32 rows: the statistics differ by rounding only (a large common mean makes
    # that rounding as large as it gets), and that is still no difference between the classes.
    source = _pair()[0].float() + 300
    shuffled = source[torch.randperm(source.shape[0], generator=torch.Generator().manual_seed(1))]
    a, b = GaussianStats.from_rows(source), GaussianStats.from_rows(shuffled)
    assert not (torch.equal(a.mean, b.mean) and torch.equal(a.cov, b.cov))  # rounding differs
    with pytest.raises(IdenticalClassesError, match=IDENTICAL):
        _fit(kind, source, shuffled)


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_a_small_real_difference_is_fitted(kind: str) -> None:
    # Means 1e-3 of the spread apart (6e-5 of the rows' norm, under a common mean of 30): small,
    # but ~100x the rounding of the means (8·sqrt(d)·eps32 ≈ 2.7e-6 of the spread).
    source = _pair()[0].float() + 30
    spread = float(source.var(0).sum())
    shift = 1e-3 * (spread / source.shape[-1]) ** 0.5
    _fit(kind, source, source + shift)


def test_identical_layers_of_a_batched_fit_are_named() -> None:
    source, target = _pair()
    source, target = source[:60], target[:60]
    with pytest.raises(IdenticalClassesError, match=r"in layer\(s\) \[1\] of 2"):
        GaussianOTMap.fit(
            torch.stack([source, source]), torch.stack([target, source]), n_components=4
        )


def test_w2_ranking_never_picks_an_identical_layer() -> None:
    from tl_ot_ablation.eval.selection import layers_by_w2, w2_by_layer

    source, target = _pair()
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(3)]
    # Layers 0 and 2: the same rows in both classes (layer 2 reordered); layer 1 differs.
    rows = {
        names[0]: (source, source),
        names[1]: (source, target),
        names[2]: (source, source.flip(0)),
    }
    stats = tuple({n: GaussianStats.from_rows(rows[n][i]) for n in names} for i in range(2))
    table = w2_by_layer(stats, 3, n_components=4)  # type: ignore[arg-type]
    assert [row["w2"] for row in table][::2] == [0.0, 0.0] and table[1]["w2"] > 0
    assert layers_by_w2(table) == [1]
    with pytest.raises(IdenticalClassesError, match=r"only 1 layer.*2 were asked for"):
        layers_by_w2(table, count=2)
    with pytest.raises(IdenticalClassesError, match=r"identical .* at 3 of 3 layers"):
        layers_by_w2([{**row, "w2": 0.0, "w2_relative": 0.0} for row in table])


def test_model_fits_refuse_identical_prompts_before_any_pass(tiny_bridge, monkeypatch) -> None:
    from conftest import HARMFUL

    from tl_ot_ablation import fit_actadd, fit_direction_ablation, fit_ot_ablation, select_layers
    from tl_ot_ablation.lens import fit as fit_module
    from tl_ot_ablation.lens import training as training_module

    def no_pass(*args, **kwargs):
        raise AssertionError("the prompts were run through the model")

    monkeypatch.setattr(fit_module, "collect_pair", no_pass)
    monkeypatch.setattr(training_module, "collect_training", no_pass)
    quiet = {"progress": False}
    message = "harmful and harmless prompts are the same"
    for harmful, harmless in ((HARMFUL, list(reversed(HARMFUL))), (["x"], ["x"])):
        with pytest.raises(IdenticalClassesError, match=message):
            fit_ot_ablation(
                tiny_bridge,
                harmful,
                harmless,
                layers=[1],
                collect=CollectOptions(progress=False),
            )
        with pytest.raises(IdenticalClassesError, match=message):
            fit_direction_ablation(
                tiny_bridge,
                harmful,
                harmless,
                layer=1,
                collect=CollectOptions(progress=False),
            )
        with pytest.raises(IdenticalClassesError, match=message):
            fit_actadd(
                tiny_bridge,
                harmful,
                harmless,
                layer=1,
                collect=CollectOptions(progress=False),
            )
        with pytest.raises(IdenticalClassesError, match=message):
            select_layers(tiny_bridge, harmful, harmless, **quiet)


def test_a_model_layer_where_the_classes_agree_is_refused_by_name(tiny_bridge) -> None:
    from conftest import HARMFUL, HARMLESS

    from tl_ot_ablation import fit_ot_ablation, select_layers

    # Layer 0 of a rotary model at the post-instruction positions: the template's embeddings,
    # the same rows for every prompt.
    with pytest.raises(IdenticalClassesError, match=r"blocks\.0\.hook_resid_pre: .*later layer"):
        fit_ot_ablation(
            tiny_bridge,
            HARMFUL,
            HARMLESS,
            layers=[0],
            spec=dataclasses.replace(RECOMMENDED_MAP, n_components=4),
            collect=CollectOptions(progress=False),
        )
    kwargs = {"n_components": 4, "progress": False}
    # Among other layers (e.g. a map at every layer), that layer is left out, with a warning.
    with pytest.warns(UserWarning, match=r"no map at blocks\.0\.hook_resid_pre.*identical") as w:
        fitted = fit_ot_ablation(
            tiny_bridge,
            HARMFUL,
            HARMLESS,
            layers=[0, 1],
            spec=dataclasses.replace(RECOMMENDED_MAP, n_components=4),
            collect=CollectOptions(progress=False),
        )
    assert w[0].filename == __file__
    assert list(fitted) == ["blocks.1.hook_resid_pre"]
    assert fitted.metadata["layers"] == [1] and fitted.metadata["identical_layers"] == [0]
    assert 0 not in select_layers(tiny_bridge, HARMFUL, HARMLESS, count=2, **kwargs)
    with pytest.raises(IdenticalClassesError, match="only 2 layer"):
        select_layers(tiny_bridge, HARMFUL, HARMLESS, count=3, **kwargs)


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
    source, target = (rows.float() for rows in _pair())
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
    source, target = (rows.float() for rows in _pair())
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
    singular = GaussianOTMap.fit(*(r[:3].float() for r in _pair()), n_components=4, reg=0.0)
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

    source, target = _pair()
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


# --- statistics merged across processes ---------------------------------------------------------


def _mismatch_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from tl_ot_ablation.core.distributed import all_reduce_stats

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    errors = []
    try:
        # Same number of elements, other shapes; then a different number of batch dimensions.
        for shape in ([(2, 3), (3, 2)][rank], [(6,), (2, 3)][rank]):
            stats = GaussianStats(4, batch_shape=shape)
            stats.update(torch.randn(*shape, 5, 4))
            try:
                all_reduce_stats(stats)
                errors.append(None)
            except ValueError as error:
                errors.append(str(error))
        torch.save(errors, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_refuses_statistics_of_other_shapes(tmp_path) -> None:
    import os
    import socket

    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.fail("torch.distributed with the gloo backend is needed for this test")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_mismatch_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        same_size, other_ndim = torch.load(tmp_path / f"rank{rank}.pt")
        assert same_size is not None and "different shapes" in same_size
        assert "rank 0: shape (2, 3, 4) (torch.float64)" in same_size
        assert "rank 1: shape (3, 2, 4) (torch.float64)" in same_size
        assert other_ndim is not None and "(6, 4)" in other_ndim and "(2, 3, 4)" in other_ndim
