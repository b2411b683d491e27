"""Per-layer health report of a fitted transport map."""

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from .tensor_dataclass import TensorDataclass


@dataclass(frozen=True, eq=False)
class OTDiagnostics(TensorDataclass):
    """Per-layer health report of a fitted map (float64, shapes ``[*batch]``).

    Attributes:
        w2_mean: Mean part ``|m_s - m_t|²`` of the squared 2-Wasserstein distance.
        w2_bures: Covariance (Bures) part of the squared 2-Wasserstein distance.
        explained_variance_ratio: Share of the pooled variance that the subspace keeps.
        condition_source: Condition number of the (regularised) source covariance.
        condition_target: Condition number of the (regularised) target covariance.
        max_stretch: Largest eigenvalue of ``A``: how much the map stretches any direction.
        min_stretch: Smallest eigenvalue of ``A``.
        transport_residual: ``‖A S A - C‖_F / ‖C‖_F``; near 0 when the map is exact.
    """

    w2_mean: Tensor
    w2_bures: Tensor
    explained_variance_ratio: Tensor
    condition_source: Tensor
    condition_target: Tensor
    max_stretch: Tensor
    min_stretch: Tensor
    transport_residual: Tensor
    EVENT_DIMS: ClassVar[dict[str, int]] = dict.fromkeys(
        (
            "w2_mean", "w2_bures", "explained_variance_ratio", "condition_source",
            "condition_target", "max_stretch", "min_stretch", "transport_residual",
        ),
        0,
    )  # fmt: skip

    @property
    def w2(self) -> Tensor:
        """Squared 2-Wasserstein distance between the two Gaussians in the subspace."""
        return self.w2_mean + self.w2_bures

    def to_dict(self) -> dict[str, float | list[float]]:
        """Plain floats (or per-layer lists), for JSON reports and DataFrames."""
        out: dict[str, float | list[float]] = {"w2": self.w2.tolist()}
        for name, value in self._tensor_items():
            assert isinstance(value, Tensor)
            out[name] = value.tolist()
        return out
