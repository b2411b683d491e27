"""Covariance estimators for the few-samples regime: fixed ridge, Oracle Approximating Shrinkage
and Ledoit-Wolf, batched over leading dimensions, in float64.

With a few hundred prompts the sample covariance of a ``k``-dimensional subspace is noisy (and
singular when ``n ≤ k``), which makes the transport matrix stretch noise directions. Shrinking
towards ``μ·I`` (``μ = tr S / k``) with a data-driven weight fixes that:

- ``oas_covariance`` (Chen et al., 2010) needs only the sample covariance and ``n``, so it works
  on streamed ``GaussianStats``;
- ``ledoit_wolf_covariance`` (Ledoit & Wolf, 2004) also needs ``Σ_i ‖x_i − m‖⁴``, i.e. the rows.

Both follow scikit-learn's formulas (``sklearn.covariance.OAS`` / ``LedoitWolf``, the test
oracles) and its convention of the maximum-likelihood covariance (divided by ``n``). They are
re-written here because scikit-learn works on one numpy matrix at a time, while the maps are
fitted for all layers at once on torch tensors.
"""

from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import UserInputError

if TYPE_CHECKING:
    from .stats import GaussianStats

Estimator = Literal["ridge", "oas", "ledoit_wolf"]
ESTIMATORS = ("ridge", "oas", "ledoit_wolf")


def _target_scale(cov: Tensor) -> Tensor:
    """``μ = tr S / k``, the scale of the shrinkage target ``μ·I``, shaped ``[*batch, 1, 1]``."""
    k = cov.shape[-1]
    return (torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1) / k)[..., None, None]


def _shrink(cov: Tensor, weight: Tensor) -> Tensor:
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    w = weight[..., None, None]
    return (1 - w) * cov + w * _target_scale(cov) * eye


def oas_covariance(
    cov: Float[Tensor, "*batch k k"], n: int
) -> tuple[Float[Tensor, "*batch k k"], Float[Tensor, "*batch"]]:
    """OAS-shrunk covariance and its weight, from the MLE covariance of ``n`` samples."""
    if n < 1:
        raise UserInputError(f"OAS needs at least one sample, got n={n}")
    cov = cov.double()
    k = cov.shape[-1]
    mu = _target_scale(cov)[..., 0, 0]
    alpha = cov.square().mean((-2, -1))
    numerator = alpha + mu.square()
    denominator = (n + 1) * (alpha - mu.square() / k)
    weight = torch.where(
        denominator > 0, (numerator / denominator.clamp_min(1e-300)).clamp_max(1.0), 1.0
    )
    return _shrink(cov, weight), weight


def ledoit_wolf_covariance(
    rows: Float[Tensor, "*batch n k"],
) -> tuple[Float[Tensor, "*batch k k"], Float[Tensor, "*batch"]]:
    """Ledoit-Wolf-shrunk MLE covariance of ``rows`` and its weight."""
    if rows.shape[-2] < 2:
        raise UserInputError(f"Ledoit-Wolf needs at least two rows, got {rows.shape[-2]}")
    x = rows.double()
    x = x - x.mean(-2, keepdim=True)
    n, k = x.shape[-2], x.shape[-1]
    cov = x.mT @ x / n
    mu = _target_scale(cov)[..., 0, 0]
    # ‖S − μI‖²_F / k and the variance of the rank-one terms x xᵀ around S, as in scikit-learn.
    delta = (cov.square().sum((-2, -1)) - 2 * mu * mu * k + k * mu.square()) / k
    fourth = x.square().sum(-1).square().sum(-1)  # Σ_i ‖x_i‖⁴
    beta = (fourth / n - cov.square().sum((-2, -1))) / (k * n)
    beta = torch.minimum(beta, delta)
    weight = torch.where(delta > 0, beta / delta.clamp_min(1e-300), 0.0)
    return _shrink(cov, weight), weight


def regularize(cov: Tensor, reg: float) -> Tensor:
    """``cov + reg·(tr cov / k)·I``: the relative ridge every map adds to its covariances."""
    k = cov.shape[-1]
    scale = torch.diagonal(cov, dim1=-2, dim2=-1).mean(-1)[..., None, None]
    return cov + reg * scale * torch.eye(k, dtype=cov.dtype, device=cov.device)


def estimate_cov(stats: "GaussianStats", rows: Tensor | None, estimator: str, reg: float) -> Tensor:
    """The covariance a map uses: the unbiased sample covariance ("ridge"), or the OAS /
    Ledoit-Wolf shrunk MLE covariance; then the relative ridge ``reg`` on top."""
    if estimator == "ridge":
        cov = stats.cov
    elif estimator == "oas":
        cov, _ = oas_covariance(stats.scatter / stats.count, stats.count)
    elif estimator == "ledoit_wolf":
        if rows is None:
            raise UserInputError(
                "estimator='ledoit_wolf' needs the rows (fourth moments), not streamed "
                "statistics: use GaussianOTMap.fit(rows, ..., route='rows'), or estimator='oas'"
            )
        cov, _ = ledoit_wolf_covariance(rows)
    else:
        raise UserInputError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return regularize(cov, reg)
