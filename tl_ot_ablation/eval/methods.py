"""The method registry: one name per method, how to fit it, and how to describe it.

``fit``, ``compare``, ``sweep`` and the CLI's choices all read this table, so a method is added
in one place: write a function ``FitContext -> InterventionSet`` and register a ``Method``
(``docs/architecture.md``, "Adding a method"). Names:

- ``none``: the unmodified model (the reference row of every comparison);
- ``direction_ablation``: Arditi et al.'s refusal-direction ablation at every layer;
- ``actadd``: the mean difference added at the first selective layer;
- ``mean_shift``: transport with ``A = I`` at the selective layers;
- ``per_neuron_ot``: independent 1-D transport per coordinate at the selective layers;
- ``ot_full``: the Gaussian OT map at every layer (fitted from one pass);
- ``ot_selective``: the Gaussian OT map at the selective layers.
"""

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import UserInputError
from ..lens.collect import CollectOptions
from ..lens.fit import fit_actadd, fit_direction_ablation, fit_ot_ablation
from ..lens.intervention_set import InterventionSet
from ..lens.map_spec import MapSpec, Placement
from ..lens.training import TrainingActivations


@dataclass(frozen=True)
class FitContext:
    """Everything a method's fit may use, resolved once per job."""

    model: Any
    harmful: Sequence[str]
    harmless: Sequence[str]
    layers: list[int]
    direction_layer: int
    spec: MapSpec
    collect: CollectOptions
    sequential: bool = True
    training: TrainingActivations | None = None

    def transport(self, kind: str, layers: list[int], *, sequential: bool) -> InterventionSet:
        """``fit_ot_ablation`` with this context's prompts, map, options and activations."""
        return fit_ot_ablation(
            self.model,
            self.harmful,
            self.harmless,
            layers=layers,
            spec=dataclasses.replace(self.spec, kind=kind),  # type: ignore[arg-type]
            collect=self.collect,
            placement=Placement(sequential=sequential),
            training=self.training,
        )


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        name: Its one name (results.json keys, CLI choices, plot legends).
        description: One line for reports and ``--help``.
        fit: ``FitContext -> InterventionSet`` (``None`` for the unmodified model).
        selective: Placed at the selective layers (so ``layers="auto"`` needs the W2 ranking).
        transport: Fitted with the ``MapSpec`` (so its estimator may need rows).
    """

    name: str
    description: str
    fit: Callable[[FitContext], InterventionSet] | None
    selective: bool = False
    transport: bool = False


def _direction_ablation(ctx: FitContext) -> InterventionSet:
    return fit_direction_ablation(
        ctx.model,
        ctx.harmful,
        ctx.harmless,
        layer=ctx.direction_layer,
        collect=ctx.collect,
        training=ctx.training,
    )


def _actadd(ctx: FitContext) -> InterventionSet:
    return fit_actadd(
        ctx.model,
        ctx.harmful,
        ctx.harmless,
        layer=ctx.layers[0],
        collect=ctx.collect,
        training=ctx.training,
    )


def _every_layer(ctx: FitContext) -> InterventionSet:
    # From the unmodified model's activations: fitting every layer sequentially would cost one
    # (partial) pass per layer.
    return ctx.transport("ot", list(range(ctx.model.cfg.n_layers)), sequential=False)


_REGISTERED = (
    Method("none", "the unmodified model", None),
    Method(
        "direction_ablation",
        "refusal direction projected out of every layer (Arditi et al., 2024)",
        _direction_ablation,
    ),
    Method("actadd", "mean difference added at the first selective layer", _actadd, True),
    Method(
        "mean_shift",
        "subspace mean moved (A = I) at the selective layers",
        lambda ctx: ctx.transport("mean_shift", ctx.layers, sequential=ctx.sequential),
        True,
        True,
    ),
    Method(
        "per_neuron_ot",
        "1-D Gaussian transport per coordinate at the selective layers",
        lambda ctx: ctx.transport("per_neuron_ot", ctx.layers, sequential=ctx.sequential),
        True,
    ),
    Method("ot_full", "Gaussian OT map at every layer", _every_layer, False, True),
    Method(
        "ot_selective",
        "Gaussian OT map at the selective layers",
        lambda ctx: ctx.transport("ot", ctx.layers, sequential=ctx.sequential),
        True,
        True,
    ),
)

METHODS: dict[str, Method] = {method.name: method for method in _REGISTERED}
"""Every method by name, in report order."""
COMPARED: tuple[str, ...] = tuple(METHODS)
"""What ``compare`` can run (all of them: ``--methods all``)."""
HEADLINE: tuple[str, ...] = ("direction_ablation", "ot_selective")
"""What ``compare`` runs by default: the paper's map against the standard baseline. Each method
costs minutes of generation on a small CPU (README, "Run times"), so the other five are opt-in."""
SWEPT: tuple[str, ...] = ("ot_selective", "mean_shift")
"""The transport methods a ``sweep`` can scan across placements."""


def check_method(name: object, *, among: Sequence[str] = COMPARED, allow_none: bool = True) -> None:
    """Raise unless ``name`` is a registered method in ``among``."""
    choices = [m for m in among if allow_none or m != "none"]
    if name not in choices:
        raise UserInputError(f"unknown method {name!r}; choose from {choices}")


def fit_method(name: str, ctx: FitContext) -> InterventionSet:
    """Fit the registered method ``name`` in ``ctx``."""
    check_method(name, allow_none=False)
    fit = METHODS[name].fit
    assert fit is not None
    return fit(ctx)
