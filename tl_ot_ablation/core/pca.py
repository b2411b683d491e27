"""PCA subspaces of activation statistics, batched over layers.

Coordinates are row vectors: ``z = (x - mean) @ components.mT``, ``x ≈ mean + z @ components``.
The top-``k`` eigenvectors come either from a full ``eigh`` of the covariance or, for
``k ≪ d``, from randomised subspace iteration (Halko, Martinsson & Tropp, 2011, alg. 4.4),
which costs O(d²·k) instead of O(d³) and keeps all but a negligible share of the variance.
Optionally a given direction (the normalised difference of means) is always the first
component, since refusal can live in a direction that carries little variance.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import UserInputError
from .linalg import psd_eigh
from .stats import GaussianStats
from .tensor_dataclass import TensorDataclass
from .validate import (
    check_n_components,
    check_orthonormal_rows,
    compute_dtype,
    moments_dtype,
    storage_dtype,
)

EigenMethod = Literal["auto", "exact", "randomized"]

_RANDOMIZED_MIN_DIM = 512
_OVERSAMPLE = 16
_POWER_ITERATIONS = 2  # 99.5 % of the exact top-k variance on activation-like spectra


def _use_randomized(method: EigenMethod, d: int, k: int) -> bool:
    if method not in ("auto", "exact", "randomized"):
        raise UserInputError(f"method must be 'auto', 'exact' or 'randomized', got {method!r}")
    if method == "auto":
        return d >= _RANDOMIZED_MIN_DIM and 4 * k <= d
    return method == "randomized"


def _normalize_columns(y: Tensor) -> Tensor:
    """Well-conditioned basis of the span of ``y``'s columns, for the power iterations.

    One Cholesky-QR step (a fraction of Householder QR's cost); Householder QR where the
    Gram matrix is too ill-conditioned for Cholesky.
    """
    chol, info = torch.linalg.cholesky_ex(y.mT @ y)
    if bool((info == 0).all()):
        return torch.linalg.solve_triangular(chol.mT, y, upper=True, left=False)
    return torch.linalg.qr(y).Q


def _rayleigh_ritz(matrix: Tensor, basis: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` Ritz pairs of ``matrix`` on the span of ``basis``'s columns, in its own dtype.

    The basis is re-orthonormalised and ``Qᵀ M Q`` formed in ``matrix``'s dtype, so the values
    are true Ritz values: by Cauchy interlacing they never exceed the exact eigenvalues (beyond
    that dtype's rounding). A float32 ``Qᵀ M Q`` can overshoot them by ~1e-7 relative, by an
    amount that depends on the BLAS build. Costs one ``d × d`` by ``d × width`` product.
    """
    q = torch.linalg.qr(basis.to(matrix.dtype)).Q
    eigenvalues, eigenvectors = psd_eigh(q.mT @ (matrix @ q))
    top = q @ eigenvectors.flip(-1)[..., :k]
    return eigenvalues.flip(-1)[..., :k], top.mT


def _randomized_top_k(matrix: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenpairs of a p.s.d. matrix by randomised subspace iteration.

    The power iterations run in float32 (they only have to find the subspace); the
    Rayleigh-Ritz step (Halko, Martinsson & Tropp, 2011, algorithms 4.4 and 5.3) runs in the
    matrix's dtype, so the values and orthonormal vectors come back in it.
    """
    d = matrix.shape[-1]
    work = matrix.float()
    width = min(d, k + _OVERSAMPLE)
    generator = torch.Generator(device=matrix.device).manual_seed(0)
    probe = torch.randn(d, width, generator=generator, device=matrix.device)
    basis = work @ probe
    for _ in range(_POWER_ITERATIONS):
        basis = work @ _normalize_columns(basis)
    return _rayleigh_ritz(matrix, basis, k)


def top_eigenvectors(
    matrix: Float[Tensor, "*batch d d"], k: int, *, method: EigenMethod = "auto"
) -> tuple[Float[Tensor, "*batch k"], Float[Tensor, "*batch k d"]]:
    """Top-``k`` eigenpairs of a p.s.d. matrix, largest first, eigenvectors as rows.

    ``method="auto"`` uses the exact ``eigh`` unless ``d >= 512`` and ``k <= d / 4``, where
    randomised subspace iteration keeps ≥ 99 % of the exact top-k variance at a fraction of the
    cost.
    """
    if _use_randomized(method, matrix.shape[-1], k):
        return _randomized_top_k(matrix, k)
    eigenvalues, eigenvectors = psd_eigh(matrix)
    return eigenvalues.flip(-1)[..., :k], eigenvectors.flip(-1)[..., :k].mT


def _unit(direction: Tensor) -> Tensor:
    norm = direction.norm(dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise UserInputError(
            "the direction to include is zero (identical source and target means?); "
            "use basis='pca' instead"
        )
    return direction / norm


def _deflate(cov: Tensor, unit: Tensor) -> Tensor:
    """``P C P`` with ``P = I - u uᵀ``, as a rank-2 update (O(d²) instead of two d³ products)."""
    cu = (cov @ unit.unsqueeze(-1)).squeeze(-1)
    ucu = (unit * cu).sum(-1, keepdim=True).unsqueeze(-1)
    outer = lambda a, b: a.unsqueeze(-1) * b.unsqueeze(-2)  # noqa: E731
    return cov - outer(unit, cu) - outer(cu, unit) + ucu * outer(unit, unit)


def _prepend(unit: Tensor, rest: Tensor) -> Tensor:
    """Orthonormal rows ``[unit, rest...]``, re-orthogonalised by QR and sign-fixed to ``unit``.

    Eigenvectors of (near-)zero eigenvalues need not avoid ``unit``, hence the QR.
    """
    q = torch.linalg.qr(torch.cat([unit.unsqueeze(-2), rest], dim=-2).mT).Q.mT
    sign = torch.sign((q[..., :1, :] * unit.unsqueeze(-2)).sum(-1, keepdim=True))
    first = torch.arange(q.shape[-2], device=q.device)[:, None] == 0
    return q * torch.where(first, sign, torch.ones_like(sign))


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
    EVENT_AXES: ClassVar[dict[str, str]] = {
        "mean": "d_model", "components": "k d_model", "explained_variance": "k",
        "total_variance": "",
    }  # fmt: skip

    def __post_init__(self) -> None:
        self._check_tensor_fields()
        if self.n_components > self.d_model:
            raise UserInputError(
                f"PCABasis.components has k={self.n_components} rows of d_model={self.d_model}; "
                "a subspace has at most d_model orthonormal directions"
            )
        check_orthonormal_rows(self.components, "PCABasis.components")

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
            explained, components = top_eigenvectors(cov, k, method=method)
        else:
            unit = _unit(include)
            _, rest = top_eigenvectors(_deflate(cov, unit), k - 1, method=method)
            components = _prepend(unit, rest)
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
        # Eigenvectors of the scatter matrix are those of the covariance: skip the d × d division.
        basis = cls.from_covariance(
            stats.mean, stats.scatter, n_components, include=include, method=method
        )
        scale = 1 / (stats.count - 1)
        return dataclasses.replace(
            basis,
            explained_variance=basis.explained_variance * scale,
            total_variance=basis.total_variance * scale,
        )

    @classmethod
    def from_rows(
        cls,
        rows: Float[Tensor, "*batch n d_model"],
        n_components: int | None,
        *,
        include: Float[Tensor, "*batch d_model"] | None = None,
        method: EigenMethod = "auto",
    ) -> "PCABasis":
        """PCA basis of ``rows`` through the smaller of the two Gram matrices.

        With ``n ≤ d`` (a few hundred prompts at ``d = 4096``) the top-k comes from the ``n × n``
        matrix ``X Xᵀ`` and the ``d × d`` covariance is never formed; otherwise from ``Xᵀ X``.
        Either is computed in the rows' dtype (float32 for float32 or half-precision rows, float64
        where float32 products of rows at a tiny or huge scale would under- or overflow) and its
        top-k found as ``top_eigenvectors(..., method)`` does. Needs ``n_components < n``.
        """
        n, d = rows.shape[-2], rows.shape[-1]
        k = check_n_components(n_components, d)
        if k >= n:
            raise UserInputError(
                f"the rows route needs n_components < n; got n_components={k}, n={n}. Lower "
                "n_components (CLI: -k), or give more prompts; with estimator 'ridge' or 'oas' "
                "(not 'ledoit_wolf', which needs the rows) you can also fit from the covariance "
                "(GaussianOTMap.fit(..., route='covariance'))"
            )
        out_dtype = compute_dtype(rows.dtype)
        rows = rows.to(moments_dtype(rows))  # float64 where float32 Gram entries would underflow
        mean = rows.mean(-2)
        centred = rows - mean.unsqueeze(-2)
        searched = centred
        if include is not None:
            unit = _unit(include.to(rows.dtype))
            searched = centred - (centred @ unit.unsqueeze(-1)) * unit.unsqueeze(-2)
        k_search = k if include is None else k - 1
        if n <= d:
            values, vectors = top_eigenvectors(searched @ searched.mT, k_search, method=method)
            scale = values.clamp_min(torch.finfo(rows.dtype).tiny).rsqrt().unsqueeze(-1)
            found = torch.linalg.qr((vectors @ searched * scale).mT).Q.mT  # re-orthonormalise
        else:
            _, found = top_eigenvectors(searched.mT @ searched, k_search, method=method)
        components = found if include is None else _prepend(unit, found)
        explained = (centred @ components.mT).square().sum(-2) / (n - 1)
        total = centred.square().sum((-2, -1)) / (n - 1)
        out_dtype = storage_dtype(out_dtype, total, cls.__name__)
        return cls(mean, components, explained, total).to(dtype=out_dtype)

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
        """PCA coordinates ``(x - mean) @ components.mT``.

        A basis batched over ``[L]`` takes ``[L, n, d_model]``: basis ``i`` projects ``x[i]``.
        """
        rows = self._as_rows(x, self.d_model)
        z = (rows - self.mean.unsqueeze(-2)) @ self.components.mT
        return z.reshape(*x.shape[:-1], self.n_components)

    def reconstruct(self, z: Float[Tensor, "*batch k"]) -> Float[Tensor, "*batch d_model"]:
        """Point of the affine subspace with coordinates ``z``."""
        rows = self._as_rows(z, self.n_components)
        x = self.mean.unsqueeze(-2) + rows @ self.components
        return x.reshape(*z.shape[:-1], self.d_model)
