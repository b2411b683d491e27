"""Fitting a job's methods from one pass over every layer (``compare``, ``monitor``, ``fit``).

The registry (``methods``) says how each method is fitted from a ``FitContext``; this module
builds that context from a job's settings and its training prompts, so that every job fits a
method the same way: one pass that reads every layer's ``resid_pre`` (``collect_every_layer``,
rows kept when a transport method's estimator needs them), then each method from it.
"""

import time
from collections.abc import Sequence
from typing import Any

from ..core.errors import UserInputError
from ..lens.intervention_set import InterventionSet
from ..lens.training import TrainingActivations, collect_every_layer
from .common import log
from .methods import METHODS, FitContext, fit_method
from .selection import LayerChoice, middle_layer, resolve_layers
from .settings import CompareSettings, FitSettings, JobSettings


def collect_training_activations(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    settings: JobSettings,
    methods: Sequence[str],
    *,
    progress: bool = True,
) -> TrainingActivations:
    """One pass over every layer's ``resid_pre`` for both training sets; the rows are kept too
    when one of ``methods`` is a transport method whose estimator needs them (and they fit in
    memory)."""
    uses_rows = any(METHODS[m].transport for m in methods)
    log(f"collecting activations at all {model.cfg.n_layers} layers", progress)
    return collect_every_layer(
        model,
        harmful,
        harmless,
        settings.collecting(progress=progress),
        estimator=settings.map.estimator if uses_rows else "ridge",
    )


def compare_context(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    settings: CompareSettings,
    training: TrainingActivations | None,
    *,
    layers: list[int],
    progress: bool,
) -> FitContext:
    """The ``FitContext`` of resolved compare ``settings`` with the selective ``layers``."""
    if settings.direction_layer is None:
        raise UserInputError("the settings must be resolved first: settings.resolve(n_layers)")
    return FitContext(
        model,
        harmful,
        harmless,
        layers,
        settings.direction_layer,
        settings.map,
        settings.collecting(progress=progress),
        settings.sequential,
        training,
    )


def fit_methods(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    settings: CompareSettings,
    *,
    training: TrainingActivations | None = None,
    progress: bool = True,
) -> tuple[dict[str, InterventionSet], TrainingActivations]:
    """Fit every method of ``settings`` (resolved, with concrete layers) from one pass over all
    layers' ``resid_pre`` (``training``, collected here when not given)."""
    if isinstance(settings.layers, str) or settings.direction_layer is None:
        raise UserInputError(
            f"layers={settings.layers!r} must be resolved first: settings.resolve(n_layers), "
            "then choose_layers(settings, training, n_layers) for 'auto'"
        )
    if training is None:
        training = collect_training_activations(
            model, harmful, harmless, settings, settings.methods, progress=progress
        )
    layers = list(settings.layers)
    context = compare_context(
        model, harmful, harmless, settings, training, layers=layers, progress=progress
    )
    fitted = {}
    for name in settings.methods:
        if name != "none":
            log(f"fitting {name}", progress)
            start = time.perf_counter()
            fitted[name] = fit_method(name, context)
            fitted[name].metadata["fit_seconds"] = round(time.perf_counter() - start, 2)
    return fitted, training


def fit_one_method(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    settings: FitSettings,
    *,
    progress: bool = True,
) -> tuple[InterventionSet, LayerChoice]:
    """The one method of ``settings`` fitted, and the layers it was placed at.

    Layers are chosen as in ``compare`` (``resolve_layers``): ``"auto"`` ranks every layer by
    W2² / variance from one pass, which the fit then reuses. Direction ablation's one layer is
    the direction's."""
    n_layers = model.cfg.n_layers
    method = METHODS[settings.method]
    training = None
    if method.selective and settings.layers == "auto":
        training = collect_training_activations(
            model, harmful, harmless, settings, [settings.method], progress=progress
        )
    if method.selective:
        stats = None if training is None else training.stats
        k, reg = settings.map.n_components, settings.map.reg
        choice = resolve_layers(settings.layers, n_layers, stats, n_components=k, reg=reg)
        direction = settings.direction_layer
        direction = middle_layer(n_layers) if direction is None else direction
    else:  # direction ablation: its one layer is the direction's
        given = settings.direction_layer
        spec = [given] if given is not None else settings.layers
        choice = resolve_layers("middle" if spec == "auto" else spec, n_layers)
        direction = choice.layers[0]
    context = FitContext(
        model,
        harmful,
        harmless,
        choice.layers,
        direction,
        settings.map,
        settings.collecting(progress=progress),
        settings.sequential,
        training,
    )
    return fit_method(settings.method, context), choice
