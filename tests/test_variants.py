"""Issue 6's map variants: shrinkage estimators, the posterior gate, norm preservation and the
covariance-only part, each against an independent reference."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import gaussian_rows, random_spd
from sklearn.covariance import OAS, LedoitWolf

import tl_ot_ablation as tlo
from tl_ot_ablation import CollectOptions, GaussianOTMap, MeanShift
from tl_ot_ablation.core.gate import gaussian_log_density, harmful_log_odds
from tl_ot_ablation.core.shrinkage import ledoit_wolf_covariance, oas_covariance


def _rows(n: int, k: int, seed: int) -> torch.Tensor:
    return gaussian_rows(
        n, torch.zeros(k, dtype=torch.float64), random_spd(k, condition=50, seed=seed), seed=seed
    )


# --- shrinkage against scikit-learn -----------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(10, 16), (40, 16), (500, 8)])
def test_oas_matches_scikit_learn(n: int, k: int) -> None:
    rows = _rows(n, k, seed=n)
    centred = rows - rows.mean(0)
    cov, weight = oas_covariance(centred.T @ centred / n, n)
    reference = OAS().fit(rows.numpy())
    np.testing.assert_allclose(cov.numpy(), reference.covariance_, rtol=1e-10, atol=1e-12)
    assert float(weight) == pytest.approx(reference.shrinkage_, rel=1e-10)


@pytest.mark.parametrize(("n", "k"), [(10, 16), (40, 16), (500, 8)])
def test_ledoit_wolf_matches_scikit_learn(n: int, k: int) -> None:
    rows = _rows(n, k, seed=n + 1)
    cov, weight = ledoit_wolf_covariance(rows)
    reference = LedoitWolf().fit(rows.numpy())
    np.testing.assert_allclose(cov.numpy(), reference.covariance_, rtol=1e-10, atol=1e-12)
    assert float(weight) == pytest.approx(reference.shrinkage_, rel=1e-10)


def test_shrinkage_is_batched_over_layers() -> None:
    rows = torch.stack([_rows(30, 6, seed=s) for s in range(3)])
    batched, weights = ledoit_wolf_covariance(rows)
    for i in range(3):
        one, weight = ledoit_wolf_covariance(rows[i])
        torch.testing.assert_close(batched[i], one)
        torch.testing.assert_close(weights[i], weight)


def test_shrinkage_weight_falls_as_samples_grow() -> None:
    few = ledoit_wolf_covariance(_rows(20, 16, seed=0))[1]
    many = ledoit_wolf_covariance(_rows(5000, 16, seed=0))[1]
    assert 0 <= float(many) < float(few) <= 1


@pytest.mark.parametrize("estimator", ["oas", "ledoit_wolf"])
def test_maps_use_the_estimator_in_their_subspace(estimator: str) -> None:
    source, target = _rows(60, 12, seed=3) + 1.0, _rows(80, 12, seed=4)
    fitted = GaussianOTMap.fit(
        source, target, n_components=6, reg=0.0, estimator=estimator, route="rows"
    ).to(dtype=torch.float64)
    coords = fitted.basis.project(source)
    sk = (OAS if estimator == "oas" else LedoitWolf)().fit(coords.numpy())
    np.testing.assert_allclose(fitted.cov_source.numpy(), sk.covariance_, rtol=1e-8, atol=1e-10)
    assert fitted.estimator == estimator
    # The map is still exact for the covariances it uses: A S A = C.
    a, s, c = fitted.matrix, fitted.cov_source, fitted.cov_target
    torch.testing.assert_close(a @ s @ a, c, rtol=1e-7, atol=1e-9)


def test_ledoit_wolf_from_streamed_statistics_is_refused() -> None:
    source, target = _rows(30, 8, seed=1), _rows(30, 8, seed=2)
    stats = tlo.GaussianStats.from_rows
    with pytest.raises(ValueError, match="needs the rows"):
        GaussianOTMap.from_stats(
            stats(source), stats(target), n_components=4, estimator="ledoit_wolf"
        )
    oas = GaussianOTMap.from_stats(stats(source), stats(target), n_components=4, estimator="oas")
    assert oas.estimator == "oas"


# --- the posterior gate -----------------------------------------------------------------------


def test_log_density_and_log_odds_match_torch_distributions() -> None:
    k = 5
    mean_s, mean_t = torch.randn(k, dtype=torch.float64), torch.randn(k, dtype=torch.float64)
    cov_s, cov_t = random_spd(k, seed=1), random_spd(k, seed=2)
    z = torch.randn(7, k, dtype=torch.float64) * 2
    normal_s = torch.distributions.MultivariateNormal(mean_s, cov_s)
    normal_t = torch.distributions.MultivariateNormal(mean_t, cov_t)
    chol_s, chol_t = torch.linalg.cholesky(cov_s), torch.linalg.cholesky(cov_t)
    torch.testing.assert_close(gaussian_log_density(z, mean_s, chol_s), normal_s.log_prob(z))
    expected = normal_s.log_prob(z) - normal_t.log_prob(z) + np.log(0.2 / 0.8)
    torch.testing.assert_close(harmful_log_odds(z, mean_s, chol_s, mean_t, chol_t, 0.2), expected)


@pytest.fixture(scope="module")
def separated() -> tuple[torch.Tensor, torch.Tensor, GaussianOTMap]:
    d = 10
    source = gaussian_rows(
        400, torch.full((d,), 2.0, dtype=torch.float64), random_spd(d, seed=5), seed=6
    )
    target = gaussian_rows(400, torch.zeros(d, dtype=torch.float64), random_spd(d, seed=7), seed=8)
    return source, target, GaussianOTMap.fit(source, target, n_components=4)


def test_posterior_gate_scales_the_edit_by_the_posterior(separated) -> None:
    source, target, plain = separated
    gated = plain.with_options(gate="posterior")
    x = torch.cat([source[:5], target[:5]])
    posterior = torch.sigmoid(plain.harmful_log_odds(x))
    expected = x + posterior[:, None] * (plain(x) - x)
    torch.testing.assert_close(gated(x), expected)
    # The gate's Gaussians are the map's own: posterior from a direct density computation.
    z = plain.basis.project(x)
    direct = torch.distributions.MultivariateNormal(plain.mean_source, plain.cov_source).log_prob(
        z
    ) - torch.distributions.MultivariateNormal(plain.mean_target, plain.cov_target).log_prob(z)
    torch.testing.assert_close(plain.harmful_log_odds(x), direct)


def test_hard_gate_moves_only_harmful_looking_rows(separated) -> None:
    source, target, plain = separated
    hard = plain.with_options(gate="hard")
    x = torch.cat([source[:20], target[:20]])
    harmful = plain.harmful_log_odds(x) > 0
    out = hard(x)
    torch.testing.assert_close(out[harmful], plain(x)[harmful])
    torch.testing.assert_close(out[~harmful], x[~harmful])
    assert harmful[:20].float().mean() > 0.9 and harmful[20:].float().mean() < 0.1


def test_gate_leaves_harmless_rows_nearly_alone(separated) -> None:
    source, target, plain = separated
    gated = plain.with_options(gate="posterior")
    moved_plain = (plain(target) - target).norm(dim=-1).mean()
    moved_gated = (gated(target) - target).norm(dim=-1).mean()
    assert moved_gated < 0.1 * moved_plain
    # ... while harmful rows still move most of the way.
    assert (gated(source) - source).norm(dim=-1).mean() > 0.8 * (plain(source) - source).norm(
        dim=-1
    ).mean()


def test_prior_shifts_the_log_odds_by_its_logit(separated) -> None:
    source, _, plain = separated
    shifted = plain.with_options(gate_prior=0.9).harmful_log_odds(source[:4])
    torch.testing.assert_close(
        shifted - plain.harmful_log_odds(source[:4]),
        torch.full((4,), np.log(9.0), dtype=torch.float64),
    )


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


# --- through fit_ot_ablation on a model ----------------------------------------------------------


def test_fit_ot_ablation_passes_the_variant_options(tiny_bridge) -> None:
    from conftest import HARMFUL, HARMLESS

    from tl_ot_ablation.lens.collect import collect_activations

    fitted = tlo.fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(
            tlo.RECOMMENDED_MAP,
            n_components=4,
            estimator="ledoit_wolf",
            gate="posterior",
            preserve_norm=True,
        ),
        collect=tlo.CollectOptions(progress=False),
    )
    name = "blocks.1.hook_resid_pre"
    fitted_map = fitted[name]
    assert (fitted_map.estimator, fitted_map.gate, fitted_map.preserve_norm) == (
        "ledoit_wolf",
        "posterior",
        True,
    )
    assert fitted.metadata["estimator"] == "ledoit_wolf" and fitted.metadata["gate"] == "posterior"
    # Ledoit-Wolf is fitted from the collected rows, exactly as GaussianOTMap.fit would.
    rows = [
        collect_activations(tiny_bridge, prompts, name, CollectOptions(progress=False))[name]
        for prompts in (HARMFUL, HARMLESS)
    ]
    direct = GaussianOTMap.fit(*rows, n_components=4, estimator="ledoit_wolf", route="rows")
    torch.testing.assert_close(fitted_map.cov_source, direct.cov_source)
    with tiny_bridge.hooks(fwd_hooks=fitted.fwd_hooks()):
        logits = tiny_bridge(tlo.format_chat(tiny_bridge.tokenizer, ["hello"]))
    assert torch.isfinite(logits).all()


def test_gated_batched_map_equals_its_layers() -> None:
    source = torch.randn(3, 80, 8, dtype=torch.float64) + 1.0
    target = torch.randn(3, 90, 8, dtype=torch.float64) * 0.7
    batched = GaussianOTMap.fit(source, target, n_components=4).with_options(
        gate="posterior", preserve_norm=True
    )
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    out = batched(x)
    for layer in range(3):
        torch.testing.assert_close(out[layer], batched[layer](x[layer]))
