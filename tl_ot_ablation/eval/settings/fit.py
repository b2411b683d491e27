"""``fit``'s settings: one registered method, placed and fitted, saved as an ``InterventionSet``."""

from dataclasses import dataclass
from typing import Any, ClassVar

from ..methods import check_method
from ..selection import LayerSpec, check_layer_spec
from .base import JobSettings
from .checks import check_direction_layer, check_layer_indices


@dataclass(frozen=True)
class FitSettings(JobSettings):
    """``fit``: one method from the registry, saved as an ``InterventionSet``.

    Attributes:
        method: A name of ``methods.METHODS`` (not "none").
        layers: Selective layers ("auto": the W2² / variance argmax, as in ``compare``).
        direction_layer: Layer of the refusal direction (default: the middle one).
        sequential: Fit later layers on transported activations.
    """

    method: str = "ot_selective"
    layers: LayerSpec = "auto"
    direction_layer: int | None = None
    sequential: bool = True

    QUICK: ClassVar[dict[str, Any]] = {"n_train": 64}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_method(self.method, allow_none=False)
        check_layer_spec(self.layers)
        check_direction_layer(self.direction_layer)

    def check_layers(self, n_layers: int) -> None:
        layers = [] if isinstance(self.layers, str) else list(self.layers)
        check_layer_indices(layers, n_layers)
        if self.direction_layer is not None:
            check_layer_indices([self.direction_layer], n_layers, name="direction_layer")
