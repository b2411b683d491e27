"""The posterior gate: how harmful an activation looks under the two fitted Gaussians.

The transport map already holds ``N(m_s, S)`` (harmful) and ``N(m_t, C)`` (harmless) in its
subspace, so a quadratic discriminant comes for free:

    logit P(harmful | z) = log N(z; m_s, S) − log N(z; m_t, C) + log(π / (1 − π))

with ``π`` the prior probability of harmful. A gated map applies ``x + g(z)·(T(x) − x)``: with
``g`` the posterior ("posterior") or its 0/1 decision at one half ("hard"), activations that
look harmless are left (nearly) alone. The densities use Cholesky factors of the stored
(regularised) covariances, so no matrix is inverted.
"""

import math
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import UserInputError

GateKind = Literal["none", "posterior", "hard"]
GATES = ("none", "posterior", "hard")


def gaussian_log_density(
    z: Float[Tensor, "*batch n k"],
    mean: Float[Tensor, "*batch k"],
    chol: Float[Tensor, "*batch k k"],
) -> Float[Tensor, "*batch n"]:
    """``log N(z; mean, L Lᵀ)`` for each row of ``z`` (``chol`` lower-triangular)."""
    k = z.shape[-1]
    centred = (z - mean.unsqueeze(-2)).mT  # [*batch, k, n]
    white = torch.linalg.solve_triangular(chol, centred, upper=False)
    half_logdet = torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1, keepdim=True)
    return -0.5 * white.square().sum(-2) - half_logdet - 0.5 * k * math.log(2 * math.pi)


def harmful_log_odds(
    z: Float[Tensor, "*batch n k"],
    mean_source: Float[Tensor, "*batch k"],
    chol_source: Float[Tensor, "*batch k k"],
    mean_target: Float[Tensor, "*batch k"],
    chol_target: Float[Tensor, "*batch k k"],
    prior: float = 0.5,
) -> Float[Tensor, "*batch n"]:
    """``logit P(source | z)`` under the two Gaussians and the prior ``P(source) = prior``."""
    return (
        gaussian_log_density(z, mean_source, chol_source)
        - gaussian_log_density(z, mean_target, chol_target)
        + math.log(prior / (1 - prior))
    )


def gate_weight(log_odds: Tensor, kind: GateKind) -> Tensor:
    """The weight ``g`` in ``x + g·(T(x) − x)``: the posterior, or its decision at 1/2."""
    if kind == "posterior":
        return torch.sigmoid(log_odds)
    if kind == "hard":
        return (log_odds > 0).to(log_odds.dtype)
    raise UserInputError(f"gate must be one of {GATES}, got {kind!r}")


def check_gate(kind: object, prior: object) -> None:
    if kind not in GATES:
        raise UserInputError(f"gate must be one of {GATES}, got {kind!r}")
    if not (isinstance(prior, int | float) and 0 < prior < 1):
        raise UserInputError(
            f"gate_prior must be a probability strictly between 0 and 1, got {prior}"
        )
