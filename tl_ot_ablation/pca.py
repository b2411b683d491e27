"""PCA subspaces of activation statistics, batched over layers.

Coordinates are row vectors: ``z = (x - mean) @ components.mT``, ``x ≈ mean + z @ components``.
The top-``k`` eigenvectors come either from a full ``eigh`` of the covariance or, for
``k ≪ d``, from randomised subspace iteration (Halko, Martinsson & Tropp, 2011, alg. 4.4),
which costs O(d²·k) instead of O(d³) and keeps all but a negligible share of the variance.
Optionally a given direction (the normalised difference of means) is always the first
component, since refusal can live in a direction that carries little variance.
"""

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ._linalg import psd_eigh, symmetrize
from ._tensor_dataclass import TensorDataclass
from ._validate import check_n_components
from .stats import GaussianStats

EigenMethod = Literal["auto", "exact", "randomized"]

_RANDOMIZED_MIN_DIM = 512
_OVERSAMPLE = 16
_POWER_ITERATIONS = 4


def top_eigenvectors(
    matrix: Float[Tensor, "*batch d d"], k: int, *, method: EigenMethod = "auto"
) -> tuple[Float[Tensor, "*batch k"], Float[Tensor, "*batch k d"]]:
    """Top-``k`` eigenpairs of a p.s.d. matrix, largest first, eigenvectors as rows.

    ``method="auto"`` uses the exact ``eigh`` unless ``d >= 512`` and ``k <= d / 4``.
    """
    d = matrix.shape[-1]
    if method == "auto":
        method = "randomized" if d >= _RANDOMIZED_MIN_DIM and 4 * k <= d else "exact"
    if method == "exact":
        eigenvalues, eigenvectors = psd_eigh(matrix)
        top = eigenvalues.flip(-1)[..., :k]
        return top, eigenvectors.flip(-1)[..., :k].mT
    if method != "randomized":
        raise ValueError(f"method must be 'auto', 'exact' or 'randomized', got {method!r}")
    width = min(d, k + _OVERSAMPLE)
    generator = torch.Generator(device=matrix.device).manual_seed(0)
    probe = torch.randn(d, width, generator=generator, device=matrix.device, dtype=matrix.dtype)
    basis = torch.linalg.qr(matrix @ probe).Q
    for _ in range(_POWER_ITERATIONS):
        basis = torch.linalg.qr(matrix @ basis).Q
    small = symmetrize(basis.mT @ matrix @ basis)
    eigenvalues, eigenvectors = psd_eigh(small)
    top_vectors = (basis @ eigenvectors.flip(-1)[..., :k]).mT
    return eigenvalues.flip(-1)[..., :k], top_vectors


@dataclass(frozen=True, eq=False)
class PCABasis(TensorDataclass):
    """An affine ``k``-dimensional subspace of the residual stream.

    Attributes:
        mean: Centre of the coordinates, ``[*batch, d_model]``.
        components: Orthonormal rows spanning the subspace, ``[*batch, k, d_model]``.
        explained_variance: Variance of the fitting data along each component, ``[*batch, k]``.
        total_variance: Total variance of the fitting data, ``[*batch]``.
    """

    mean: Float[Tensor, "*batch d_model"] = field(repr=False)
    components: Float[Tensor, "*batch k d_model"] = field(repr=False)
    explained_variance: Float[Tensor, "*batch k"] = field(repr=False)
    total_variance: Float[Tensor, "*batch"] = field(repr=False)
    EVENT_DIMS: ClassVar[dict[str, int]] = {
        "mean": 1, "components": 2, "explained_variance": 1, "total_variance": 0,
    }  # fmt: skip

    @classmethod
    def from_covariance(
        cls,
        mean: Float[Tensor, "*batch d_model"],
        cov: Float[Tensor, "*batch d_model d_model"],
        n_components: int | None,
        *,
        include: Float[Tensor, "*batch d_model"] | None = None,
        method: EigenMethod = "auto",
    ) -> "PCABasis":
        """Top principal directions of ``cov``; ``include`` (if given) is forced in first.

        Example:
            >>> cov = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
            >>> PCABasis.from_covariance(torch.zeros(3), cov, 2).components.abs()
            tensor([[1., 0., 0.],
                    [0., 1., 0.]])
        """
        d = cov.shape[-1]
        k = check_n_components(n_components, d)
        if include is None:
            _, components = top_eigenvectors(cov, k, method=method)
        else:
            norm = include.norm(dim=-1, keepdim=True)
            if bool((norm == 0).any()):
                raise ValueError(
                    "the direction to include is zero (identical source and target means?); "
                    "use basis='pca' instead"
                )
            unit = include / norm
            complement = torch.eye(d, dtype=cov.dtype, device=cov.device) - (
                unit.unsqueeze(-1) * unit.unsqueeze(-2)
            )
            _, rest = top_eigenvectors(complement @ cov @ complement, k - 1, method=method)
            # Re-orthogonalise: eigenvectors of (near-)zero eigenvalues need not avoid `unit`.
            stacked = torch.cat([unit.unsqueeze(-2), rest], dim=-2)
            q = torch.linalg.qr(stacked.mT).Q.mT
            sign = torch.sign((q[..., :1, :] * unit.unsqueeze(-2)).sum(-1, keepdim=True))
            components = q * torch.where(torch.arange(k, device=q.device)[:, None] == 0, sign, 1)
        explained = torch.einsum("...kd,...de,...ke->...k", components, cov, components)
        total = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
        return cls(mean, components, explained, total)

    @classmethod
    def from_stats(
        cls,
        stats: GaussianStats,
        n_components: int | None,
        *,
        include: Float[Tensor, "*batch d_model"] | None = None,
        method: EigenMethod = "auto",
    ) -> "PCABasis":
        """PCA basis of the rows summarised by ``stats`` (float64)."""
        return cls.from_covariance(
            stats.mean, stats.cov, n_components, include=include, method=method
        )

    @property
    def n_components(self) -> int:
        return self.components.shape[-2]

    @property
    def d_model(self) -> int:
        return self.components.shape[-1]

    @property
    def explained_variance_ratio(self) -> Float[Tensor, "*batch"]:
        """Share of the fitting data's total variance that the subspace keeps."""
        return self.explained_variance.sum(-1) / self.total_variance

    def project(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch k"]:
        """PCA coordinates ``(x - mean) @ components.mT``."""
        return (x - self.mean) @ self.components.mT

    def reconstruct(self, z: Float[Tensor, "*batch k"]) -> Float[Tensor, "*batch d_model"]:
        """Point of the affine subspace with coordinates ``z``."""
        return self.mean + z @ self.components
