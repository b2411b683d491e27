"""Choose the subspace size ``k`` and the covariance estimator by held-out likelihood.

The transport map is only as good as its two Gaussians. For each candidate ``k`` (a PCA basis
of the pooled training rows) and estimator, fit the harmful and harmless Gaussians on training
rows and score the mean log-density of held-out rows. To compare different ``k`` fairly, the
density is over the full ``d`` dimensions: the fitted Gaussian inside the subspace times an
isotropic Gaussian with the training residual variance outside it (as in probabilistic PCA).
Larger ``k`` keeps more structure but estimates more parameters from the same rows, so the
score peaks; shrinkage moves that peak to larger ``k``.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .gate import gaussian_log_density
from .ot_map import DEFAULT_REG, ESTIMATORS, _estimate_cov
from .pca import PCABasis
from .stats import GaussianStats


@dataclass(frozen=True)
class LikelihoodScore:
    """Mean held-out log-density per row (nats), both classes averaged."""

    n_components: int
    estimator: str
    log_likelihood: float


def _class_log_likelihood(
    train: Tensor, held_out: Tensor, basis: PCABasis, estimator: str, reg: float
) -> float:
    z_train, z_held = basis.project(train), basis.project(held_out)
    stats = GaussianStats.from_rows(z_train)
    cov = _estimate_cov(stats, z_train, estimator, reg)
    inside = gaussian_log_density(z_held, stats.mean, torch.linalg.cholesky(cov))
    # The discarded directions: an isotropic Gaussian with the training residual variance.
    d, k = train.shape[-1], basis.n_components
    if d == k:
        return float(inside.mean())
    train_residual = train - basis.reconstruct(z_train)
    held_residual = held_out - basis.reconstruct(z_held)
    var = train_residual.square().sum(-1).mean() / (d - k)
    outside = -0.5 * held_residual.square().sum(-1) / var - 0.5 * (d - k) * torch.log(
        2 * math.pi * var
    )
    return float((inside + outside).mean())


def heldout_log_likelihood(
    source: Float[Tensor, "n d"],
    target: Float[Tensor, "m d"],
    *,
    n_components: Sequence[int],
    estimators: Sequence[str] = ESTIMATORS,
    held_out_fraction: float = 0.25,
    reg: float = DEFAULT_REG,
) -> list[LikelihoodScore]:
    """Score every ``(k, estimator)`` by the held-out log-likelihood of both classes.

    The last ``held_out_fraction`` of each class's rows is held out (rows come prompt by
    prompt, so this holds out whole prompts). Returns the scores, best first.
    """
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; choose from {list(ESTIMATORS)}")
    source, target = source.double(), target.double()
    splits = []
    for name, rows in (("source", source), ("target", target)):
        cut = round(rows.shape[0] * (1 - held_out_fraction))
        if cut < 2 or rows.shape[0] - cut < 1:
            raise ValueError(f"{name} has {rows.shape[0]} rows: too few to hold some out")
        splits.append((rows[:cut], rows[cut:]))
    pooled = torch.cat([splits[0][0], splits[1][0]])
    scores = []
    for k in n_components:
        if not 1 <= k <= min(pooled.shape):
            raise ValueError(f"n_components={k} must be in 1..{min(pooled.shape)}")
        basis = PCABasis.from_rows(pooled, k, method="exact")
        for estimator in estimators:
            value = (
                sum(
                    _class_log_likelihood(train, held, basis, estimator, reg)
                    for train, held in splits
                )
                / 2
            )
            scores.append(LikelihoodScore(k, estimator, value))
    return sorted(scores, key=lambda s: -s.log_likelihood)
