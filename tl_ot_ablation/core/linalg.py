"""Batched symmetric-matrix functions: the one numerical recipe every square root here uses.

All functions act on the last two dimensions and broadcast over any leading ones, so the
maps of every layer of a model are computed in one batched ``eigh`` call instead of a Python
loop. The recipe (after concept-erasure's ``psd_sqrt_rsqrt`` and POT's ``sqrtm``):
symmetrise, ``torch.linalg.eigh``, clamp eigenvalues at 0, and invert only eigenvalues above
the pseudo-inverse threshold ``max(eig) * dim * eps`` (the default of ``torch.linalg.pinv``).
"""

import torch
from jaxtyping import Float
from torch import Tensor


def symmetrize(matrix: Float[Tensor, "*batch d d"]) -> Float[Tensor, "*batch d d"]:
    """Return ``(M + Mᵀ) / 2``, removing the asymmetry that rounding leaves in products."""
    return (matrix + matrix.mT) / 2


def psd_eigh(
    matrix: Float[Tensor, "*batch d d"],
) -> tuple[Float[Tensor, "*batch d"], Float[Tensor, "*batch d d"]]:
    """Eigen-decomposition of a (numerically) p.s.d. matrix, eigenvalues clamped at 0.

    Returns ``(eigenvalues, eigenvectors)`` in ascending order, as ``torch.linalg.eigh`` does.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(symmetrize(matrix))
    return eigenvalues.clamp_min(0), eigenvectors


def pinv_threshold(eigenvalues: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch 1"]:
    """Eigenvalues at or below this are treated as zero (``torch.linalg.pinv``'s default rtol)."""
    eps = torch.finfo(eigenvalues.dtype).eps
    return eigenvalues.amax(dim=-1, keepdim=True) * eigenvalues.shape[-1] * eps


def _recompose(
    eigenvalues: Float[Tensor, "*batch d"], eigenvectors: Float[Tensor, "*batch d d"]
) -> Float[Tensor, "*batch d d"]:
    return symmetrize((eigenvectors * eigenvalues.unsqueeze(-2)) @ eigenvectors.mT)


def psd_sqrt(matrix: Float[Tensor, "*batch d d"]) -> Float[Tensor, "*batch d d"]:
    """Symmetric p.s.d. square root ``M^{1/2}``."""
    eigenvalues, eigenvectors = psd_eigh(matrix)
    return _recompose(eigenvalues.sqrt(), eigenvectors)


def psd_sqrt_and_pinv_sqrt(
    matrix: Float[Tensor, "*batch d d"],
) -> tuple[Float[Tensor, "*batch d d"], Float[Tensor, "*batch d d"]]:
    """``(M^{1/2}, M^{+1/2})``: the square root and the pseudo-inverse square root, one ``eigh``."""
    eigenvalues, eigenvectors = psd_eigh(matrix)
    sqrt = eigenvalues.sqrt()
    keep = eigenvalues > pinv_threshold(eigenvalues)
    inv_sqrt = torch.where(keep, 1 / torch.where(keep, sqrt, 1), 0)
    return _recompose(sqrt, eigenvectors), _recompose(inv_sqrt, eigenvectors)


def condition_number(matrix: Float[Tensor, "*batch d d"]) -> Float[Tensor, "*batch"]:
    """Ratio of the largest to the smallest eigenvalue of a p.s.d. matrix (``inf`` if singular)."""
    eigenvalues = torch.linalg.eigvalsh(symmetrize(matrix)).clamp_min(0)
    return eigenvalues[..., -1] / eigenvalues[..., 0]


def bures_ot_matrix(
    cov_source: Float[Tensor, "*batch k k"], cov_target: Float[Tensor, "*batch k k"]
) -> Float[Tensor, "*batch k k"]:
    """The linear part ``A`` of the 2-Wasserstein map between two centred Gaussians.

    ``A = S^{-1/2} (S^{1/2} C S^{1/2})^{1/2} S^{-1/2}`` with ``S`` the source and ``C`` the
    target covariance (Knott & Smith, 1984; Peyré & Cuturi, 2019, remark 2.29). ``A`` is
    symmetric p.s.d. and satisfies ``A S A = C`` whenever ``S`` is non-singular. The shortcut
    ``C^{1/2} S^{-1/2}`` equals ``A`` only when ``S`` and ``C`` commute, so it is never used.
    """
    sqrt_s, inv_sqrt_s = psd_sqrt_and_pinv_sqrt(cov_source)
    middle = psd_sqrt(sqrt_s @ cov_target @ sqrt_s)
    return symmetrize(inv_sqrt_s @ middle @ inv_sqrt_s)


def bures_distance_squared(
    cov_source: Float[Tensor, "*batch k k"], cov_target: Float[Tensor, "*batch k k"]
) -> Float[Tensor, "*batch"]:
    """Squared Bures distance ``tr S + tr C - 2 tr (S^{1/2} C S^{1/2})^{1/2}``, clamped at 0."""
    sqrt_s = psd_sqrt(cov_source)
    cross = torch.linalg.eigvalsh(symmetrize(sqrt_s @ cov_target @ sqrt_s)).clamp_min(0).sqrt()
    trace_s = torch.diagonal(cov_source, dim1=-2, dim2=-1).sum(-1)
    trace_t = torch.diagonal(cov_target, dim1=-2, dim2=-1).sum(-1)
    return (trace_s + trace_t - 2 * cross.sum(-1)).clamp_min(0)
