"""The choices a transport map is fitted with, and the fitting steps shared by its classes.

``GaussianOTMap`` and ``MeanShift`` (``ot_map``) take these options: which subspace
(``BasisChoice`` or a given ``PCABasis``), how rows reach the moments (``Route``), which part of
the map to apply (``Part``) and the ridge (``DEFAULT_REG``); the estimators are in
``shrinkage``, the gate's kinds in ``gate``. Kept apart from the map so the map's module holds
the map itself: its fit, its fused application and its inverse.
"""

from typing import Literal

import torch
from torch import Tensor

from . import gate as gating
from .errors import UserInputError
from .pca import EigenMethod, PCABasis
from .shrinkage import ESTIMATORS
from .stats import GaussianStats
from .validate import moments_dtype

BasisChoice = Literal["pca", "pca+mean_diff"]
Route = Literal["auto", "covariance", "rows"]
Part = Literal["full", "covariance"]
DEFAULT_REG = 1e-3


def check_map_options(estimator: object, gate: object, gate_prior: object, part: object) -> None:
    """Raise unless the estimator, gate (and its prior) and part name valid choices."""
    if estimator not in ESTIMATORS:
        raise UserInputError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    gating.check_gate(gate, gate_prior)
    if part not in ("full", "covariance"):
        raise UserInputError(f"part must be 'full' or 'covariance', got {part!r}")


def fit_basis(
    source: GaussianStats,
    target: GaussianStats,
    n_components: int | None,
    basis: BasisChoice | PCABasis,
    eigen_method: EigenMethod,
) -> PCABasis:
    if isinstance(basis, PCABasis):
        if basis.d_model != source.d or basis.batch_shape != source.batch_shape:
            raise UserInputError(
                f"the given basis has d_model={basis.d_model} and batch shape "
                f"{tuple(basis.batch_shape)}; the statistics have d_model={source.d} and "
                f"batch shape {tuple(source.batch_shape)}"
            )
        return basis.to(dtype=torch.float64)
    include = basis_include(basis, source.mean, target.mean)
    pooled = source.merge(target)
    return PCABasis.from_stats(pooled, n_components, include=include, method=eigen_method)


def basis_include(basis: BasisChoice, mean_source: Tensor, mean_target: Tensor) -> Tensor | None:
    if basis == "pca":
        return None
    if basis == "pca+mean_diff":
        return mean_source - mean_target
    raise UserInputError(f"basis must be 'pca', 'pca+mean_diff' or a PCABasis, got {basis!r}")


def non_finite_fit_error(cls: type, reg: float) -> UserInputError:
    # A larger ridge helps an ill-conditioned covariance only while it is small next to the
    # variances; from reg ~ 1 on, A is already close to I and more cannot help.
    knob = f"increase `reg` (currently {reg:g}) or " if reg < 1 else ""
    return UserInputError(
        f"{cls.__name__} fit produced non-finite values; {knob}lower `n_components`, and check "
        "the activations' scale (rescale them towards unit size)"
    )


def work_dtype(dtype: torch.dtype, source: Tensor, target: Tensor) -> torch.dtype:
    """``dtype``, or float64 where float32 second moments of either class would under- or
    overflow (rows at a scale of ~1e-13 and below, or ~1e12 and above)."""
    if torch.float64 in (moments_dtype(source), moments_dtype(target)):
        return torch.float64
    return dtype


def total_variance(stats: GaussianStats) -> Tensor:
    """Total variance of the rows ``stats`` summarises, ``[*batch]``."""
    return torch.diagonal(stats.cov, dim1=-2, dim2=-1).sum(-1)
