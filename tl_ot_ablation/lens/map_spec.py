"""How and where a fit's maps are fitted, held once: ``MapSpec``, its presets, ``Placement``.

Every transport fit (``fit_ot_ablation``, the jobs' registry, the CLI) takes one ``MapSpec``
rather than its fields one by one, so a setting is validated once, recorded once with the fit
(``metadata``) and defaulted in one place. ``RECOMMENDED_MAP`` is the default of every fit and
job; ``PLAIN_MAP`` is the paper's plain map. The choices themselves (estimators, gates, parts)
are ``core``'s, which checks them (``check_map_options``, ``check_reg``). ``Placement`` says
where every fit (transport, direction ablation, ActAdd) reads and applies its edit.
"""

from dataclasses import dataclass
from typing import Any, Literal, get_args

from ..core.errors import UserInputError
from ..core.gate import GateKind
from ..core.ot_fit import DEFAULT_REG, BasisChoice, Part, check_map_options
from ..core.shrinkage import Estimator
from ..core.validate import check_reg
from .hooks import PositionSpec

MapKind = Literal["ot", "mean_shift", "per_neuron_ot"]

DEFAULT_N_COMPONENTS = 64
"""PCA subspace size ``k`` of every fit and job unless told otherwise (chosen by held-out
likelihood on the embedded model; experiments/README.md)."""


@dataclass(frozen=True)
class MapSpec:
    """How each transport map is fitted and applied (``GaussianOTMap`` / ``MeanShift``).

    ``MapSpec()`` is the paper's plain map (sample covariances with a small ridge, no gate:
    ``PLAIN_MAP``); ``RECOMMENDED_MAP`` (Ledoit-Wolf covariances, the posterior gate) is what
    ``fit_ot_ablation`` and every job (fit, compare, sweep) use by default.

    Example:
        >>> import dataclasses
        >>> dataclasses.replace(RECOMMENDED_MAP, n_components=32).needs_rows
        True

    Attributes:
        n_components: PCA subspace size ``k`` (``None``: the full space).
        reg: Relative ridge on the covariances.
        basis: "pca" or "pca+mean_diff" (see ``GaussianOTMap.fit``).
        estimator: Covariance estimator, "ridge", "oas" or "ledoit_wolf" (needs rows).
        gate: "none", "posterior" or "hard" (``core.gate``).
        gate_prior: Prior probability of harmful in the gate.
        preserve_norm: Keep each edited activation's norm.
        part: "full", or "covariance" (the linear part without the translation).
        kind: The map: "ot" (the Bures-Wasserstein map ``GaussianOTMap``), "mean_shift"
            (``A = I``) or "per_neuron_ot" (independent 1-D maps; uses ``reg`` only).
    """

    n_components: int | None = DEFAULT_N_COMPONENTS
    reg: float = DEFAULT_REG
    basis: BasisChoice = "pca"
    estimator: Estimator = "ridge"
    gate: GateKind = "none"
    gate_prior: float = 0.5
    preserve_norm: bool = False
    part: Part = "full"
    kind: MapKind = "ot"

    def __post_init__(self) -> None:
        k = self.n_components
        if k is not None and not (isinstance(k, int) and k >= 1):
            raise UserInputError(f"n_components must be an integer >= 1 or None, got {k!r}")
        check_reg(self.reg)
        if self.basis not in get_args(BasisChoice):
            raise UserInputError(
                f"basis must be one of {get_args(BasisChoice)}, got {self.basis!r}"
            )
        check_map_options(self.estimator, self.gate, self.gate_prior, self.part)
        if self.kind not in get_args(MapKind):
            raise UserInputError(f"kind must be one of {get_args(MapKind)}, got {self.kind!r}")

    @property
    def needs_rows(self) -> bool:
        """Whether fitting needs the activation rows, not just streamed statistics."""
        return self.estimator == "ledoit_wolf"

    def application(self) -> dict[str, Any]:
        """The options applied to a fitted map (``GaussianOTMap.with_options``)."""
        return {
            "gate": self.gate,
            "gate_prior": self.gate_prior,
            "preserve_norm": self.preserve_norm,
            "part": self.part,
        }


RECOMMENDED_MAP = MapSpec(estimator="ledoit_wolf", gate="posterior")
"""The map ``fit_ot_ablation`` and every job fit by default: Ledoit-Wolf covariances and the
posterior gate, the variant that did best at matched damage (docs/results.md)."""
PLAIN_MAP = MapSpec()
"""The paper's plain map: sample covariances with a small ridge, every edit applied in full
(``fit_ot_ablation(..., spec=PLAIN_MAP)``); at matched damage it deflects far more."""


@dataclass(frozen=True)
class Placement:
    """Where a fit reads and applies its edit, and in which order it fits the layers.

    Attributes:
        hook: The hook point at each chosen layer: ``"resid_pre"``, ``"resid_mid"``,
            ``"resid_post"`` (or a full hook name).
        sequential: Fit a later layer's map on activations already transported by the maps at
            the earlier chosen layers (``fit_ot_ablation``; the other fits use one layer).
        apply_positions: Where the hooks apply; ``None``: the fit's default. For
            ``fit_ot_ablation`` that is where the maps were fitted, plus every generated token,
            never the first position (``apply_positions_for``); for the direction ablation and
            ActAdd, every position (``"all"``).
    """

    hook: str = "resid_pre"
    sequential: bool = True
    apply_positions: PositionSpec | None = None
