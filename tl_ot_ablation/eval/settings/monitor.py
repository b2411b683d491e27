"""``monitor``'s settings: which methods, at which strengths, are watched by an activation
monitor at which layers and hook point; and the compare settings their maps are fitted with."""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ...core.errors import UserInputError
from ..methods import COMPARED, check_method
from ..selection import LayerSpec, check_layer_spec
from .base import MAP_FIELDS, JobSettings
from .checks import (
    MAX_BLOCKS,
    check_direction_layer,
    check_flag,
    check_layer_indices,
    is_block_index,
)
from .compare import CompareSettings

FIT_COLLECT = ("positions", "system", "chat")
"""The ``CollectOptions`` fields that change a fitted map (not the batch size)."""
LAYER_FIELDS = ("layers", "direction_layer")
"""Where the maps are placed, for settings that place them."""
MONITOR_HOOKS = ("resid_pre", "resid_mid", "resid_post")
"""The residual hook points a monitor can read (``lens.monitor.MonitorHookKind``)."""
MONITORED = tuple(m for m in COMPARED if m != "none")
"""What ``monitor`` tests by default: every compared method but the unmodified model."""


@dataclass(frozen=True)
class MonitorSettings(JobSettings):
    """``monitor``: how well an activation monitor detects each method, per monitored layer.

    The methods are fitted as in ``compare`` (``compare_settings()``), each set to its strength;
    the monitor is fitted on the clean training prompts and scored on held-out ones.

    Attributes:
        layers: Selective layers, as in ``compare`` (``"auto"``: the W2² / variance argmax).
        direction_layer: Layer of the refusal direction (default: the middle one).
        methods: Methods to detect, names of ``methods.COMPARED`` but "none" (default: all).
        monitor_layers: Monitored blocks: a list, or ``"auto"`` = the last selective layer and
            every 2nd later block (23 of 28 layers: ``[23, 25, 27]``).
        hook: Residual hook point monitored at each layer ("resid_pre", "resid_mid" or
            "resid_post": after the block, where an edit at its input shows).
        n_eval: Held-out prompts per class: the first this many of the shipped split or file.
        probe: Also train the supervised ``probe`` score per method on the training prompts
            (it knows the attack: the reference the unsupervised scores are read against).
        strengths: ``{method: strength}``; a method not named runs at strength 1 (e.g. the
            strengths ``compare`` matched, ``record.compare_strengths``).
    """

    layers: LayerSpec = "auto"
    direction_layer: int | None = None
    methods: tuple[str, ...] = MONITORED
    monitor_layers: list[int] | str = "auto"
    hook: str = "resid_post"
    n_eval: int = 32
    probe: bool = True
    strengths: dict[str, float] = dataclasses.field(default_factory=dict)

    QUICK: ClassVar[dict[str, Any]] = {"n_train": 64, "n_eval": 16}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.collect.positions not in ("post_instruction", "last"):
            raise UserInputError(
                f"the monitor reads positions 'post_instruction' or 'last', got "
                f"{self.collect.positions!r} ('all' gives prompts different numbers of rows)"
            )
        check_layer_spec(self.layers)
        check_direction_layer(self.direction_layer)
        if isinstance(self.methods, str) or not self.methods:
            raise UserInputError(
                f"methods must be a non-empty tuple of names, got {self.methods!r}"
            )
        for method in self.methods:
            check_method(method, among=COMPARED, allow_none=False)
        # Registry order, once each: the record, the report and the plot list them alike.
        object.__setattr__(self, "methods", tuple(m for m in MONITORED if m in self.methods))
        if isinstance(self.monitor_layers, str):
            if self.monitor_layers != "auto":
                raise UserInputError(
                    "monitor_layers must be a list of layers or 'auto', got "
                    f"{self.monitor_layers!r}"
                )
        else:
            if not isinstance(self.monitor_layers, list | tuple) or not self.monitor_layers:
                raise UserInputError(
                    "monitor_layers must be a non-empty list of block indices or 'auto', got "
                    f"{self.monitor_layers!r}"
                )
            bad = [i for i in self.monitor_layers if not is_block_index(i)]
            if bad:
                raise UserInputError(
                    f"monitor_layers must be block indices in 0..{MAX_BLOCKS - 1} (no model has "
                    f"more than {MAX_BLOCKS} blocks), got {bad}"
                )
            object.__setattr__(self, "monitor_layers", list(self.monitor_layers))
        if self.hook not in MONITOR_HOOKS:
            raise UserInputError(f"hook must be one of {MONITOR_HOOKS}, got {self.hook!r}")
        if not (isinstance(self.n_eval, int) and not isinstance(self.n_eval, bool)) or (
            self.n_eval < 2
        ):
            raise UserInputError(
                f"n_eval must be an integer >= 2 (an AUROC needs two scores per side), got "
                f"{self.n_eval!r}"
            )
        check_flag(self.probe, "probe")
        if not isinstance(self.strengths, Mapping):
            raise UserInputError(
                f"strengths must map method names to numbers, got {self.strengths!r}"
            )
        object.__setattr__(self, "strengths", dict(self.strengths))  # no alias to the caller's
        for method, strength in self.strengths.items():
            if method not in self.methods:
                raise UserInputError(
                    f"strengths names {method!r}, which is not among the methods run "
                    f"{list(self.methods)}"
                )
            if not (
                isinstance(strength, int | float)
                and not isinstance(strength, bool)
                and math.isfinite(strength)
                and strength >= 0
            ):
                raise UserInputError(
                    f"the strength of {method} must be a finite number >= 0, got {strength!r}"
                )

    def fit_differences(self, other: JobSettings) -> list[str]:
        """The fields that shape the fitted maps (map, positions, system prompt, training size
        and, where ``other`` has them, the layers) whose values differ from ``other``'s: a
        strength matched under ``other`` means something else under these."""
        names = [n for n in MAP_FIELDS if getattr(self.map, n) != getattr(other.map, n)]
        names += [n for n in FIT_COLLECT if getattr(self.collect, n) != getattr(other.collect, n)]
        own = ("n_train", *(n for n in LAYER_FIELDS if hasattr(other, n)))
        return names + [n for n in own if getattr(self, n) != getattr(other, n)]

    def strength(self, method: str) -> float:
        """The strength ``method`` runs at (1.0 unless ``strengths`` names it)."""
        return float(self.strengths.get(method, 1.0))

    def compare_settings(self) -> CompareSettings:
        """The ``CompareSettings`` the methods are fitted with (``compare.fit_methods``): these
        map, collection and layer fields, the methods, and no strength matching."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(JobSettings)}
        return CompareSettings(
            **shared,
            layers=self.layers,
            direction_layer=self.direction_layer,
            methods=("none", *self.methods),
            match_kl=None,
            n_eval=self.n_eval,
            n_questions=0,
            detect=False,
        )

    def check_layers(self, n_layers: int) -> None:
        self.compare_settings().resolve(n_layers)
        if not isinstance(self.monitor_layers, str):
            check_layer_indices(self.monitor_layers, n_layers, name="monitor layer")

    def resolve_monitor_layers(self, selective: Sequence[int], n_layers: int) -> list[int]:
        """The monitored layers, checked against ``n_layers``; ``"auto"`` starts at the last of
        the (resolved) ``selective`` layers and takes every 2nd block after it."""
        if isinstance(self.monitor_layers, str):
            if not selective:
                raise UserInputError("monitor_layers='auto' needs the resolved selective layers")
            layers = list(range(max(selective), n_layers, 2))
        else:
            layers = sorted(set(self.monitor_layers))
        check_layer_indices(layers, n_layers, name="monitor layer")
        return layers
