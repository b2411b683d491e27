"""Baselines in the same ``Tensor -> Tensor`` contract as ``GaussianOTMap``.

- ``DirectionAblation``: project out the difference-of-means direction,
  ``x - s·(x·r) r`` (Arditi et al., 2024, "Refusal in language models is mediated by a single
  direction").
- ``ActAdd``: add ``s·(m_t - m_s)``, the mean difference (Turner et al., 2023, activation
  addition; Arditi et al. use it to induce refusal with the opposite sign, see ``inverse``).
- ``PerNeuronOT``: independent 1-D Gaussian transport per coordinate,
  ``m_t + (σ_t/σ_s)(x - m_s)`` (Rodriguez et al., 2024, Linear-AcT).

``MeanShift`` (transport with ``A = I`` in the subspace) lives in ``ot_map``. Every class has
``fit(source, target)`` on rows and ``from_stats`` on streamed statistics; ``source`` is the
distribution to move away from (harmful) and ``target`` the one to reach (harmless).
"""

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from .degeneracy import check_distinct_classes, identical_classes, warn_if_degenerate
from .errors import UserInputError
from .stats import GaussianStats
from .tensor_dataclass import StrengthMixin
from .validate import (
    cast_back,
    check_float_tensor,
    check_reg,
    check_rows,
    check_same_width,
    check_unit_rows,
    compute_dtype,
)


def _stats_pair(source: Tensor, target: Tensor) -> tuple[GaussianStats, GaussianStats]:
    source = check_rows(source, "source", min_rows=1)
    target = check_rows(target, "target", min_rows=1)
    check_same_width(source, target)
    return GaussianStats.from_rows(source), GaussianStats.from_rows(target)


def _fit_dtype(source: Tensor, target: Tensor) -> torch.dtype:
    return compute_dtype(torch.promote_types(source.dtype, target.dtype))


def _check_pair(source: GaussianStats, target: GaussianStats, min_count: int) -> None:
    if source.d != target.d or source.batch_shape != target.batch_shape:
        raise UserInputError(
            "source and target statistics must share d_model and batch shape; got "
            f"{(*source.batch_shape, source.d)} and {(*target.batch_shape, target.d)}"
        )
    for name, stats in (("source", source), ("target", target)):
        if stats.count < min_count:
            raise UserInputError(
                f"need at least {min_count} samples in {name}, got n={stats.count}"
            )


def _check_mean_pair(
    source: GaussianStats, target: GaussianStats, dtype: torch.dtype, what: str, consequence: str
) -> None:
    """The checks of a fit from the two means alone (``DirectionAblation``, ``ActAdd``): the
    statistics match (any count >= 1) and the means differ beyond rounding."""
    _check_pair(source, target, 1)
    source_var, target_var = (s.scatter_diagonal.sum(-1) / s.count for s in (source, target))
    spread = (source_var + target_var) / 2
    same = identical_classes((source.mean, target.mean), spread, width=source.d, dtype=dtype)
    check_distinct_classes(same, what, "means", consequence)


@dataclass(frozen=True, eq=False)
class DirectionAblation(StrengthMixin):
    """Remove the component along a unit direction: ``x - s·(x·r) r``.

    Attributes:
        direction: Unit direction ``r``, ``[*batch, d_model]``.
        strength: 1 removes the component entirely, 0 is the identity.

    Example:
        >>> ab = DirectionAblation.fit(torch.randn(50, 4) + 1, torch.randn(60, 4))
        >>> bool((ab(torch.randn(3, 4)) @ ab.direction).abs().max() < 1e-5)
        True
    """

    direction: Float[Tensor, "*batch d_model"] = field(repr=False)
    strength: float = 1.0
    EVENT_AXES: ClassVar[dict[str, str]] = {"direction": "d_model"}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_rows(self.direction, "DirectionAblation.direction")

    @classmethod
    def fit(
        cls, source: Float[Tensor, "*batch n d_model"], target: Float[Tensor, "*batch m d_model"]
    ) -> "DirectionAblation":
        """Direction of ``mean(source) - mean(target)`` (harmful minus harmless), normalised."""
        return cls.from_stats(*_stats_pair(source, target), dtype=_fit_dtype(source, target))

    @classmethod
    def from_stats(
        cls, source: GaussianStats, target: GaussianStats, *, dtype: torch.dtype = torch.float32
    ) -> "DirectionAblation":
        _check_mean_pair(
            source,
            target,
            dtype,
            cls.__name__,
            "there is no direction to ablate (their difference is zero or rounding noise)",
        )
        diff = source.mean - target.mean
        return cls(direction=(diff / diff.norm(dim=-1, keepdim=True)).to(dtype))

    @classmethod
    def random(
        cls, d_model: int, *, batch_shape: tuple[int, ...] = (), seed: int = 0
    ) -> "DirectionAblation":
        """Placebo: a uniformly random unit direction (same cost, no refusal information)."""
        generator = torch.Generator().manual_seed(seed)
        direction = torch.randn(*batch_shape, d_model, generator=generator)
        return cls(direction=direction / direction.norm(dim=-1, keepdim=True))

    def __call__(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        check_float_tensor(x, "x")  # an integer x would come back truncated
        rows = self._as_rows(x, self.direction.shape[-1])
        dtype = compute_dtype(x.dtype)
        r = self.direction.to(dtype).unsqueeze(-2)
        rows = rows.to(dtype)
        out = rows - self.strength * (rows * r).sum(-1, keepdim=True) * r
        return cast_back(out.reshape(x.shape), x, type(self).__name__, self.strength)


@dataclass(frozen=True, eq=False)
class ActAdd(StrengthMixin):
    """Add the mean difference: ``x + s·(m_t - m_s)``.

    Attributes:
        vector: ``mean(target) - mean(source)``, ``[*batch, d_model]``.
        strength: The coefficient ``s`` (any value >= 0; 1 moves the source mean onto the
            target mean).
    """

    vector: Float[Tensor, "*batch d_model"] = field(repr=False)
    strength: float = 1.0
    EVENT_AXES: ClassVar[dict[str, str]] = {"vector": "d_model"}
    STRENGTH_WARN_ABOVE: ClassVar[float | None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        zero = (self.vector == 0).all(-1)
        if bool(zero.any()):
            where = (
                f" in layer(s) {zero.flatten().nonzero().flatten().tolist()}" if zero.ndim else ""
            )
            raise UserInputError(
                f"ActAdd.vector is zero{where}: adding it would change nothing. Pass the "
                "difference of the class means (ActAdd.fit computes it); strength=0 is the "
                "identity if that is what you want"
            )

    @classmethod
    def fit(
        cls, source: Float[Tensor, "*batch n d_model"], target: Float[Tensor, "*batch m d_model"]
    ) -> "ActAdd":
        return cls.from_stats(*_stats_pair(source, target), dtype=_fit_dtype(source, target))

    @classmethod
    def from_stats(
        cls, source: GaussianStats, target: GaussianStats, *, dtype: torch.dtype = torch.float32
    ) -> "ActAdd":
        _check_mean_pair(
            source, target, dtype, cls.__name__, "the vector to add would be zero or rounding noise"
        )
        return cls(vector=(target.mean - source.mean).to(dtype))

    def inverse(self) -> "ActAdd":
        """Subtract instead of add (moves target towards source, e.g. to induce refusal)."""
        return ActAdd(vector=-self.vector, strength=self.strength)

    def __call__(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        check_float_tensor(x, "x")  # an integer x would come back truncated
        rows = self._as_rows(x, self.vector.shape[-1])
        dtype = compute_dtype(x.dtype)
        out = rows.to(dtype) + self.strength * self.vector.to(dtype).unsqueeze(-2)
        return cast_back(out.reshape(x.shape), x, type(self).__name__, self.strength)


@dataclass(frozen=True, eq=False)
class PerNeuronOT(StrengthMixin):
    """Independent 1-D Gaussian transport of each coordinate: ``m_t + (σ_t/σ_s)(x - m_s)``.

    Attributes:
        mean_source: ``[*batch, d_model]``.
        mean_target: ``[*batch, d_model]``.
        scale: ``σ_t / σ_s`` per coordinate, ``[*batch, d_model]``.
        strength: 0 is the identity, 1 the full map.
        reg: Relative ridge added to the variances (times their mean).
    """

    mean_source: Float[Tensor, "*batch d_model"] = field(repr=False)
    mean_target: Float[Tensor, "*batch d_model"] = field(repr=False)
    scale: Float[Tensor, "*batch d_model"] = field(repr=False)
    strength: float = 1.0
    reg: float = 1e-3
    EVENT_AXES: ClassVar[dict[str, str]] = {
        "mean_source": "d_model", "mean_target": "d_model", "scale": "d_model",
    }  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        check_reg(self.reg)
        if bool((self.scale < 0).any()):
            raise UserInputError(
                "PerNeuronOT.scale must be >= 0 (it is sigma_target / sigma_source per "
                f"coordinate), got a minimum of {float(self.scale.min()):.3g}"
            )

    @classmethod
    def fit(
        cls,
        source: Float[Tensor, "*batch n d_model"],
        target: Float[Tensor, "*batch m d_model"],
        *,
        reg: float = 1e-3,
    ) -> "PerNeuronOT":
        source = check_rows(source, "source")
        target = check_rows(target, "target")
        check_same_width(source, target)
        return cls.from_stats(
            GaussianStats.from_rows(source),
            GaussianStats.from_rows(target),
            reg=reg,
            dtype=_fit_dtype(source, target),
        )

    @classmethod
    def from_stats(
        cls,
        source: GaussianStats,
        target: GaussianStats,
        *,
        reg: float = 1e-3,
        dtype: torch.dtype = torch.float32,
    ) -> "PerNeuronOT":
        _check_pair(source, target, 2)
        reg = check_reg(reg)
        raw = {
            name: torch.diagonal(stats.cov, dim1=-2, dim2=-1)
            for name, stats in (("source", source), ("target", target))
        }
        check_distinct_classes(
            identical_classes(
                (source.mean, target.mean),
                (raw["source"].sum(-1) + raw["target"].sum(-1)) / 2,
                covs=(raw["source"], raw["target"]),
                width=source.d,
                dtype=dtype,
            ),
            cls.__name__,
            "means and variances",
            "the fitted map would change nothing (every scale 1, no shift)",
        )
        warn_if_degenerate(
            {name: var.sum(-1) for name, var in raw.items()},
            cls.__name__,
            "`reg` is relative to each class's own variance, so it does not fix this",
        )

        def variance(name: str) -> Tensor:
            return raw[name] + reg * raw[name].mean(-1, keepdim=True)

        scale = (variance("target") / variance("source")).sqrt()
        if not bool(torch.isfinite(scale).all()):
            knob = f"increase `reg` (currently {reg:g})" if reg < 1 else "rescale them"
            raise UserInputError(
                "PerNeuronOT fit produced non-finite scales (constant coordinates, or "
                f"activations too large for float64?); check the activations and {knob}"
            )
        fitted = cls(mean_source=source.mean, mean_target=target.mean, scale=scale, reg=reg)
        return fitted.to(dtype=dtype)

    def inverse(self) -> "PerNeuronOT":
        return PerNeuronOT(
            mean_source=self.mean_target,
            mean_target=self.mean_source,
            scale=1 / self.scale,
            strength=self.strength,
            reg=self.reg,
        )

    def __call__(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
        check_float_tensor(x, "x")  # an integer x would come back truncated
        rows = self._as_rows(x, self.scale.shape[-1])
        dtype = compute_dtype(x.dtype)
        m_s, m_t, scale = (
            t.to(dtype).unsqueeze(-2) for t in (self.mean_source, self.mean_target, self.scale)
        )
        rows = rows.to(dtype)
        moved = m_t + scale * (rows - m_s)
        out = (rows + self.strength * (moved - rows)).reshape(x.shape)
        return cast_back(out, x, type(self).__name__, self.strength)
