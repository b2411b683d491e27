"""The posterior gate (``core.gate`` and the gated map): log densities and log-odds against
``torch.distributions``, the edit scaled by the posterior, the hard gate, the prior."""

import numpy as np
import torch

from tests.helpers import random_spd
from tl_ot_ablation import GaussianOTMap
from tl_ot_ablation.core.gate import gaussian_log_density, harmful_log_odds

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
