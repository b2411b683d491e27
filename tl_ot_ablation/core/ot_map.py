"""The closed-form Gaussian optimal-transport map, applied inside a PCA subspace.

Conventions (row vectors): PCA coordinates ``z = (x - μ) @ Vᵀ`` for a basis ``V`` of ``k``
orthonormal rows. With source (harmful) and target (harmless) Gaussians ``N(m_s, S)`` and
``N(m_t, C)`` fitted in those coordinates, the 2-Wasserstein-optimal map is

    T(z) = m_t + (z - m_s) @ A,    A = S^{-1/2} (S^{1/2} C S^{1/2})^{1/2} S^{-1/2}

(Knott & Smith, 1984; Peyré & Cuturi, 2019, remark 2.29); ``A`` is symmetric, so ``Aᵀ = A``.
The edit is added back in the residual stream, ``x ↦ x + s·(T(z) - z) @ V``, so the orthogonal
complement of the subspace is untouched and ``strength`` ``s`` moves along McCann's displacement
interpolation (0: identity, 1: the full map). Covariances get a relative ridge,
``S + reg·(tr S / k)·I``, because with a few hundred prompts ``n < k`` is normal and ``S`` is
singular. The map is fitted for all layers at once (leading ``*batch`` dims, one batched
``eigh``).

POT's ``ot.gaussian.bures_wasserstein_mapping`` computes the same ``A`` in the full space for
one pair of covariances in numpy; it is our test oracle. It does not batch over layers, work in
a subspace of a torch activation, or fuse the map into the two small matmuls a hook needs, so
that part is written here.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from . import gate as gating
from .degeneracy import (
    IdenticalClassesError,
    check_distinct_classes,
    identical_classes,
    warn_if_degenerate,
)
from .diagnostics import OTDiagnostics
from .errors import UserInputError
from .linalg import bures_distance_squared, bures_ot_matrix, condition_number
from .ot_apply import TransportApplication
from .ot_fit import (
    DEFAULT_REG,
    BasisChoice,
    Part,
    Route,
    basis_include,
    check_map_options,
    fit_basis,
    non_finite_fit_error,
    total_variance,
    work_dtype,
)
from .pca import EigenMethod, PCABasis
from .shrinkage import Estimator, estimate_cov
from .stats import GaussianStats, check_stats_pair
from .validate import (
    check_n_components,
    check_reg,
    check_rows,
    check_same_width,
    check_symmetric_psd,
    compute_dtype,
    storage_dtype,
)

__all__ = ["GaussianOTMap", "IdenticalClassesError", "MeanShift", "OTDiagnostics"]


@dataclass(frozen=True, eq=False)
class GaussianOTMap(TransportApplication):
    """Closed-form 2-Wasserstein map between Gaussian fits of two activation sets, in a subspace.

    See the module docstring for the formula. Call it on ``[*batch, d_model]`` activations; a map
    fitted for ``L`` layers at once has batch shape ``[L]``, applies to ``[L, ..., d_model]``
    (layer ``i``'s map to ``x[i]``), and ``maps[i]`` is layer ``i``'s map.

    Attributes:
        basis: PCA subspace the map acts in.
        mean_source: Source mean in PCA coordinates, ``[*batch, k]``.
        mean_target: Target mean in PCA coordinates, ``[*batch, k]``.
        cov_source: Regularised source covariance in PCA coordinates, ``[*batch, k, k]``.
        cov_target: Regularised target covariance in PCA coordinates, ``[*batch, k, k]``.
        matrix: Symmetric p.s.d. transport matrix ``A``, ``[*batch, k, k]``.
        strength: 0 leaves activations unchanged, 1 applies the full map.
        reg: Relative ridge that was added to both covariances.
        basis_method: How the subspace was chosen ("pca", "pca+mean_diff" or "given").
        estimator: Covariance estimator: "ridge" (sample covariance + ``reg``), "oas" or
            "ledoit_wolf" (shrinkage towards ``μ·I``, then ``reg`` on top).
        gate: "none"; "posterior": scale the edit by ``P(harmful | z)`` under the two
            Gaussians; "hard": apply it only where that posterior exceeds 1/2 (see ``gate``).
        gate_prior: Prior probability of harmful in the gate.
        preserve_norm: Rescale each edited activation to its original norm.
        part: "full" (the map), or "covariance" (its linear part alone, without the
            translation ``m_t − m_s``; ``MeanShift`` is the translation alone).

    Example:
        >>> src, tgt = torch.randn(200, 8) + 2, torch.randn(300, 8) * 0.5
        >>> ot = GaussianOTMap.fit(src, tgt, n_components=4)
        >>> ot(src).shape, ot.with_strength(0.0)(src).equal(src)
        (torch.Size([200, 8]), True)
    """

    basis: PCABasis
    mean_source: Float[Tensor, "*batch k"] = field(repr=False)
    mean_target: Float[Tensor, "*batch k"] = field(repr=False)
    cov_source: Float[Tensor, "*batch k k"] = field(repr=False)
    cov_target: Float[Tensor, "*batch k k"] = field(repr=False)
    matrix: Float[Tensor, "*batch k k"] = field(repr=False)
    strength: float = 1.0
    reg: float = DEFAULT_REG
    basis_method: str = "pca"
    estimator: str = "ridge"
    gate: str = "none"
    gate_prior: float = 0.5
    preserve_norm: bool = False
    part: str = "full"

    EVENT_AXES: ClassVar[dict[str, str]] = {
        "mean_source": "k", "mean_target": "k", "cov_source": "k k", "cov_target": "k k",
        "matrix": "k k",
    }  # fmt: skip
    #: Whether the linear part depends on the covariances (a degenerate one is then warned of).
    _USES_COVARIANCES: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()  # finite tensors, one batch shape and k (basis included)
        check_map_options(self.estimator, self.gate, self.gate_prior, self.part)
        check_reg(self.reg)
        for name in ("cov_source", "cov_target", "matrix"):
            check_symmetric_psd(getattr(self, name), f"{type(self).__name__}.{name}")

    @staticmethod
    def _linear_part(cov_source: Tensor, cov_target: Tensor) -> Tensor:
        return bures_ot_matrix(cov_source, cov_target)

    def with_options(
        self,
        *,
        gate: gating.GateKind | None = None,
        gate_prior: float | None = None,
        preserve_norm: bool | None = None,
        part: Part | None = None,
    ) -> "GaussianOTMap":
        """Copy with other application options (the fitted Gaussians and ``A`` are kept)."""
        changes: dict[str, Any] = {
            "gate": gate,
            "gate_prior": gate_prior,
            "preserve_norm": preserve_norm,
            "part": part,
        }
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def fit(
        cls,
        source: Float[Tensor, "*batch n d_model"],
        target: Float[Tensor, "*batch m d_model"],
        *,
        n_components: int | None,
        reg: float = DEFAULT_REG,
        basis: "BasisChoice | PCABasis" = "pca",
        eigen_method: EigenMethod = "auto",
        route: Route = "auto",
        estimator: Estimator = "ridge",
    ) -> "GaussianOTMap":
        """Fit the map that moves ``source`` rows (harmful) onto ``target`` rows (harmless).

        Args:
            source: Activations to move, ``[*batch, n, d_model]`` (``*batch``: e.g. layers).
            target: Activations whose distribution to reach, ``[*batch, m, d_model]``.
            n_components: Subspace size ``k``; ``None`` (or ``d_model``) for the full space.
            reg: Relative ridge on both covariances (``0`` for none).
            basis: "pca" (top-k directions of the pooled data), "pca+mean_diff" (the normalised
                difference of means first, then the top-(k-1) of the rest), or a ``PCABasis``.
            eigen_method: How to find the top-k directions ("auto", "exact", "randomized").
            route: "covariance" streams the rows into ``d × d`` float64 statistics
                (``GaussianStats``); "rows" finds the PCA basis from the pooled rows' smaller
                Gram matrix (``(n+m) × (n+m)`` when ``n + m ≤ d``: no ``d × d`` matrix at all),
                then the moments of the ``k``-dim coordinates. "auto" takes "rows" exactly
                when ``k < n + m ≤ d`` (or when ``estimator="ledoit_wolf"``, which needs rows).
            estimator: "ridge", "oas" or "ledoit_wolf" (see the class attributes).

        Returns:
            The fitted map, stored in float64 if the inputs are float64, else float32 (float64,
            with a warning, where the activations' scale puts their variances outside
            float32's range; the fit itself then runs in float64 too).

        Raises:
            ValueError: on mismatched shapes, too few rows, non-finite or integer inputs, an
                out-of-range ``n_components``, or a fit that produced non-finite values.
            IdenticalClassesError: (a ``ValueError``) if both classes have the same mean and
                covariance up to rounding (the same prompts?): the map would be the identity.

        Warns:
            UserWarning: if one class has (near) zero variance in the subspace (all its rows
                equal?), which makes ``A`` degenerate, or if the map is stored in float64.
        """
        source = check_rows(source, "source")
        target = check_rows(target, "target")
        check_same_width(source, target)
        d = source.shape[-1]
        k = check_n_components(n_components, d)
        n_pooled = source.shape[-2] + target.shape[-2]
        dtype = compute_dtype(torch.promote_types(source.dtype, target.dtype))
        if route == "auto":
            gram_is_smaller = k < n_pooled <= d and not isinstance(basis, PCABasis)
            route = "rows" if gram_is_smaller or estimator == "ledoit_wolf" else "covariance"
        if route == "covariance":
            return cls.from_stats(
                GaussianStats.from_rows(source),
                GaussianStats.from_rows(target),
                n_components=k,
                reg=reg,
                basis=basis,
                eigen_method=eigen_method,
                dtype=dtype,
                estimator=estimator,
            )
        if route != "rows":
            raise UserInputError(f"route must be 'auto', 'covariance' or 'rows', got {route!r}")
        reg = check_reg(reg)
        work = work_dtype(dtype, source, target)
        source, target = source.to(work), target.to(work)
        if isinstance(basis, PCABasis):
            pca = basis.to(dtype=work)
        else:
            include = basis_include(basis, source.mean(-2), target.mean(-2))
            pooled = torch.cat([source, target], dim=-2)
            pca = PCABasis.from_rows(pooled, k, include=include, method=eigen_method)
        coords_source, coords_target = pca.project(source), pca.project(target)
        return cls._from_subspace_stats(
            pca,
            GaussianStats.from_rows(coords_source),
            GaussianStats.from_rows(coords_target),
            reg=reg,
            basis_method=basis if isinstance(basis, str) else "given",
            dtype=dtype,
            estimator=estimator,
            rows=(coords_source, coords_target),
        )

    @classmethod
    def from_stats(
        cls,
        source_stats: GaussianStats,
        target_stats: GaussianStats,
        *,
        n_components: int | None,
        reg: float = DEFAULT_REG,
        basis: "BasisChoice | PCABasis" = "pca",
        eigen_method: EigenMethod = "auto",
        dtype: torch.dtype = torch.float32,
        estimator: Estimator = "ridge",
    ) -> "GaussianOTMap":
        """Fit from streamed statistics (same arguments as ``fit``; ``estimator`` "ridge" or
        "oas"); computed in float64."""
        check_stats_pair(source_stats, target_stats)
        check_n_components(n_components, source_stats.d)
        reg = check_reg(reg)
        for stats in (source_stats, target_stats):
            # |S_ij| <= sqrt(S_ii S_jj): an overflow anywhere shows on the diagonal (O(d) check).
            if not bool(torch.isfinite(stats.scatter_diagonal).all()):
                raise non_finite_fit_error(cls, reg)
        try:
            pca = fit_basis(source_stats, target_stats, n_components, basis, eigen_method)
        except torch.linalg.LinAlgError as err:
            raise non_finite_fit_error(cls, reg) from err
        return cls._from_subspace_stats(
            pca,
            source_stats.project(pca.components, pca.mean),
            target_stats.project(pca.components, pca.mean),
            reg=reg,
            basis_method=basis if isinstance(basis, str) else "given",
            dtype=dtype,
            estimator=estimator,
        )

    @classmethod
    def _from_subspace_stats(
        cls,
        pca: PCABasis,
        source: GaussianStats,
        target: GaussianStats,
        *,
        reg: float,
        basis_method: str,
        dtype: torch.dtype,
        estimator: str = "ridge",
        rows: tuple[Tensor, Tensor] | None = None,
    ) -> "GaussianOTMap":
        """The map from the Gaussians' moments in PCA coordinates (computed in float64), stored
        in ``dtype`` where that holds its covariances (see ``storage_dtype``)."""
        spread = (total_variance(source) + total_variance(target)) / 2
        check_distinct_classes(
            identical_classes(
                (source.mean, target.mean),
                spread,
                covs=(source.cov, target.cov) if cls._USES_COVARIANCES else None,
                width=pca.d_model,
                offset=pca.total_variance.double(),
                dtype=dtype,
            ),
            cls.__name__,
            "means and covariances" if cls._USES_COVARIANCES else "means",
            f"the fitted map would change nothing (W2 = 0 in the {pca.n_components}-dimensional "
            "PCA subspace)"
            if cls._USES_COVARIANCES
            else "the mean shift would change nothing (GaussianOTMap also moves the covariances)",
        )
        if cls._USES_COVARIANCES:
            warn_if_degenerate(
                {"source": total_variance(source), "target": total_variance(target)},
                cls.__name__,
                "`reg` and `estimator` shrink towards each class's own variance, so neither "
                "fixes this; MeanShift (A = I) does not use the covariances",
            )
        cov_s = estimate_cov(source, None if rows is None else rows[0], estimator, reg)
        cov_t = estimate_cov(target, None if rows is None else rows[1], estimator, reg)
        try:
            matrix = cls._linear_part(cov_s, cov_t)
        except torch.linalg.LinAlgError as err:
            raise non_finite_fit_error(cls, reg) from err
        if not bool(torch.isfinite(matrix).all()):
            raise non_finite_fit_error(cls, reg)
        fitted = cls(
            basis=pca.to(dtype=torch.float64),
            mean_source=source.mean,
            mean_target=target.mean,
            cov_source=cov_s,
            cov_target=cov_t,
            matrix=matrix,
            reg=reg,
            basis_method=basis_method,
            estimator=estimator,
        )
        diagonals = torch.cat([torch.diagonal(c, dim1=-2, dim2=-1) for c in (cov_s, cov_t)], -1)
        return fitted.to(dtype=storage_dtype(dtype, diagonals, cls.__name__))

    def inverse(self) -> "GaussianOTMap":
        """The map from target back to source (same subspace; e.g. to induce refusal)."""
        matrix = self._linear_part(
            self.cov_target.to(torch.float64), self.cov_source.to(torch.float64)
        )
        return dataclasses.replace(
            self,
            mean_source=self.mean_target,
            mean_target=self.mean_source,
            cov_source=self.cov_target,
            cov_target=self.cov_source,
            matrix=matrix.to(self.matrix.dtype),
        )

    def diagnostics(self) -> OTDiagnostics:
        """Distances, variance kept, conditioning and exactness of the fit, per layer."""
        f64 = self.to(dtype=torch.float64)
        a, s, c = f64.matrix, f64.cov_source, f64.cov_target
        eig_a = torch.linalg.eigvalsh(a)
        residual = torch.linalg.matrix_norm(a @ s @ a - c) / torch.linalg.matrix_norm(c)
        return OTDiagnostics(
            w2_mean=(f64.mean_source - f64.mean_target).square().sum(-1),
            w2_bures=bures_distance_squared(s, c),
            explained_variance_ratio=f64.basis.explained_variance_ratio,
            condition_source=condition_number(s),
            condition_target=condition_number(c),
            max_stretch=eig_a[..., -1],
            min_stretch=eig_a[..., 0],
            transport_residual=residual,
        )


@dataclass(frozen=True, eq=False)
class MeanShift(GaussianOTMap):
    """Transport with the identity as linear part: translate the subspace mean, ``A = I``.

    The ablation that shows what the covariance part of ``GaussianOTMap`` adds. Its fields are
    those of ``GaussianOTMap`` (with ``matrix`` the identity), so every tool treats both alike.
    """

    _USES_COVARIANCES: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        k = self.matrix.shape[-1]
        eye = torch.eye(k, dtype=self.matrix.dtype, device=self.matrix.device)
        if not torch.equal(self.matrix, eye.expand(self.matrix.shape)):
            raise UserInputError(
                "a MeanShift's matrix must be the identity (A = I); this one is not, so it is "
                "a GaussianOTMap's matrix: load or build it as a GaussianOTMap"
            )

    @staticmethod
    def _linear_part(cov_source: Tensor, cov_target: Tensor) -> Tensor:
        k = cov_source.shape[-1]
        eye = torch.eye(k, dtype=cov_source.dtype, device=cov_source.device)
        return eye.expand(cov_source.shape).clone()
