"""The value checks the settings classes run when built, so a bad value fails before a model
loads (and ``check_layer_indices`` once it has, against its number of blocks).

Each raises ``UserInputError`` naming the setting, the value received and what it must be.
"""

import math
from collections.abc import Sequence

from ...core.errors import UserInputError
from ..damage import SHARE_MEASURES, check_measure, check_threshold

MAX_BLOCKS = 10_000
"""No model has more blocks: a larger layer index is a typo, refused before a model loads."""


def positive_int(value: object, name: str) -> None:
    """Raise unless ``value`` is an integer >= 1."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise UserInputError(f"{name} must be an integer >= 1, got {value!r}")


def non_negative_int(value: object, name: str) -> None:
    """Raise unless ``value`` is an integer >= 0 (``bool`` refused)."""
    if not (isinstance(value, int) and not isinstance(value, bool)) or value < 0:
        raise UserInputError(f"{name} must be an integer >= 0, got {value!r}")


def positive_number(value: object, name: str) -> None:
    """Raise unless ``value`` is a finite number > 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise UserInputError(f"{name} must be a finite number > 0, got {value!r}")


def check_flag(value: object, name: str) -> None:
    """Raise unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise UserInputError(f"{name} must be True or False, got {value!r}")


def finite_at_least(value: object, low: int, name: str) -> None:
    """Refuse a non-number, NaN, infinity or a value below ``low`` (a strength search or
    interpolation to infinity never ends well)."""
    if not (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= low
    ):
        raise UserInputError(f"{name} must be a finite number >= {low}, got {value!r}")


def check_seed(seed: object) -> None:
    """Numpy and torch generators take unsigned 64-bit seeds: refuse others before any work."""
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**64):
        raise UserInputError(
            f"seed must be an integer >= 0 and < 2**64 (numpy and torch take unsigned 64-bit "
            f"seeds), got {seed!r}"
        )


def check_damage_measure(measure: object, threshold: object, budget: object, name: str) -> None:
    """Raise unless ``measure`` and ``threshold`` are valid and a numeric ``budget`` fits the
    measure (a share of prompts is at most 1)."""
    check_measure(measure)
    check_threshold(threshold)
    numeric = isinstance(budget, int | float) and not isinstance(budget, bool)
    if measure in SHARE_MEASURES and numeric and budget > 1:  # type: ignore[operator]
        raise UserInputError(
            f"{name}={budget!r} bounds a share of prompts under match_measure={measure!r}: "
            "give a number in (0, 1]"
        )


def is_block_index(layer: object) -> bool:
    """Whether ``layer`` could index a block of some model (``0 <= layer < MAX_BLOCKS``)."""
    return isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < MAX_BLOCKS


def check_direction_layer(layer: object) -> None:
    """Raise unless ``layer`` is ``None`` or could index a block (``is_block_index``)."""
    if layer is not None and not is_block_index(layer):
        raise UserInputError(
            f"direction_layer must be a block index in 0..{MAX_BLOCKS - 1} (no model has more "
            f"than {MAX_BLOCKS} blocks) or None, got {layer!r}"
        )


def check_layer_indices(layers: Sequence[int], n_layers: int, name: str = "layer") -> None:
    """Raise unless every index of ``layers`` is a block of a model with ``n_layers``."""
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise UserInputError(
            f"{name}(s) {bad} out of range: this model has layers 0..{n_layers - 1}"
        )
