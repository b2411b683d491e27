"""Scores that flag activations moved away from the clean harmful/harmless distributions.

The safeguard the OT-ablation paper proposes: a model provider knows how clean activations of
harmful and harmless prompts are distributed at a layer and flags a forward pass whose
activations do not fit. Both classes are summarised by float64 ``GaussianStats``; the pooled
top-``k`` PCA subspace ``V`` (``z = (x − μ) @ Vᵀ``) splits every activation into subspace
coordinates ``z`` and a complement residual ``r = (x − μ) − z @ V``. Every score is per row and
higher means more anomalous.

``likelihood``: ``−log p(x)`` under the clean two-class mixture
``p = π·N_harmful + (1 − π)·N_harmless`` (``π = prior``). Each class is a Gaussian on the
whole residual stream that factorises over the two orthogonal parts (probabilistic PCA,
Tipping & Bishop, 1999): in the subspace ``N(z; m_c, S_c)`` with the covariance shrunk (OAS by
default, ``core.shrinkage``) plus the relative ridge ``reg`` (``shrinkage.estimate_cov``); in the
complement an *isotropic* ``N(r; a_c, σ_c² I_{d−k})``, ``a_c`` the complement part of the class
mean and ``σ_c²`` the class's complement variance per dimension, ``(tr Σ_c − tr V Σ_c Vᵀ) /
(d − k)``, plus ``reg · tr Σ_c / d``. So ``d = 1536`` needs a ``k × k`` Cholesky factor and one
number per class, never a ``d × d`` inverse. Isotropy rather than a diagonal: the complement is
not spanned by coordinate axes, so a diagonal model of it is not even well defined, and the
average discarded eigenvalue is the maximum-likelihood noise variance of that model.

``disagreement``: the harmfulness verdict of the complement minus that of the subspace. Each
verdict is a linear (shared-covariance) discriminant scaled so the clean class means sit at
``+½`` (harmful) and ``−½`` (harmless):

    v_sub(x)  = (z − (m_h + m_b)/2) · W⁻¹(m_h − m_b) / Δ_s²,   Δ_s² = (m_h − m_b)ᵀ W⁻¹ (m_h − m_b)
    v_perp(x) = ((x − μ) − (a_h + a_b)/2) · (a_h − a_b) / ‖a_h − a_b‖²

with ``W`` the pooled within-class covariance in the subspace (the count-weighted mean of the
two shrunk class covariances). The complement read uses the complement mean difference
``a_h − a_b`` as its direction (the discriminant under the isotropic complement model). A
verdict is the log-odds divided by its clean class gap ``Δ²`` (the log-odds is ``Δ² v +
log(π/(1 − π))``, ``log_odds``), so ``disagreement = v_perp − v_sub`` averages 0 on clean
traffic of *either* class, while an edit confined to the subspace that makes a harmful
activation look harmless there (``v_sub ≈ −½``, ``v_perp ≈ +½``) averages about ``+1``. The raw
log-odds difference would not work: the subspace read, whose ``Δ_s`` is many times the
complement's, would dominate it, and clean harmless traffic would score higher than clean
harmful. Its power is bounded by the complement's separation ``Δ_p = ‖a_h − a_b‖ / τ`` (``τ²``
the pooled within-class variance along ``a_h − a_b``): a layer whose complement carries no
harmfulness signal cannot see a subspace edit this way. With few prompts and ``d − k`` large,
``a_h − a_b`` is partly sampling noise, so held-out separation is below the fitted ``Δ_p``.

The supervised reference, ``LinearProbe``, is in ``core.probe``.
"""

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from .errors import UserInputError
from .gate import gaussian_log_density
from .ot_fit import DEFAULT_REG
from .pca import EigenMethod, PCABasis
from .shrinkage import estimate_cov
from .stats import GaussianStats, check_stats_pair
from .tensor_dataclass import TensorDataclass
from .validate import (
    check_finite,
    check_float_tensor,
    check_n_components,
    check_reg,
    check_rows,
    check_same_width,
)

MonitorEstimator = Literal["oas", "ridge"]
SCORES = ("likelihood", "disagreement", "probe")
"""Every score's name: the keys of ``scores`` (and ``probe`` from ``core.probe.LinearProbe``)."""

__all__ = ["SCORES", "GaussianMonitor"]


def _check_stats(harmful: GaussianStats, harmless: GaussianStats) -> None:
    check_stats_pair(harmful, harmless, ("harmful", "harmless"))
    for name, stats in (("harmful", harmful), ("harmless", harmless)):
        # |S_ij| <= sqrt(S_ii S_jj): any non-finite entry shows on the diagonal (O(d) check).
        if not bool(torch.isfinite(stats.scatter_diagonal).all()):
            raise UserInputError(
                f"the {name} statistics hold NaN or inf; check the activations you collected "
                "(e.g. fp16 overflow, or pad positions that were not masked out)"
            )


def _trace(matrix: Tensor) -> Tensor:
    return torch.diagonal(matrix, dim1=-2, dim2=-1).sum(-1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator``, 0 where the denominator is 0 (no direction to read)."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1), 0)


def _cholesky(cov: Tensor, what: str, reg: float) -> Tensor:
    chol, info = torch.linalg.cholesky_ex(cov)
    if not bool((info == 0).all()):
        raise UserInputError(
            f"the {what} covariance in the subspace is not positive definite; increase `reg` "
            f"(currently {reg:g}) or lower `n_components`"
        )
    return chol


def _complement_separation(
    harmful: GaussianStats, harmless: GaussianStats, gap: Tensor, reg: float
) -> Tensor:
    """``Δ_p = ‖gap‖ / τ``, ``τ²`` the pooled within-class variance along ``gap`` (exact from
    the scatter matrices, O(d²)) plus ``reg`` times the average within-class variance."""
    dof = harmful.count + harmless.count - 2
    scatter = harmful.scatter + harmless.scatter
    norm_sq = _dot(gap, gap)
    spread = _dot(gap, (scatter @ gap.unsqueeze(-1)).squeeze(-1))
    tau_sq = _safe_divide(spread, norm_sq) / dof + reg * _trace(scatter) / dof / harmful.d
    return _safe_divide(norm_sq.sqrt(), tau_sq.sqrt())


@dataclass(frozen=True, eq=False)
class GaussianMonitor(TensorDataclass):
    """Clean harmful/harmless Gaussians at a layer, scoring how anomalous activations look.

    See the module docstring for the scores. Stored and computed in float64: the likelihood is
    a difference of log-densities of hundreds of nats at ``d = 1536``, and scoring costs one
    ``[n, d] × [d, k]`` product per row, negligible next to the forward pass. A monitor fitted
    for ``L`` layers at once has batch shape ``[L]`` and scores ``[L, ..., d_model]``.

    Attributes:
        basis: Pooled PCA subspace of the clean activations of both classes.
        mean_harmful: Harmful mean in subspace coordinates, ``[*batch, k]``.
        mean_harmless: Harmless mean in subspace coordinates, ``[*batch, k]``.
        chol_harmful: Cholesky factor of the shrunk harmful subspace covariance, ``[*batch,
            k, k]``.
        chol_harmless: Same for harmless.
        offset_harmful: Complement part ``a_h`` of the harmful mean minus ``basis.mean``,
            ``[*batch, d_model]``.
        offset_harmless: Same for harmless, ``a_b``.
        var_harmful: Regularised isotropic complement variance ``σ_h²``, ``[*batch]``.
        var_harmless: Same for harmless, ``σ_b²``.
        subspace_direction: ``W⁻¹(m_h − m_b) / Δ_s²``, the subspace verdict's weights,
            ``[*batch, k]``.
        separation_subspace: ``Δ_s``, Mahalanobis distance of the class means in the subspace.
        separation_complement: ``Δ_p = ‖a_h − a_b‖ / τ`` along the complement read.
        prior: Prior probability of harmful (mixture weight, and log-odds offset).
        reg: Relative ridge on the covariances.
        estimator: Subspace covariance estimator, "oas" or "ridge" (sample covariance).

    Example:
        >>> harmful, harmless = torch.randn(200, 8) + 1, torch.randn(300, 8)
        >>> monitor = GaussianMonitor.fit(harmful, harmless, n_components=3)
        >>> sorted(monitor.scores(harmful[:5]))
        ['disagreement', 'likelihood']
    """

    basis: PCABasis
    mean_harmful: Float[Tensor, "*batch k"] = field(repr=False)
    mean_harmless: Float[Tensor, "*batch k"] = field(repr=False)
    chol_harmful: Float[Tensor, "*batch k k"] = field(repr=False)
    chol_harmless: Float[Tensor, "*batch k k"] = field(repr=False)
    offset_harmful: Float[Tensor, "*batch d_model"] = field(repr=False)
    offset_harmless: Float[Tensor, "*batch d_model"] = field(repr=False)
    var_harmful: Float[Tensor, "*batch"] = field(repr=False)
    var_harmless: Float[Tensor, "*batch"] = field(repr=False)
    subspace_direction: Float[Tensor, "*batch k"] = field(repr=False)
    separation_subspace: Float[Tensor, "*batch"] = field(repr=False)
    separation_complement: Float[Tensor, "*batch"] = field(repr=False)
    prior: float = 0.5
    reg: float = DEFAULT_REG
    estimator: str = "oas"

    EVENT_DIMS: ClassVar[dict[str, int]] = {
        "mean_harmful": 1, "mean_harmless": 1, "chol_harmful": 2, "chol_harmless": 2,
        "offset_harmful": 1, "offset_harmless": 1, "var_harmful": 0, "var_harmless": 0,
        "subspace_direction": 1, "separation_subspace": 0, "separation_complement": 0,
    }  # fmt: skip

    def __post_init__(self) -> None:
        if not (isinstance(self.prior, int | float) and 0 < self.prior < 1):
            raise UserInputError(
                f"prior must be a probability strictly between 0 and 1, got {self.prior!r}"
            )
        if self.estimator not in ("oas", "ridge"):
            raise UserInputError(f"estimator must be 'oas' or 'ridge', got {self.estimator!r}")

    @classmethod
    def fit(
        cls,
        harmful: Float[Tensor, "*batch n d_model"],
        harmless: Float[Tensor, "*batch m d_model"],
        *,
        n_components: int,
        reg: float = DEFAULT_REG,
        estimator: MonitorEstimator = "oas",
        prior: float = 0.5,
        eigen_method: EigenMethod = "auto",
    ) -> "GaussianMonitor":
        """Fit from clean activation rows of both classes (see ``from_stats``)."""
        harmful, harmless = check_rows(harmful, "harmful"), check_rows(harmless, "harmless")
        check_same_width(harmful, harmless, ("harmful", "harmless"))
        return cls.from_stats(
            GaussianStats.from_rows(harmful),
            GaussianStats.from_rows(harmless),
            n_components=n_components,
            reg=reg,
            estimator=estimator,
            prior=prior,
            eigen_method=eigen_method,
        )

    @classmethod
    def from_stats(
        cls,
        harmful: GaussianStats,
        harmless: GaussianStats,
        *,
        n_components: int,
        reg: float = DEFAULT_REG,
        estimator: MonitorEstimator = "oas",
        prior: float = 0.5,
        eigen_method: EigenMethod = "auto",
    ) -> "GaussianMonitor":
        """Fit from streamed statistics of clean (unmodified) harmful and harmless activations.

        Args:
            harmful: Statistics of clean harmful activations (``[*batch]`` e.g. layers).
            harmless: Statistics of clean harmless activations, same shape.
            n_components: Subspace size ``k``, ``1 <= k < d_model`` (the complement must not
                be empty: it carries the second verdict and the isotropic part).
            reg: Relative ridge on the subspace covariances (after shrinkage) and on the
                complement variances (``reg · tr Σ_c / d``).
            estimator: "oas" (shrinkage that needs only statistics) or "ridge" (the sample
                covariance plus ``reg``).
            prior: Prior probability of harmful.
            eigen_method: How to find the top-k directions (``PCABasis.from_stats``).

        Raises:
            ValueError: on mismatched shapes, fewer than 2 rows in a class, non-finite
                statistics, an out-of-range ``n_components``, a class whose activations are
                all equal, or a covariance that is not positive definite.
        """
        _check_stats(harmful, harmless)
        d = harmful.d
        k = check_n_components(n_components, d)
        if k >= d:
            raise UserInputError(
                f"n_components must be below d_model={d} so that the complement is not empty, "
                f"got {k}"
            )
        reg = check_reg(reg)
        if estimator not in ("oas", "ridge"):
            raise UserInputError(f"estimator must be 'oas' or 'ridge', got {estimator!r}")
        trace_h, trace_b = _trace(harmful.cov), _trace(harmless.cov)
        for name, trace in (("harmful", trace_h), ("harmless", trace_b)):
            if bool((trace <= 0).any()):
                raise UserInputError(
                    f"the {name} activations have zero variance (all rows equal?); check the "
                    "positions and prompts they were collected at"
                )
        basis = PCABasis.from_stats(harmful.merge(harmless), k, method=eigen_method)
        v, mu = basis.components, basis.mean
        sub_h, sub_b = harmful.project(v, mu), harmless.project(v, mu)
        cov_h = estimate_cov(sub_h, None, estimator, reg)
        cov_b = estimate_cov(sub_b, None, estimator, reg)
        chol_h = _cholesky(cov_h, "harmful", reg)
        chol_b = _cholesky(cov_b, "harmless", reg)

        def complement(mean: Tensor) -> Tensor:
            centred = mean - mu
            return centred - ((centred.unsqueeze(-2) @ v.mT) @ v).squeeze(-2)

        offset_h, offset_b = complement(harmful.mean), complement(harmless.mean)
        # Rounding can leave tr Σ − tr VΣVᵀ a hair below 0 when the complement is empty of data.
        var_h = ((trace_h - _trace(sub_h.cov)) / (d - k)).clamp_min(0) + reg * trace_h / d
        var_b = ((trace_b - _trace(sub_b.cov)) / (d - k)).clamp_min(0) + reg * trace_b / d
        if bool((var_h <= 0).any() or (var_b <= 0).any()):
            raise UserInputError(
                "the activations have no variance outside the top-k subspace, so the complement "
                f"density is degenerate; set `reg` > 0 (currently {reg:g}) or lower n_components"
            )

        n_h, n_b = harmful.count, harmless.count
        within = ((n_h - 1) * cov_h + (n_b - 1) * cov_b) / (n_h + n_b - 2)
        gap = sub_h.mean - sub_b.mean
        solved = torch.cholesky_solve(gap.unsqueeze(-1), _cholesky(within, "within-class", reg))
        solved = solved.squeeze(-1)
        separation_sub_sq = _dot(gap, solved)
        direction = _safe_divide(solved, separation_sub_sq.unsqueeze(-1))

        return cls(
            basis=basis.to(dtype=torch.float64),
            mean_harmful=sub_h.mean,
            mean_harmless=sub_b.mean,
            chol_harmful=chol_h,
            chol_harmless=chol_b,
            offset_harmful=offset_h,
            offset_harmless=offset_b,
            var_harmful=var_h,
            var_harmless=var_b,
            subspace_direction=direction,
            separation_subspace=separation_sub_sq.sqrt(),
            separation_complement=_complement_separation(
                harmful, harmless, offset_h - offset_b, reg
            ),
            prior=float(prior),
            reg=reg,
            estimator=estimator,
        )

    @property
    def n_components(self) -> int:
        """Subspace size ``k``."""
        return self.basis.n_components

    @property
    def d_model(self) -> int:
        """Width of the activations it scores."""
        return self.basis.d_model

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, "GaussianMonitor"]:
        """``(centred, z, r)`` rows ``[*batch, m, ·]`` in float64, and the float64 monitor."""
        check_float_tensor(x, "x")
        check_finite(x, "x")
        monitor = self.to(device=x.device, dtype=torch.float64)
        rows = self._as_rows(x.to(torch.float64), self.d_model)
        if not self.batch_shape:
            rows = rows.reshape(-1, self.d_model)
        centred = rows - monitor.basis.mean.unsqueeze(-2)
        v = monitor.basis.components
        z = centred @ v.mT
        return centred, z, centred - z @ v, monitor

    def class_log_densities(
        self, x: Float[Tensor, "*batch d_model"]
    ) -> tuple[Float[Tensor, " *batch"], Float[Tensor, " *batch"]]:
        """``(log N_harmful(x), log N_harmless(x))`` under the clean class Gaussians."""
        _, z, r, m = self._parts(x)
        out = []
        for mean, chol, offset, var in (
            (m.mean_harmful, m.chol_harmful, m.offset_harmful, m.var_harmful),
            (m.mean_harmless, m.chol_harmless, m.offset_harmless, m.var_harmless),
        ):
            inside = gaussian_log_density(z, mean, chol)
            dims = self.d_model - self.n_components
            var = var.unsqueeze(-1)
            residual = (r - offset.unsqueeze(-2)).square().sum(-1)
            outside = -0.5 * residual / var - 0.5 * dims * torch.log(2 * math.pi * var)
            out.append((inside + outside).reshape(x.shape[:-1]))
        return out[0], out[1]

    def negative_log_likelihood(
        self, x: Float[Tensor, "*batch d_model"]
    ) -> Float[Tensor, " *batch"]:
        """The ``likelihood`` score: ``−log(π N_harmful(x) + (1 − π) N_harmless(x))``, nats."""
        harmful, harmless = self.class_log_densities(x)
        weighted = torch.stack([harmful + math.log(self.prior), harmless + math.log1p(-self.prior)])
        return -torch.logsumexp(weighted, dim=0)

    def verdicts(
        self, x: Float[Tensor, "*batch d_model"]
    ) -> tuple[Float[Tensor, " *batch"], Float[Tensor, " *batch"]]:
        """``(v_sub, v_perp)``: each read's position between the clean class means
        (harmless ``−½``, harmful ``+½``; see the module docstring)."""
        centred, z, _, m = self._parts(x)
        midpoint = (m.mean_harmful + m.mean_harmless) / 2
        v_sub = _dot(z - midpoint.unsqueeze(-2), m.subspace_direction.unsqueeze(-2))
        gap = m.offset_harmful - m.offset_harmless
        mid_perp = (m.offset_harmful + m.offset_harmless) / 2
        read = _dot(centred - mid_perp.unsqueeze(-2), gap.unsqueeze(-2))
        v_perp = _safe_divide(read, _dot(gap, gap).unsqueeze(-1))
        return v_sub.reshape(x.shape[:-1]), v_perp.reshape(x.shape[:-1])

    def log_odds(
        self, x: Float[Tensor, "*batch d_model"]
    ) -> tuple[Float[Tensor, " *batch"], Float[Tensor, " *batch"]]:
        """Harmful log-odds read from the subspace and from the complement:
        ``Δ² · verdict + log(π / (1 − π))``."""
        v_sub, v_perp = self.verdicts(x)
        prior = math.log(self.prior / (1 - self.prior))
        shape = (*self.batch_shape, *[1] * (v_sub.ndim - len(self.batch_shape)))
        sep_sub = self.separation_subspace.to(v_sub).reshape(shape)
        sep_perp = self.separation_complement.to(v_sub).reshape(shape)
        return sep_sub.square() * v_sub + prior, sep_perp.square() * v_perp + prior

    def disagreement(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, " *batch"]:
        """The ``disagreement`` score ``v_perp − v_sub``: ~0 on clean traffic, ~+1 where a
        subspace edit made a harmful activation look harmless."""
        v_sub, v_perp = self.verdicts(x)
        return v_perp - v_sub

    def scores(self, x: Float[Tensor, "*batch d_model"]) -> dict[str, Float[Tensor, " *batch"]]:
        """``{"likelihood": ..., "disagreement": ...}`` per row, float64 (higher: more
        anomalous)."""
        return {"likelihood": self.negative_log_likelihood(x), "disagreement": self.disagreement(x)}
