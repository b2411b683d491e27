"""``sweep``'s settings: which placements, ``k`` values and strengths are scanned, the
damage budget the best placement must keep, and the judge of a judged sweep."""

from dataclasses import dataclass
from typing import Any, ClassVar

from ...core.errors import UserInputError
from ..damage import KL_THRESHOLD
from ..judge import check_judge_name
from ..methods import SWEPT, check_method
from ..selection import check_layer_spec, middle_layer
from .base import JobSettings
from .checks import (
    check_damage_measure,
    check_direction_layer,
    check_flag,
    check_layer_indices,
    positive_int,
    positive_number,
)


@dataclass(frozen=True)
class SweepSettings(JobSettings):
    """``sweep``: single layers, adjacent pairs, ``k`` and strength, scored without generation
    (and, with ``judged``, by the judge's reading of greedy completions at each placement).

    Attributes:
        layers: Layers to scan singly (``None``: every ``layer_stride``-th layer).
        layer_stride: Step between scanned layers when ``layers`` is ``None``.
        pairs: Also scan adjacent pairs ``(l, l + 1)`` of those layers.
        sequential: Fit a pair's second map on activations transported by its first.
        k_grid: ``k`` values tried at the best placement.
        strengths: Strengths tried for each method at the best placement.
        method: The transport method scanned (``methods.SWEPT``).
        direction_layer: Layer of the direction-ablation baseline (default: the middle one).
        kl_budget: "direction_ablation" (its KL) or a number: the damage allowed when picking
            the best placement.
        n_eval: Held-out prompts per class: the first this many of the shipped split or file.
        judged: Also generate greedy completions of the held-out harmful prompts under the
            references and every placement, and label them with ``judge``: compliance,
            deflection and degenerate shares per point (a generation pass each; the ``k`` and
            strength points stay generation-free). The best placement is then the most
            compliant within the budget (ties: the lower log-odds, then the lower KL), not the
            lowest log-odds; it is chosen on the held-out prompts it is scored on.
        max_new_tokens: Completion length of a judged sweep.
        judge: The compliance judge of a judged sweep (names as ``CompareSettings.judge``).
        match_measure: What ``kl_budget`` bounds when picking the best placement
            (``damage.MATCH_MEASURES``; default the mean KL).
        kl_threshold: Nats above which a harmless prompt counts as moved (the points'
            share-above column).
    """

    layers: list[int] | None = None
    layer_stride: int = 1
    pairs: bool = True
    sequential: bool = False
    k_grid: tuple[int, ...] = (8, 16, 32, 64, 128)
    strengths: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    method: str = "ot_selective"
    direction_layer: int | None = None
    kl_budget: str | float = "direction_ablation"
    n_eval: int = 32
    judged: bool = False
    max_new_tokens: int = 64
    judge: str = "classifier"
    match_measure: str = "mean"
    kl_threshold: float = KL_THRESHOLD

    QUICK: ClassVar[dict[str, Any]] = {
        "n_train": 64,
        "n_eval": 16,
        "max_new_tokens": 48,
        "layer_stride": 2,
        "pairs": False,
        "k_grid": (16, 64),
        "strengths": (0.5, 1.0, 2.0),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_method(self.method, among=SWEPT)
        if self.layers is not None:
            check_layer_spec(self.layers)
        check_direction_layer(self.direction_layer)
        positive_int(self.layer_stride, "layer_stride")
        positive_int(self.n_eval, "n_eval")
        positive_int(self.max_new_tokens, "max_new_tokens")
        check_flag(self.judged, "judged")
        check_judge_name(self.judge)
        if not self.k_grid:
            raise UserInputError("k_grid is empty; give at least one k")
        for k in self.k_grid:
            positive_int(k, "every k in k_grid")
        if not self.strengths:
            raise UserInputError("strengths is empty; give at least one strength")
        for strength in self.strengths:
            positive_number(strength, "every strength")
        if isinstance(self.kl_budget, str):
            if self.kl_budget != "direction_ablation":
                raise UserInputError(
                    f"kl_budget must be 'direction_ablation' or a number, got {self.kl_budget!r}"
                )
        else:
            positive_number(self.kl_budget, "kl_budget")
        check_damage_measure(self.match_measure, self.kl_threshold, self.kl_budget, "kl_budget")

    def check_layers(self, n_layers: int) -> None:
        self.scanned_layers(n_layers)
        self.direction(n_layers)

    def scanned_layers(self, n_layers: int) -> list[int]:
        """The layers scanned singly, checked against ``n_layers``."""
        layers = self.layers or list(range(0, n_layers, self.layer_stride))
        check_layer_indices(layers, n_layers)
        return sorted(set(layers))

    def direction(self, n_layers: int) -> int:
        """The direction-ablation baseline's layer, checked against ``n_layers``."""
        layer = middle_layer(n_layers) if self.direction_layer is None else self.direction_layer
        check_layer_indices([layer], n_layers, name="direction_layer")
        return layer
