"""Fit interventions on a model: OT ablation (and its baselines) per layer, direction ablation.

``fit_ot_ablation`` fits one map per chosen layer at ``blocks.{l}.hook_{hook}``. With
``sequential=True`` the map at a later layer is fitted on activations already transported by
the maps at the earlier chosen layers (applied where they will be applied at inference), so it
sees the distribution it will actually receive; ``sequential=False`` fits every layer from one
pass. ``fit_direction_ablation`` does what Arditi et al. (2024) do: one direction, read at one
layer, projected out of every layer's ``resid_pre``, ``resid_mid`` and ``resid_post`` at every
position. ``fit_actadd`` adds the mean difference at one layer.

Options are held once, as objects (``lens.map_spec``): ``MapSpec`` says how each transport
map is fitted and applied, ``Placement`` where the edit is read and applied, and
``CollectOptions`` how the prompts are run; each defaults to what the jobs use, so
``fit_ot_ablation(model, harmful, harmless, layers=[17])`` needs none of them.
``TrainingActivations`` (``lens.training``: one pass over many hook points) can stand in for a
fit's own pass; it carries a fingerprint of the prompts, positions, system prompt and chat
template it came from, and a fit with other ones raises.
"""

import dataclasses
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.baselines import ActAdd, DirectionAblation, PerNeuronOT
from ..core.ot_map import GaussianOTMap, IdenticalClassesError, MeanShift
from ..core.stats import GaussianStats
from ..core.validate import stacklevel_outside
from .chat_template import post_instruction_length
from .collect import CollectOptions, FitPositions, Prompts, check_layers, hook_name
from .compatibility import model_signature
from .hooks import PositionSpec
from .intervention_set import InterventionSet
from .map_spec import RECOMMENDED_MAP, MapSpec, Placement
from .training import TrainingActivations, collect_pair, n_prompts, prompts_hash


def apply_positions_for(positions: FitPositions) -> PositionSpec:
    """Where to apply a map fitted at ``positions``: where it was fitted (plus generated tokens).

    Fitting ``"all"`` skips the first position (the attention sink), so the map is applied to
    ``slice(1, None)``; applying ``"all"`` would include it."""
    return slice(1, None) if positions == "all" else positions


def check_distinct_prompts(harmful: Prompts, harmless: Prompts) -> None:
    """Raise before any forward pass if both sets hold the same prompts (in any order, or the
    same token tensors): their activations would be identical, and so would the fit."""
    if isinstance(harmful, tuple) or isinstance(harmless, tuple):
        same = (
            isinstance(harmful, tuple)
            and isinstance(harmless, tuple)
            and len(harmful) == len(harmless)
            and all(
                a.shape == b.shape and torch.equal(a, b)
                for a, b in zip(harmful, harmless, strict=True)
            )
        )
    else:
        same = sorted(map(str, harmful)) == sorted(map(str, harmless))
    if same:
        raise IdenticalClassesError(
            f"the harmful and harmless prompts are the same {n_prompts(harmful)} prompt(s), so "
            "their activations are identical and a fit would change nothing (W2 = 0; no "
            "direction). Pass two different prompt sets"
        )


@contextmanager
def _fitting_at(name: str) -> Iterator[None]:
    """Name the hook point in an ``IdenticalClassesError`` of a fit at ``name``."""
    try:
        yield
    except IdenticalClassesError as err:
        raise IdenticalClassesError(
            f"{name}: {err}. At the first layers the fitting positions can hold the same "
            "tokens for every prompt (the chat template's tokens after the user message, "
            "before attention has mixed in the prompt): fit at a later layer"
        ) from err


def _fit_metadata(
    model: Any, method: str, harmful: Prompts, harmless: Prompts, **settings: Any
) -> dict[str, Any]:
    """What every fit records: the model (``compatibility.model_signature``: checked when the
    set is loaded onto a model), the method, the prompts' hash and its settings."""
    return {
        **model_signature(model, system=settings.get("system")),
        "method": method,
        "prompts_sha256": prompts_hash(harmful, harmless),
        **settings,
    }


def span_length(model: Any, collect: CollectOptions, *positions: object) -> int | None:
    """The chat template's post-instruction length when one of ``positions`` (fitting or
    applying) is ``"post_instruction"``, else ``None``: a model without a template fits and
    applies at ``"last"`` / ``"all"`` / a slice without one."""
    if "post_instruction" not in [p for p in positions if isinstance(p, str)]:
        return None
    return post_instruction_length(model.tokenizer, system=collect.system)


def fit_map(source: GaussianStats | Tensor, target: Any, spec: MapSpec) -> Any:
    """One layer's map of ``spec.kind`` from statistics or rows of both classes."""
    if spec.kind == "per_neuron_ot":
        if not isinstance(source, GaussianStats) or not isinstance(target, GaussianStats):
            raise TypeError("per_neuron_ot is fitted from statistics, not rows")
        return PerNeuronOT.from_stats(source, target, reg=spec.reg)
    cls = GaussianOTMap if spec.kind == "ot" else MeanShift
    options: dict[str, Any] = {
        "n_components": spec.n_components,
        "reg": spec.reg,
        "basis": spec.basis,
        "estimator": spec.estimator,
    }
    if isinstance(source, Tensor) and isinstance(target, Tensor):
        fitted = cls.fit(source, target, route="rows", **options)
    elif isinstance(source, GaussianStats) and isinstance(target, GaussianStats):
        fitted = cls.from_stats(source, target, **options)
    else:
        raise TypeError("source and target must both be statistics or both rows")
    return fitted.with_options(**spec.application())


def fit_ot_ablation(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    layers: Sequence[int],
    *,
    spec: MapSpec | None = None,
    collect: CollectOptions | None = None,
    placement: Placement | None = None,
    training: TrainingActivations | None = None,
) -> InterventionSet:
    """Fit a transport map from harmful to harmless activations at each of ``layers``.

    Args:
        model: A ``TransformerBridge`` in eval mode.
        harmful: Instructions (or tokens) to move away from: the source distribution.
        harmless: Instructions (or tokens) to move towards: the target distribution.
        layers: Block indices to intervene at.
        spec: How to fit and apply each map, and which map (``MapSpec.kind``: "ot",
            "mean_shift", "per_neuron_ot"); default ``RECOMMENDED_MAP``, the gated
            Ledoit-Wolf map; ``PLAIN_MAP`` is the paper's plain one. Change one field with
            ``dataclasses.replace(RECOMMENDED_MAP, n_components=32)``.
        collect: How the prompts are run (``CollectOptions``: fitting positions, batch size,
            system prompt, progress).
        placement: The hook point, sequential fitting and where the hooks apply
            (``Placement``; default ``resid_pre``, sequential, where the maps were fitted plus
            every generated token, never the first position).
        training: Activations of these prompts already collected (``collect_every_layer``,
            with the same ``collect``), used instead of a new pass wherever the unmodified
            model's activations are needed.

    Example:
        >>> from tl_ot_ablation.lens.tiny import tiny_model
        >>> harmful, harmless = ["how to x", "make y", "do z now"], ["bake a", "sing b", "c d e"]
        >>> quiet = CollectOptions(progress=False)
        >>> ot = fit_ot_ablation(tiny_model(), harmful, harmless, layers=[1], collect=quiet,
        ...                      spec=MapSpec(n_components=4))
        >>> list(ot)
        ['blocks.1.hook_resid_pre']

    Returns:
        An ``InterventionSet`` with one map per hook point, and the fit's settings in
        ``metadata``. A hook point where both classes' activations are identical (e.g. layer 0
        at the post-instruction positions of a rotary model) gets no map, with a warning, and
        is listed in ``metadata["identical_layers"]``.

    Raises:
        IdenticalClassesError: (a ``ValueError``) if the prompt sets are the same, or the
            activations are identical at every chosen hook point.
    """
    spec = RECOMMENDED_MAP if spec is None else spec
    collect = CollectOptions() if collect is None else collect
    placement = Placement() if placement is None else placement
    check_distinct_prompts(harmful, harmless)
    if spec.kind == "per_neuron_ot":  # fitted from statistics; only the ridge applies
        spec = MapSpec(n_components=None, reg=spec.reg, kind=spec.kind)
    chosen = check_layers(model, layers)
    names = [hook_name(placement.hook, layer) for layer in chosen]
    where = placement.apply_positions
    where = apply_positions_for(collect.positions) if where is None else where
    n_post = span_length(model, collect, collect.positions, where)
    fields = dataclasses.asdict(spec)
    method = fields.pop("kind")  # recorded as the method, before the other settings
    metadata = _fit_metadata(
        model,
        method,
        harmful,
        harmless,
        hook_names=names,
        layers=chosen,
        positions=collect.positions,
        sequential=placement.sequential,
        n_harmful=n_prompts(harmful),
        n_harmless=n_prompts(harmless),
        **fields,
    )
    maps: dict[str, Any] = {}
    identical: dict[str, IdenticalClassesError] = {}

    def fit_at(name: str, sources: Mapping[str, Any], targets: Mapping[str, Any]) -> None:
        try:
            with _fitting_at(name):
                maps[name] = fit_map(sources[name], targets[name], spec)
        except IdenticalClassesError as err:
            identical[name] = err

    def collect_at(names: list[str], earlier: list[tuple[str, Any]]) -> Any:
        return collect_pair(
            model,
            harmful,
            harmless,
            names,
            collect,
            rows=spec.needs_rows,
            fwd_hooks=earlier,
            training=training,
        )

    if placement.sequential:
        for name in names:
            earlier = (
                InterventionSet(maps, positions=where, n_post_instruction=n_post).fwd_hooks()
                if maps
                else []
            )
            sources, targets = collect_at([name], earlier)
            fit_at(name, sources, targets)
    else:
        sources, targets = collect_at(names, [])
        for name in names:
            fit_at(name, sources, targets)
    if identical:
        _skip_identical(identical, maps, metadata, chosen, names)
    return InterventionSet(maps, positions=where, n_post_instruction=n_post, metadata=metadata)


def _skip_identical(
    identical: Mapping[str, IdenticalClassesError],
    maps: Mapping[str, Any],
    metadata: dict[str, Any],
    layers: Sequence[int],
    names: Sequence[str],
) -> None:
    """Refuse a fit whose every hook point has identical classes; else leave those out (the map
    there would be the identity, so a set without it acts the same), record them and warn."""
    first = next(iter(identical.values()))
    if not maps:
        if len(identical) == 1:
            raise first
        raise IdenticalClassesError(
            f"the harmful and harmless activations are identical at every chosen hook point "
            f"({', '.join(identical)}); at the first: {first}"
        ) from first
    metadata["hook_names"] = list(maps)
    metadata["layers"] = [layer for layer, name in zip(layers, names, strict=True) if name in maps]
    metadata["identical_layers"] = [
        layer for layer, name in zip(layers, names, strict=True) if name in identical
    ]
    warnings.warn(
        f"no map at {', '.join(identical)}: the harmful and harmless activations are identical "
        "there (up to rounding), so the map would be the identity (at the first layers the "
        "fitting positions can hold the same template tokens for every prompt); the set has "
        f"maps at {', '.join(maps)} only",
        UserWarning,
        stacklevel=stacklevel_outside(sys._getframe()),
    )


@dataclass(frozen=True)
class _LayerMeans:
    """Both classes' statistics at one layer's hook point, and where a one-layer fit applies."""

    source: GaussianStats
    target: GaussianStats
    name: str
    hook: str
    where: PositionSpec
    collect: CollectOptions

    def interventions(
        self, model: Any, maps: dict[str, Any], metadata: dict[str, Any]
    ) -> InterventionSet:
        positions = self.collect.positions
        return InterventionSet(
            maps,
            positions=self.where,
            n_post_instruction=span_length(model, self.collect, positions, self.where),
            metadata=metadata,
        )


def _layer_means(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    layer: int,
    collect: CollectOptions | None,
    placement: Placement | None,
    training: TrainingActivations | None,
) -> _LayerMeans:
    """The statistics a one-layer fit (direction ablation, ActAdd) needs; it applies at every
    position unless its ``Placement`` says otherwise."""
    collect = CollectOptions() if collect is None else collect
    placement = Placement() if placement is None else placement
    where = "all" if placement.apply_positions is None else placement.apply_positions
    check_layers(model, [layer])
    check_distinct_prompts(harmful, harmless)
    name = hook_name(placement.hook, layer)
    sources, targets = collect_pair(model, harmful, harmless, [name], collect, training=training)
    return _LayerMeans(sources[name], targets[name], name, placement.hook, where, collect)


def fit_direction_ablation(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    layer: int,
    *,
    collect: CollectOptions | None = None,
    placement: Placement | None = None,
    training: TrainingActivations | None = None,
) -> InterventionSet:
    """Arditi et al.'s refusal-direction ablation: the unit difference of means at one layer
    (read at ``placement.hook``), projected out of every layer's ``resid_pre``, ``resid_mid``
    and ``resid_post`` (at ``placement.apply_positions``, default every position).

    ``collect``, ``placement`` and ``training`` as in ``fit_ot_ablation``."""
    means = _layer_means(model, harmful, harmless, layer, collect, placement, training)
    with _fitting_at(means.name):
        ablation = DirectionAblation.from_stats(means.source, means.target)
    names = [
        hook_name(kind, i)
        for i in range(model.cfg.n_layers)
        for kind in ("resid_pre", "resid_mid", "resid_post")
    ]
    metadata = _fit_metadata(
        model,
        "direction_ablation",
        harmful,
        harmless,
        direction_layer=layer,
        hook=means.hook,
        positions=means.collect.positions,
    )
    return means.interventions(model, dict.fromkeys(names, ablation), metadata)


def fit_actadd(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    layer: int,
    *,
    coefficient: float = 1.0,
    collect: CollectOptions | None = None,
    placement: Placement | None = None,
    training: TrainingActivations | None = None,
) -> InterventionSet:
    """Add ``coefficient × (mean harmless − mean harmful)`` at one layer's hook point
    (``placement.hook``, applied at ``placement.apply_positions``, default every position).

    ``collect``, ``placement`` and ``training`` as in ``fit_ot_ablation``."""
    means = _layer_means(model, harmful, harmless, layer, collect, placement, training)
    with _fitting_at(means.name):
        add = ActAdd.from_stats(means.source, means.target).with_strength(coefficient)
    metadata = _fit_metadata(
        model,
        "actadd",
        harmful,
        harmless,
        layer=layer,
        hook=means.hook,
        coefficient=coefficient,
        positions=means.collect.positions,
    )
    return means.interventions(model, {means.name: add}, metadata)
