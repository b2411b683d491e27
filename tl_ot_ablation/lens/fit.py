"""Fit interventions on a model: OT ablation (and its baselines) per layer, direction ablation.

``fit_ot_ablation`` fits one map per chosen layer at ``blocks.{l}.hook_{hook}``. With
``sequential=True`` the map at a later layer is fitted on activations already transported by
the maps at the earlier chosen layers (applied where they will be applied at inference), so it
sees the distribution it will actually receive; ``sequential=False`` fits every layer from one
pass. ``fit_direction_ablation`` does what Arditi et al. (2024) do: one direction, read at one
layer, projected out of every layer's ``resid_pre``, ``resid_mid`` and ``resid_post`` at every
position. ``fit_actadd`` adds the mean difference at one layer.

Options are held once: ``MapSpec`` says how each transport map is fitted and applied,
``CollectOptions`` how the prompts are run. Every fit takes either object or their fields as
keyword arguments (``n_components=32, progress=False``). ``TrainingActivations`` (one pass over
many hook points) can stand in for a fit's own pass; it carries a fingerprint of the prompts,
positions, system prompt and chat template it came from, and a fit with other ones raises.
"""

import dataclasses
import hashlib
import json
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ..core.baselines import ActAdd, DirectionAblation, PerNeuronOT
from ..core.errors import UserInputError
from ..core.gate import GateKind
from ..core.ot_map import (
    DEFAULT_REG,
    BasisChoice,
    Estimator,
    GaussianOTMap,
    IdenticalClassesError,
    MeanShift,
    Part,
    check_map_options,
    check_reg,
)
from ..core.stats import GaussianStats
from ..core.validate import stacklevel_outside
from .collect import (
    CollectOptions,
    FitPositions,
    Prompts,
    check_layers,
    collect_activations,
    collect_stats,
    hook_name,
)
from .compatibility import model_signature
from .hooks import PositionSpec
from .intervention_set import InterventionSet
from .prompts import post_instruction_length

MapKind = Literal["ot", "mean_shift", "per_neuron_ot"]
StatsPair = tuple[Mapping[str, GaussianStats], Mapping[str, GaussianStats]]
RowsPair = tuple[Mapping[str, Tensor], Mapping[str, Tensor]]
DEFAULT_N_COMPONENTS = 64
"""PCA subspace size ``k`` of every fit and job unless told otherwise (chosen by held-out
likelihood on the embedded model; experiments/README.md)."""


@dataclass(frozen=True)
class MapSpec:
    """How each transport map is fitted and applied (``GaussianOTMap`` / ``MeanShift``).

    ``MapSpec()`` is the paper's plain map (sample covariances with a small ridge, no gate:
    ``PLAIN_MAP``); ``RECOMMENDED_MAP`` (Ledoit-Wolf covariances, the posterior gate) is what
    ``fit_ot_ablation`` and every job (fit, compare, sweep) use by default.

    Attributes:
        n_components: PCA subspace size ``k`` (``None``: the full space).
        reg: Relative ridge on the covariances.
        basis: "pca" or "pca+mean_diff" (see ``GaussianOTMap.fit``).
        estimator: Covariance estimator, "ridge", "oas" or "ledoit_wolf" (needs rows).
        gate: "none", "posterior" or "hard" (``core.gate``).
        gate_prior: Prior probability of harmful in the gate.
        preserve_norm: Keep each edited activation's norm.
        part: "full", or "covariance" (the linear part without the translation).
    """

    n_components: int | None = DEFAULT_N_COMPONENTS
    reg: float = DEFAULT_REG
    basis: BasisChoice = "pca"
    estimator: Estimator = "ridge"
    gate: GateKind = "none"
    gate_prior: float = 0.5
    preserve_norm: bool = False
    part: Part = "full"

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


def split_options(
    spec: MapSpec | None, options: Mapping[str, Any], *, allow_map: bool = True
) -> tuple[MapSpec, CollectOptions]:
    """``MapSpec`` and ``CollectOptions`` from a base ``spec`` and keyword overrides of either's
    fields; an unknown keyword raises ``TypeError`` listing the known ones."""
    map_fields = {f.name for f in dataclasses.fields(MapSpec)} if allow_map else set()
    collect_fields = {f.name for f in dataclasses.fields(CollectOptions)}
    unknown = sorted(set(options) - map_fields - collect_fields)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {unknown}; accepted: {sorted(map_fields)} "
            f"(MapSpec) and {sorted(collect_fields)} (CollectOptions)"
        )
    spec = dataclasses.replace(
        spec or MapSpec(), **{k: v for k, v in options.items() if k in map_fields}
    )
    collect = CollectOptions(**{k: v for k, v in options.items() if k in collect_fields})
    return spec, collect


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


def training_fingerprint(
    model: Any, harmful: Prompts, harmless: Prompts, options: CollectOptions
) -> str:
    """What activations depend on besides the weights: the prompts, the fitting positions, the
    system prompt and the chat template, if used (hex SHA-256, first 16 digits)."""
    template = getattr(model.tokenizer, "chat_template", None) if options.chat else "raw text"
    described = json.dumps(
        [prompts_hash(harmful, harmless), options.positions, options.system, template]
    )
    return hashlib.sha256(described.encode()).hexdigest()[:16]


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


def n_prompts(prompts: Prompts) -> int:
    """How many prompts: instructions, or rows of an ``(input_ids, attention_mask)`` pair."""
    return len(prompts[0]) if isinstance(prompts, tuple) else len(prompts)


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


@dataclass
class TrainingActivations:
    """Both prompt sets' activations at many hook points from one pass: the statistics always,
    the rows too when an estimator needs them (Ledoit-Wolf), so no fit repeats the pass.

    Attributes:
        stats: ``(harmful, harmless)`` statistics by hook name.
        rows: The same for the rows, or ``None``.
        fingerprint: ``training_fingerprint`` of the prompts and options they came from.
    """

    stats: StatsPair
    rows: RowsPair | None = None
    fingerprint: str = field(default="", kw_only=True)

    def check(self, fingerprint: str) -> None:
        """Raise unless these activations came from the prompts and options a fit uses."""
        if self.fingerprint != fingerprint:
            raise UserInputError(
                f"the cached training activations (fingerprint {self.fingerprint or 'none'}) "
                f"were not collected from these prompts, positions, system prompt and chat "
                f"template (fingerprint {fingerprint}); collect them again with "
                "collect_every_layer(model, harmful, harmless, ...) using the fit's options"
            )

    def lookup(self, names: Sequence[str], *, rows: bool) -> Any:
        """The cached pair restricted to ``names``, or ``None`` if a name (or the rows) is
        missing."""
        pair = self.rows if rows else self.stats
        if pair is None or not all(n in pair[0] and n in pair[1] for n in names):
            return None
        return {n: pair[0][n] for n in names}, {n: pair[1][n] for n in names}


def collect_pair(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    names: Sequence[str],
    options: CollectOptions,
    *,
    rows: bool = False,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    training: TrainingActivations | None = None,
) -> Any:
    """Statistics (or, with ``rows``, the activation rows) of both prompt sets at ``names``.

    ``training`` stands in for the pass when it holds every name and no earlier hooks change
    the activations; it must come from the same prompts and options (checked).
    """
    if training is not None:
        training.check(training_fingerprint(model, harmful, harmless, options))
        if not fwd_hooks:
            hit = training.lookup(names, rows=rows)
            if hit is not None:
                return hit
    kwargs = {**options.kwargs(), "fwd_hooks": fwd_hooks}
    if rows:  # rows stay on their layer's device: the fit runs there, no round trip
        return (
            collect_activations(model, harmful, names, device=None, **kwargs),
            collect_activations(model, harmless, names, device=None, **kwargs),
        )
    return (
        collect_stats(model, harmful, names, **kwargs),
        collect_stats(model, harmless, names, **kwargs),
    )


def collect_stats_pair(
    model: Any, harmful: Prompts, harmless: Prompts, names: Sequence[str], **options: Any
) -> StatsPair:
    """Streamed statistics of both prompt sets at ``names`` (``CollectOptions`` fields)."""
    return collect_pair(model, harmful, harmless, names, CollectOptions(**options))


ROWS_CACHE_BYTES = 4 * 2**30
"""Keep every layer's training rows in memory only below this size (float32 bytes)."""


def rows_bytes(
    model: Any, n_rows_prompts: int, n_names: int, positions: str, system: str | None = None
) -> int | None:
    """Float32 bytes of the rows ``n_rows_prompts`` prompts give at ``n_names`` hook points
    (``None`` when it depends on the prompts' lengths, for ``positions="all"``)."""
    if positions == "last":
        per_prompt = 1
    elif positions == "post_instruction":
        per_prompt = post_instruction_length(model.tokenizer, system=system)
    else:
        return None
    return n_rows_prompts * per_prompt * n_names * model.cfg.d_model * 4


def span_length(model: Any, collect: CollectOptions, *positions: object) -> int | None:
    """The chat template's post-instruction length when one of ``positions`` (fitting or
    applying) is ``"post_instruction"``, else ``None``: a model without a template fits and
    applies at ``"last"`` / ``"all"`` / a slice without one."""
    if "post_instruction" not in [p for p in positions if isinstance(p, str)]:
        return None
    return post_instruction_length(model.tokenizer, system=collect.system)


def collect_training(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    names: Sequence[str],
    *,
    keep_rows: bool = False,
    **options: Any,
) -> TrainingActivations:
    """One pass per prompt set over ``names`` (``CollectOptions`` fields): statistics, and with
    ``keep_rows`` the rows as well (the statistics are then computed from them)."""
    collect = CollectOptions(**options)
    fingerprint = training_fingerprint(model, harmful, harmless, collect)
    if not keep_rows:
        stats = collect_pair(model, harmful, harmless, names, collect)
        return TrainingActivations(stats, fingerprint=fingerprint)
    rows = collect_pair(model, harmful, harmless, names, collect, rows=True)
    stats = (
        {name: GaussianStats.from_rows(block) for name, block in rows[0].items()},
        {name: GaussianStats.from_rows(block) for name, block in rows[1].items()},
    )
    return TrainingActivations(stats, rows, fingerprint=fingerprint)


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
    collect = CollectOptions(**options)
    names = [hook_name(hook, layer) for layer in range(model.cfg.n_layers)]
    size = rows_bytes(
        model,
        n_prompts(harmful) + n_prompts(harmless),
        len(names),
        collect.positions,
        collect.system,
    )
    keep_rows = estimator == "ledoit_wolf" and size is not None and size <= ROWS_CACHE_BYTES
    return collect_training(model, harmful, harmless, names, keep_rows=keep_rows, **options)


def fit_map(kind: MapKind, source: GaussianStats | Tensor, target: Any, spec: MapSpec) -> Any:
    """One layer's map of ``kind`` from statistics or rows of both classes."""
    if kind == "per_neuron_ot":
        if not isinstance(source, GaussianStats) or not isinstance(target, GaussianStats):
            raise TypeError("per_neuron_ot is fitted from statistics, not rows")
        return PerNeuronOT.from_stats(source, target, reg=spec.reg)
    if kind not in ("ot", "mean_shift"):
        raise UserInputError(f"kind must be one of {get_args(MapKind)}, got {kind!r}")
    cls = GaussianOTMap if kind == "ot" else MeanShift
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
    *,
    layers: Sequence[int],
    spec: MapSpec | None = None,
    method: MapKind = "ot",
    hook: str = "resid_pre",
    sequential: bool = True,
    apply_positions: PositionSpec | None = None,
    training: TrainingActivations | None = None,
    **options: Any,
) -> InterventionSet:
    """Fit a transport map from harmful to harmless activations at each of ``layers``.

    Args:
        model: A ``TransformerBridge`` in eval mode.
        harmful: Instructions (or tokens) to move away from: the source distribution.
        harmless: Instructions (or tokens) to move towards: the target distribution.
        layers: Block indices to intervene at.
        spec: How to fit and apply each map (default ``RECOMMENDED_MAP``, the gated
            Ledoit-Wolf map; ``PLAIN_MAP`` is the paper's plain one).
        method: Map kind: "ot" (the Bures-Wasserstein map), "mean_shift" (A = I) or
            "per_neuron_ot" (uses ``spec.reg`` only).
        hook: ``"resid_pre"``, ``"resid_mid"`` or ``"resid_post"``.
        sequential: Fit later layers on activations transported by the earlier maps.
        apply_positions: Where the hooks apply (default: where the maps were fitted, plus
            every generated token; never the first position).
        training: Activations of these prompts already collected (``collect_every_layer``),
            used instead of a new pass wherever the unmodified model's activations are needed.
        **options: Fields of ``MapSpec`` (``n_components``, ``estimator``, ``gate``, ...)
            overriding ``spec``, and of ``CollectOptions`` (``positions``, ``batch_size``,
            ``system``, ``progress``).

    Returns:
        An ``InterventionSet`` with one map per hook point, and the fit's settings in
        ``metadata``. A hook point where both classes' activations are identical (e.g. layer 0
        at the post-instruction positions of a rotary model) gets no map, with a warning, and
        is listed in ``metadata["identical_layers"]``.

    Raises:
        IdenticalClassesError: (a ``ValueError``) if the prompt sets are the same, or the
            activations are identical at every chosen hook point.
    """
    spec, collect = split_options(RECOMMENDED_MAP if spec is None else spec, options)
    check_distinct_prompts(harmful, harmless)
    if method == "per_neuron_ot":  # fitted from statistics; only the ridge applies
        spec = MapSpec(n_components=None, reg=spec.reg)
    chosen = check_layers(model, layers)
    names = [hook_name(hook, layer) for layer in chosen]
    where = apply_positions_for(collect.positions) if apply_positions is None else apply_positions
    n_post = span_length(model, collect, collect.positions, where)
    metadata = _fit_metadata(
        model,
        method,
        harmful,
        harmless,
        hook_names=names,
        layers=chosen,
        positions=collect.positions,
        sequential=sequential,
        n_harmful=n_prompts(harmful),
        n_harmless=n_prompts(harmless),
        **dataclasses.asdict(spec),
    )
    maps: dict[str, Any] = {}
    identical: dict[str, IdenticalClassesError] = {}

    def fit_at(name: str, sources: Mapping[str, Any], targets: Mapping[str, Any]) -> None:
        try:
            with _fitting_at(name):
                maps[name] = fit_map(method, sources[name], targets[name], spec)
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

    if sequential:
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


def _mean_difference_stats(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    layer: int,
    hook: str,
    collect: CollectOptions,
    training: TrainingActivations | None,
) -> tuple[GaussianStats, GaussianStats]:
    check_layers(model, [layer])
    check_distinct_prompts(harmful, harmless)
    name = hook_name(hook, layer)
    sources, targets = collect_pair(model, harmful, harmless, [name], collect, training=training)
    return sources[name], targets[name]


def fit_direction_ablation(
    model: Any,
    harmful: Prompts,
    harmless: Prompts,
    *,
    layer: int,
    hook: str = "resid_pre",
    apply_positions: PositionSpec = "all",
    training: TrainingActivations | None = None,
    **options: Any,
) -> InterventionSet:
    """Arditi et al.'s refusal-direction ablation: the unit difference of means at one layer,
    projected out of every layer's ``resid_pre``, ``resid_mid`` and ``resid_post``.

    ``options`` are ``CollectOptions`` fields; ``training`` as in ``fit_ot_ablation``."""
    _, collect = split_options(None, options, allow_map=False)
    source, target = _mean_difference_stats(
        model, harmful, harmless, layer, hook, collect, training
    )
    with _fitting_at(hook_name(hook, layer)):
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
        positions=collect.positions,
    )
    return InterventionSet(
        dict.fromkeys(names, ablation),
        positions=apply_positions,
        n_post_instruction=span_length(model, collect, collect.positions, apply_positions),
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
    apply_positions: PositionSpec = "all",
    training: TrainingActivations | None = None,
    **options: Any,
) -> InterventionSet:
    """Add ``coefficient × (mean harmless − mean harmful)`` at one layer's hook point.

    ``options`` are ``CollectOptions`` fields; ``training`` as in ``fit_ot_ablation``."""
    _, collect = split_options(None, options, allow_map=False)
    source, target = _mean_difference_stats(
        model, harmful, harmless, layer, hook, collect, training
    )
    with _fitting_at(hook_name(hook, layer)):
        add = ActAdd.from_stats(source, target).with_strength(coefficient)
    metadata = _fit_metadata(
        model,
        "actadd",
        harmful,
        harmless,
        layer=layer,
        hook=hook,
        coefficient=coefficient,
        positions=collect.positions,
    )
    return InterventionSet(
        {hook_name(hook, layer): add},
        positions=apply_positions,
        n_post_instruction=span_length(model, collect, collect.positions, apply_positions),
        metadata=metadata,
    )
