"""Fit interventions on a model: OT ablation (and its baselines) per layer, direction ablation.

``fit_ot_ablation`` fits one map per chosen layer at ``blocks.{l}.hook_{hook}``. With
``sequential=True`` the map at a later layer is fitted on activations already transported by
the maps at the earlier chosen layers (applied where they will be applied at inference), so it
sees the distribution it will actually receive; ``sequential=False`` fits every layer from one
pass. ``fit_direction_ablation`` does what Arditi et al. (2024) do: one direction, read at one
layer, projected out of every layer's ``resid_pre``, ``resid_mid`` and ``resid_post`` at every
position. ``fit_actadd`` adds the mean difference at one layer.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from ..core.baselines import ActAdd, DirectionAblation, PerNeuronOT
from ..core.gate import GateKind
from ..core.ot_map import DEFAULT_REG, BasisChoice, Estimator, GaussianOTMap, MeanShift, Part
from ..core.stats import GaussianStats
from .collect import (
    FitPositions,
    Prompts,
    check_layers,
    collect_activations,
    collect_stats,
    hook_name,
)
from .hooks import PositionSpec
from .intervention_set import InterventionSet
from .prompts import post_instruction_length

Method = Literal["ot", "mean_shift", "per_neuron_ot"]
StatsPair = tuple[Mapping[str, GaussianStats], Mapping[str, GaussianStats]]
RowsPair = tuple[Mapping[str, Tensor], Mapping[str, Tensor]]
DEFAULT_N_COMPONENTS = 64


def prompts_hash(*prompt_sets: Prompts) -> str:
    """SHA-256 (first 16 hex digits) of the prompt sets, recorded with every fit."""
    digest = hashlib.sha256()
    for prompts in prompt_sets:
        if isinstance(prompts, tuple):
            for tensor in prompts:
                digest.update(tensor.cpu().numpy().tobytes())
        else:
            digest.update(json.dumps(list(prompts)).encode())
    return digest.hexdigest()[:16]


def apply_positions_for(positions: FitPositions) -> PositionSpec:
    """Where to apply a map fitted at ``positions``: where it was fitted (plus generated tokens)."""
    return slice(1, None) if positions == "all" else positions


def _n_prompts(prompts: Prompts) -> int:
    """How many prompts: instructions, or rows of an ``(input_ids, attention_mask)`` pair."""
    return len(prompts[0]) if isinstance(prompts, tuple) else len(prompts)


def _fit_metadata(
    model: Any, method: str, harmful: Prompts, harmless: Prompts, **settings: Any
) -> dict[str, Any]:
    """What every fit records: the model, the method, the prompts' hash and its settings."""
    return {
        "model": getattr(model.cfg, "model_name", None),
        "d_model": model.cfg.d_model,
        "n_layers": model.cfg.n_layers,
        "method": method,
        "prompts_sha256": prompts_hash(harmful, harmless),
        **settings,
    }


def _from_cache(
    cached: tuple[Mapping[str, Any], Mapping[str, Any]] | None,
    names: Sequence[str],
    fwd_hooks: Sequence[tuple[str, Any]],
) -> Any:
    """The cached pair restricted to ``names``, or ``None`` when it cannot stand in (a name is
    missing, or earlier hooks change the activations)."""
    if cached is None or fwd_hooks or not all(n in cached[0] and n in cached[1] for n in names):
        return None
    return {n: cached[0][n] for n in names}, {n: cached[1][n] for n in names}


def collect_stats_pair(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    names: Sequence[str],
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    cached: StatsPair | None = None,
    **options: Any,
) -> StatsPair:
    """Streamed statistics of both prompt sets at ``names`` (``collect_stats`` options).

    ``cached`` statistics (of the same prompts and options) are reused when they hold every
    name and no earlier hooks change the activations.
    """
    hit = _from_cache(cached, names, fwd_hooks)
    if hit is not None:
        return hit
    return (
        collect_stats(model, harmful, names, fwd_hooks=fwd_hooks, **options),
        collect_stats(model, harmless, names, fwd_hooks=fwd_hooks, **options),
    )


def collect_rows_pair(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    names: Sequence[str],
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    cached: RowsPair | None = None,
    **options: Any,
) -> RowsPair:
    """The activation rows of both prompt sets at ``names`` (for estimators that need rows).

    Same contract as ``collect_stats_pair``, with ``cached`` rows instead of statistics.
    """
    hit = _from_cache(cached, names, fwd_hooks)
    if hit is not None:
        return hit
    # Rows stay on their layer's device: the fit runs there, with no round trip to the CPU.
    options = {"device": None, **options}
    return (
        collect_activations(model, harmful, names, fwd_hooks=fwd_hooks, **options),
        collect_activations(model, harmless, names, fwd_hooks=fwd_hooks, **options),
    )


ROWS_CACHE_BYTES = 4 * 2**30
"""Keep every layer's training rows in memory only below this size (float32 bytes)."""


@dataclass
class TrainingActivations:
    """Both prompt sets' activations at many hook points from one pass: the statistics always,
    the rows too when an estimator needs them (Ledoit-Wolf), so no fit repeats the pass."""

    stats: StatsPair
    rows: RowsPair | None = None

    def cached(self) -> dict[str, Any]:
        """``fit_ot_ablation`` keyword arguments that reuse these activations."""
        return {"cached_stats": self.stats, "cached_rows": self.rows}


def rows_bytes(
    model: Any, n_prompts: int, n_names: int, positions: str, system: str | None = None
) -> int | None:
    """Float32 bytes of the rows ``n_prompts`` prompts give at ``n_names`` hook points (``None``
    when it depends on the prompts' lengths, for ``positions="all"``)."""
    n_post = post_instruction_length(model.tokenizer, system=system)
    per_prompt = {"last": 1, "post_instruction": n_post}
    if positions not in per_prompt:
        return None
    return n_prompts * per_prompt[positions] * n_names * model.cfg.d_model * 4


def collect_training(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    names: Sequence[str],
    *,
    keep_rows: bool = False,
    **options: Any,
) -> TrainingActivations:
    """One pass per prompt set over ``names`` (``collect_stats`` options): statistics, and with
    ``keep_rows`` the rows as well (the statistics are then computed from them)."""
    if not keep_rows:
        return TrainingActivations(collect_stats_pair(model, harmful, harmless, names, **options))
    rows = collect_rows_pair(model, harmful, harmless, names, **options)
    stats = (
        {name: GaussianStats.from_rows(block) for name, block in rows[0].items()},
        {name: GaussianStats.from_rows(block) for name, block in rows[1].items()},
    )
    return TrainingActivations(stats, rows)


def collect_every_layer(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    *,
    estimator: str = "ridge",
    hook: str = "resid_pre",
    **options: Any,
) -> TrainingActivations:
    """``collect_training`` at every layer's ``hook``: one pass per prompt set that ranks the
    layers and feeds every later fit. The rows are kept too when ``estimator`` needs them
    (Ledoit-Wolf) and they fit in ``ROWS_CACHE_BYTES``."""
    names = [hook_name(hook, layer) for layer in range(model.cfg.n_layers)]
    size = rows_bytes(
        model,
        _n_prompts(harmful) + _n_prompts(harmless),
        len(names),
        options.get("positions", "post_instruction"),
        options.get("system"),
    )
    keep_rows = estimator == "ledoit_wolf" and size is not None and size <= ROWS_CACHE_BYTES
    return collect_training(model, harmful, harmless, names, keep_rows=keep_rows, **options)


def _fit_one(
    method: Method,
    source: GaussianStats | Tensor,
    target: GaussianStats | Tensor,
    n_components: int | None,
    reg: float,
    basis: BasisChoice,
    estimator: Estimator = "ridge",
    map_options: Mapping[str, Any] | None = None,
) -> Any:
    if method == "per_neuron_ot":
        if isinstance(source, Tensor) or isinstance(target, Tensor):
            raise ValueError("per_neuron_ot is fitted from statistics; use estimator='ridge'")
        return PerNeuronOT.from_stats(source, target, reg=reg)
    if method not in ("ot", "mean_shift"):
        raise ValueError(f"method must be 'ot', 'mean_shift' or 'per_neuron_ot', got {method!r}")
    cls = GaussianOTMap if method == "ot" else MeanShift
    common: dict[str, Any] = {
        "n_components": n_components,
        "reg": reg,
        "basis": basis,
        "estimator": estimator,
    }
    if isinstance(source, Tensor) and isinstance(target, Tensor):
        fitted = cls.fit(source, target, route="rows", **common)
    elif isinstance(source, GaussianStats) and isinstance(target, GaussianStats):
        fitted = cls.from_stats(source, target, **common)
    else:
        raise TypeError("source and target must both be statistics or both rows")
    return fitted.with_options(**(map_options or {}))


def fit_ot_ablation(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    *,
    layers: Sequence[int],
    hook: str = "resid_pre",
    n_components: int | None = DEFAULT_N_COMPONENTS,
    reg: float = DEFAULT_REG,
    basis: BasisChoice = "pca",
    positions: FitPositions = "post_instruction",
    apply_positions: PositionSpec | None = None,
    sequential: bool = True,
    method: Method = "ot",
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = True,
    cached_stats: StatsPair | None = None,
    cached_rows: RowsPair | None = None,
    estimator: Estimator = "ridge",
    gate: GateKind = "none",
    gate_prior: float = 0.5,
    preserve_norm: bool = False,
    part: Part = "full",
) -> InterventionSet:
    """Fit a transport map from harmful to harmless activations at each of ``layers``.

    Args:
        model: A ``TransformerBridge`` in eval mode.
        harmful: Instructions (or tokens) to move away from: the source distribution.
        harmless: Instructions (or tokens) to move towards: the target distribution.
        layers: Block indices to intervene at.
        hook: ``"resid_pre"``, ``"resid_mid"`` or ``"resid_post"``.
        n_components: PCA subspace size ``k`` (``None``: full space).
        reg: Relative ridge on the covariances.
        basis: "pca" or "pca+mean_diff" (see ``GaussianOTMap.fit``).
        positions: Fitting rows: "post_instruction" (default), "last" or "all".
        apply_positions: Where the hooks apply (default: where the maps were fitted, plus
            every generated token; never the first position).
        sequential: Fit later layers on activations transported by the earlier maps.
        method: "ot" (the Bures-Wasserstein map), "mean_shift" (A = I) or "per_neuron_ot".
        batch_size: Prompts per forward pass.
        system: Optional system prompt.
        progress: Show progress bars.
        cached_stats: ``(harmful, harmless)`` statistics by hook name, already collected from
            these prompts with these options (e.g. for every layer at once): used instead of a
            new pass wherever the unmodified model's activations are what is needed.
        cached_rows: The same for the activation rows (used by the Ledoit-Wolf estimator).
        estimator: Covariance estimator, "ridge", "oas" or "ledoit_wolf" (collects rows
            instead of streamed statistics).
        gate: "none", "posterior" or "hard": scale each edit by how harmful the activation
            looks under the two fitted Gaussians (``tl_ot_ablation.gate``).
        gate_prior: Prior probability of harmful in the gate.
        preserve_norm: Keep each edited activation's norm.
        part: "full" or "covariance" (the linear part without the translation).

    Returns:
        An ``InterventionSet`` with one map per hook point, and the fit's settings in
        ``metadata``.
    """
    chosen = check_layers(model, layers)
    names = [hook_name(hook, layer) for layer in chosen]
    n_post = post_instruction_length(model.tokenizer, system=system)
    where = apply_positions_for(positions) if apply_positions is None else apply_positions
    metadata = _fit_metadata(
        model,
        method,
        harmful,
        harmless,
        hook_names=names,
        layers=chosen,
        positions=positions,
        n_components=n_components,
        reg=reg,
        basis=basis,
        sequential=sequential,
        estimator=estimator,
        gate=gate,
        gate_prior=gate_prior,
        preserve_norm=preserve_norm,
        part=part,
        n_harmful=_n_prompts(harmful),
        n_harmless=_n_prompts(harmless),
    )
    options: dict[str, Any] = {
        "positions": positions,
        "batch_size": batch_size,
        "system": system,
        "progress": progress,
    }
    maps: dict[str, Any] = {}
    needs_rows = estimator == "ledoit_wolf"
    collect = collect_rows_pair if needs_rows else collect_stats_pair
    cached: Any = cached_rows if needs_rows else cached_stats
    map_options = {
        "gate": gate,
        "gate_prior": gate_prior,
        "preserve_norm": preserve_norm,
        "part": part,
    }

    def fit_one(source: Any, target: Any) -> Any:
        if method == "per_neuron_ot":
            return _fit_one(method, source, target, n_components, reg, basis, estimator)
        return _fit_one(method, source, target, n_components, reg, basis, estimator, map_options)

    if sequential:
        for name in names:
            earlier = (
                InterventionSet(maps, positions=where, n_post_instruction=n_post).fwd_hooks()
                if maps
                else []
            )
            sources, targets = collect(model, harmful, harmless, [name], earlier, cached, **options)
            maps[name] = fit_one(sources[name], targets[name])
    else:
        sources, targets = collect(model, harmful, harmless, names, cached=cached, **options)
        for name in names:
            maps[name] = fit_one(sources[name], targets[name])
    return InterventionSet(maps, positions=where, n_post_instruction=n_post, metadata=metadata)


def _mean_difference_stats(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    layer: int,
    hook: str,
    positions: FitPositions,
    batch_size: int,
    system: str | None,
    progress: bool,
    cached_stats: StatsPair | None,
) -> tuple[GaussianStats, GaussianStats]:
    check_layers(model, [layer])
    name = hook_name(hook, layer)
    sources, targets = collect_stats_pair(
        model,
        harmful,
        harmless,
        [name],
        cached=cached_stats,
        positions=positions,
        batch_size=batch_size,
        system=system,
        progress=progress,
    )
    return sources[name], targets[name]


def fit_direction_ablation(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    *,
    layer: int,
    hook: str = "resid_pre",
    positions: FitPositions = "post_instruction",
    apply_positions: PositionSpec = "all",
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = True,
    cached_stats: StatsPair | None = None,
) -> InterventionSet:
    """Arditi et al.'s refusal-direction ablation: the unit difference of means at one layer,
    projected out of every layer's ``resid_pre``, ``resid_mid`` and ``resid_post``."""
    source, target = _mean_difference_stats(
        model, harmful, harmless, layer, hook, positions, batch_size, system, progress, cached_stats
    )
    ablation = DirectionAblation.from_stats(source, target)
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
        hook=hook,
        positions=positions,
    )
    return InterventionSet(
        dict.fromkeys(names, ablation),
        positions=apply_positions,
        n_post_instruction=post_instruction_length(model.tokenizer, system=system),
        metadata=metadata,
    )


def fit_actadd(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    *,
    layer: int,
    hook: str = "resid_pre",
    coefficient: float = 1.0,
    positions: FitPositions = "post_instruction",
    apply_positions: PositionSpec = "all",
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = True,
    cached_stats: StatsPair | None = None,
) -> InterventionSet:
    """Add ``coefficient × (mean harmless − mean harmful)`` at one layer's hook point."""
    source, target = _mean_difference_stats(
        model, harmful, harmless, layer, hook, positions, batch_size, system, progress, cached_stats
    )
    add = ActAdd.from_stats(source, target).with_strength(coefficient)
    metadata = _fit_metadata(
        model,
        "actadd",
        harmful,
        harmless,
        layer=layer,
        hook=hook,
        coefficient=coefficient,
        positions=positions,
    )
    return InterventionSet(
        {hook_name(hook, layer): add},
        positions=apply_positions,
        n_post_instruction=post_instruction_length(model.tokenizer, system=system),
        metadata=metadata,
    )
