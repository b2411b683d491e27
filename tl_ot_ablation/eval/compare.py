"""Side-by-side comparison of refusal interventions on the same prompts (issue 4's ``compare``).

Every method is fitted on one prompt split and evaluated on a disjoint one:

- harmful and harmless refusal rates (marker judge on greedy completions) and the
  generation-free refusal score (log-odds of refusal-starting tokens) on harmful prompts;
- damage on harmless prompts: first-token KL from the unmodified model, the perplexity of the
  unmodified model's own harmless completions and of plain prose under the intervention;
- the share of degenerate completions, so a 0 % refusal rate made of gibberish is visible.

With ``match_kl`` set, each method's strength is first searched so that its harmless KL matches
a budget (by default direction ablation's own KL), and the method is evaluated there.
"""

import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..core.ot_map import DEFAULT_REG
from ..lens.collect import check_layers
from ..lens.fit import (
    DEFAULT_N_COMPONENTS,
    StatsPair,
    TrainingActivations,
    collect_every_layer,
    fit_actadd,
    fit_direction_ablation,
    fit_ot_ablation,
    prompts_hash,
)
from ..lens.generation import generate_with_first_logprobs
from ..lens.intervention_set import InterventionSet
from .evaluate import completion_nll, text_hooks, text_nll
from .matched import StrengthMatch, match_strength
from .metrics import (
    Estimate,
    degenerate_rate,
    is_refusal,
    kl_divergence,
    perplexity,
    refusal_log_odds,
    refusal_rate,
    refusal_token_ids,
    with_ci,
)
from .selection import layers_by_w2, w2_by_layer

METHODS = (
    "none",
    "direction_ablation",
    "actadd",
    "mean_shift",
    "per_neuron_ot",
    "ot_full",
    "ot_selective",
)
"""Method names, in report order (the keys of ``results.json``'s ``methods``)."""


@dataclass
class CompareSettings:
    """What ``compare`` fits and how it evaluates (recorded in ``results.json``).

    Attributes:
        layers: Layers of the selective methods (ActAdd, mean shift, per-neuron OT,
            ``ot_selective``): a list, ``"auto"`` (default: the layer where harmful and
            harmless training activations are furthest apart by W2² / variance,
            ``selection.layers_by_w2``) or ``"middle"``.
        direction_layer: Layer whose mean difference gives the refusal direction (default:
            the middle layer).
        n_components: PCA subspace size ``k`` of the OT maps.
        reg: Relative ridge on the covariances.
        estimator: Covariance estimator of the OT maps ("ridge", "oas", "ledoit_wolf"); the
            default, with the posterior gate, is the variant that did best at matched damage
            (experiments/README.md).
        gate: Gate of the OT and mean-shift maps ("none", "posterior", "hard").
        preserve_norm: Norm-preserving OT maps.
        strength: Strength of every method when ``match_kl`` is ``None``.
        positions: Fitting positions ("post_instruction", "last" or "all").
        sequential: Fit later selected layers on transported activations.
        max_new_tokens: Greedy completion length.
        judge_tokens: Refusal markers are searched in the first this many tokens.
        batch_size: Prompts per forward pass.
        match_kl: ``"direction_ablation"`` (its KL is the budget), a number (the budget in
            nats) or ``None`` (no matching: every method at ``strength``).
        max_strength: Upper end of the strength search.
        bisection_steps: Search steps per method (after strength 1 and ``max_strength``).
        seed: Seeds torch and the bootstrap.
        methods: Which methods to run, a subset of ``METHODS`` ("none" is always run).
        system: Optional system prompt.
    """

    layers: list[int] | str = "auto"
    direction_layer: int | None = None
    n_components: int = DEFAULT_N_COMPONENTS
    reg: float = DEFAULT_REG
    estimator: str = "ledoit_wolf"
    gate: str = "posterior"
    preserve_norm: bool = False
    strength: float = 1.0
    positions: str = "post_instruction"
    sequential: bool = True
    max_new_tokens: int = 32
    judge_tokens: int = 32
    batch_size: int = 16
    match_kl: str | float | None = "direction_ablation"
    max_strength: float = 2.0
    bisection_steps: int = 6
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    system: str | None = None

    def resolve(self, n_layers: int) -> "CompareSettings":
        """A copy with the default layers filled in and the settings checked."""
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        if isinstance(self.match_kl, str) and self.match_kl != "direction_ablation":
            raise ValueError(
                f"match_kl must be 'direction_ablation', a KL budget in nats or None, got "
                f"{self.match_kl!r}"
            )
        if self.match_kl == "direction_ablation" and "direction_ablation" not in self.methods:
            raise ValueError("match_kl='direction_ablation' needs that method in `methods`")
        middle = n_layers // 2
        methods = tuple(m for m in METHODS if m in self.methods or m == "none")
        if isinstance(self.layers, str):
            if self.layers not in ("auto", "middle"):
                raise ValueError(f"layers must be a list, 'auto' or 'middle', got {self.layers!r}")
            layers: list[int] | str = [middle] if self.layers == "middle" else "auto"
        elif not self.layers:
            raise ValueError("layers is empty; name at least one layer, or 'auto'")
        else:
            layers = list(self.layers)
        return CompareSettings(
            **{
                **asdict(self),
                "layers": layers,
                "direction_layer": middle if self.direction_layer is None else self.direction_layer,
                "methods": methods,
            }
        )


@dataclass
class MethodResult:
    """One method's evaluation: its strength, metrics with CIs, and completions."""

    name: str
    strength: float | None
    metrics: dict[str, Estimate]
    completions: dict[str, list[str]]
    match: StrengthMatch | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    refused_harmful: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strength": self.strength,
            **{key: value.to_dict() for key, value in self.metrics.items()},
            "refused_harmful": self.refused_harmful,
            "matched": None if self.match is None else self.match.to_dict(),
            "fit": self.fit,
            "seconds": self.seconds,
        }


@dataclass
class EvalPrompts:
    """Held-out prompts: harmful and harmless instructions, and plain prose."""

    harmful: list[str]
    harmless: list[str]
    texts: list[str]


@dataclass
class Comparison:
    """Every method's result, the fitted sets and the settings used."""

    results: dict[str, MethodResult]
    interventions: dict[str, InterventionSet]
    settings: CompareSettings
    stats: StatsPair | None = None
    w2_by_layer: list[dict[str, int | float]] | None = None
    layer_choice: str = "given"


def at_strength(interventions: InterventionSet, strength: float) -> InterventionSet:
    """``interventions.with_strength(strength)`` without the extrapolation warning (strength > 1
    is what a matched-damage search asks for on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="strength=.* extrapolates", category=UserWarning)
        return interventions.with_strength(strength)


def _log(message: str, progress: bool) -> None:
    if progress:
        tqdm.write(f"[tl-ot-ablation] {message}", file=sys.stderr)


def collect_training_activations(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    settings: CompareSettings,
    *,
    progress: bool = True,
) -> TrainingActivations:
    """One pass over every layer's ``resid_pre`` for both training sets; the rows are kept too
    when the OT maps' estimator needs them and they fit in ``ROWS_CACHE_BYTES``."""
    uses_rows = bool({"mean_shift", "ot_full", "ot_selective"} & set(settings.methods))
    _log(f"collecting activations at all {model.cfg.n_layers} layers", progress)
    return collect_every_layer(
        model,
        harmful,
        harmless,
        estimator=settings.estimator if uses_rows else "ridge",
        positions=settings.positions,
        batch_size=settings.batch_size,
        system=settings.system,
        progress=progress,
    )


def choose_layers(
    settings: CompareSettings, stats: StatsPair, n_layers: int
) -> tuple[CompareSettings, list[dict[str, int | float]]]:
    """Settings with ``layers="auto"`` replaced by the top layer of ``layers_by_w2`` (computed
    from the training statistics alone), and the per-layer W2 table it was chosen from."""
    w2 = w2_by_layer(stats, n_layers, n_components=settings.n_components, reg=settings.reg)
    if settings.layers != "auto":
        return settings, w2
    return replace(settings, layers=layers_by_w2(w2)), w2


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
    if isinstance(settings.layers, str):
        raise ValueError(
            f"layers={settings.layers!r} must be resolved first: settings.resolve(n_layers), "
            "then choose_layers(settings, stats, n_layers) for 'auto'"
        )
    layers = check_layers(model, settings.layers)
    direction_layer = settings.direction_layer
    assert direction_layer is not None, "call settings.resolve(n_layers) first"
    if training is None:
        training = collect_training_activations(
            model, harmful, harmless, settings, progress=progress
        )
    common: dict[str, Any] = {
        "positions": settings.positions,
        "batch_size": settings.batch_size,
        "system": settings.system,
        "progress": progress,
        "cached_stats": training.stats,
    }
    ot_options = {
        **common,
        "cached_rows": training.rows,
        "n_components": settings.n_components,
        "reg": settings.reg,
        "estimator": settings.estimator,
        "gate": settings.gate,
        "preserve_norm": settings.preserve_norm,
    }
    builders: dict[str, Callable[[], InterventionSet]] = {
        "direction_ablation": lambda: fit_direction_ablation(
            model, harmful, harmless, layer=direction_layer, **common
        ),
        "actadd": lambda: fit_actadd(model, harmful, harmless, layer=layers[0], **common),
        "mean_shift": lambda: fit_ot_ablation(
            model,
            harmful,
            harmless,
            layers=layers,
            method="mean_shift",
            sequential=settings.sequential,
            **ot_options,
        ),
        "per_neuron_ot": lambda: fit_ot_ablation(
            model,
            harmful,
            harmless,
            layers=layers,
            method="per_neuron_ot",
            sequential=settings.sequential,
            **common,
            reg=settings.reg,
        ),
        # Every layer from the unmodified model's activations: fitting 28+ layers sequentially
        # would cost one (partial) pass per layer.
        "ot_full": lambda: fit_ot_ablation(
            model,
            harmful,
            harmless,
            layers=list(range(model.cfg.n_layers)),
            sequential=False,
            **ot_options,
        ),
        "ot_selective": lambda: fit_ot_ablation(
            model, harmful, harmless, layers=layers, sequential=settings.sequential, **ot_options
        ),
    }
    fitted = {}
    for name in settings.methods:
        if name != "none":
            _log(f"fitting {name}", progress)
            start = time.perf_counter()
            fitted[name] = builders[name]()
            fitted[name].metadata["fit_seconds"] = round(time.perf_counter() - start, 2)
    return fitted, training


@dataclass
class _Reference:
    harmless_logprobs: Tensor
    harmless_completions: list[str]


def _nonempty(prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[str], list[str]]:
    kept = [(p, c) for p, c in zip(prompts, completions, strict=True) if c]
    return [p for p, _ in kept], [c for _, c in kept]


def evaluate_method(
    model: Any,
    name: str,
    interventions: InterventionSet | None,
    prompts: EvalPrompts,
    settings: CompareSettings,
    reference: _Reference | None,
    *,
    progress: bool = True,
) -> tuple[MethodResult, _Reference]:
    """Generate, judge and score one method on the held-out prompts.

    ``reference`` is the unmodified model's evaluation (``None`` when evaluating it).
    """
    hooks = [] if interventions is None else interventions.fwd_hooks()
    options: dict[str, Any] = {
        "fwd_hooks": hooks,
        "max_new_tokens": settings.max_new_tokens,
        "batch_size": settings.batch_size,
        "system": settings.system,
        "progress": progress,
    }
    # Harmless prompts are generated on their own, in the same batches as the KL measured by
    # the matched-damage search (``harmless_kl``), so both see bit-identical first steps.
    harmful_out, harmful_logprobs = generate_with_first_logprobs(model, prompts.harmful, **options)
    harmless_out, harmless_logprobs = generate_with_first_logprobs(
        model, prompts.harmless, **options
    )
    if reference is None:
        reference = _Reference(harmless_logprobs, harmless_out)
    ref_prompts, ref_completions = _nonempty(prompts.harmless, reference.harmless_completions)
    if not ref_prompts:
        raise RuntimeError("the unmodified model's harmless completions are all empty")
    groups = [] if interventions is None else [interventions]
    nll = completion_nll(
        model,
        ref_prompts,
        ref_completions,
        interventions=groups,
        batch_size=settings.batch_size,
        system=settings.system,
    )
    # Fluency of what the method made the model say to harmful prompts: the unmodified model's
    # perplexity of those completions (gibberish scores high; refusals score low).
    fluent_prompts, fluent_completions = _nonempty(prompts.harmful, harmful_out)
    fluency = (
        completion_nll(
            model,
            fluent_prompts,
            fluent_completions,
            batch_size=settings.batch_size,
            system=settings.system,
        )
        if fluent_prompts
        else None
    )
    text_fwd_hooks = [] if interventions is None else text_hooks(interventions)
    text = text_nll(model, prompts.texts, fwd_hooks=text_fwd_hooks, batch_size=settings.batch_size)
    judge = {"first_n": settings.judge_tokens, "tokenizer": model.tokenizer}
    score = refusal_log_odds(harmful_logprobs, refusal_token_ids(model.tokenizer))
    kl = kl_divergence(reference.harmless_logprobs, harmless_logprobs)
    metrics = {
        "refusal_rate_harmful": refusal_rate(harmful_out, **judge),
        "refusal_rate_harmless": refusal_rate(harmless_out, **judge),
        "kl_harmless": with_ci(kl, seed=settings.seed),
        "ppl_harmless": perplexity(nll),
        "ppl_text": perplexity(text),
        "refusal_score_harmful": with_ci(score, seed=settings.seed),
        "degenerate_rate_harmful": degenerate_rate(harmful_out),
        "degenerate_rate_harmless": degenerate_rate(harmless_out),
    }
    if fluency is not None:  # absent when every harmful completion is empty
        metrics["ppl_harmful_base"] = perplexity(fluency)
    strength = None if interventions is None else interventions.strength
    result = MethodResult(
        name,
        strength,
        metrics,
        {"harmful": harmful_out, "harmless": harmless_out},
        fit={} if interventions is None else dict(interventions.metadata),
        refused_harmful=[int(is_refusal(text, **judge)) for text in harmful_out],
    )
    return result, reference


def harmless_kl(
    model: Any,
    interventions: InterventionSet,
    harmless: Sequence[str],
    reference_logprobs: Tensor,
    settings: CompareSettings,
) -> float:
    """Mean first-token KL on ``harmless`` under ``interventions`` (the matched-damage cost)."""
    _, logprobs = generate_with_first_logprobs(
        model,
        harmless,
        fwd_hooks=interventions.fwd_hooks(),
        max_new_tokens=1,
        batch_size=settings.batch_size,
        system=settings.system,
        progress=False,
    )
    return float(kl_divergence(reference_logprobs, logprobs).mean())


def run_comparison(
    model: Any,
    train_harmful: Sequence[str],
    train_harmless: Sequence[str],
    prompts: EvalPrompts,
    settings: CompareSettings | None = None,
    *,
    progress: bool = True,
) -> Comparison:
    """Fit every method on the training prompts and evaluate it on ``prompts``.

    With ``settings.match_kl``, each method (but the one defining the budget) is first set to
    the strength whose harmless KL matches the budget (``match_strength``).
    """
    n_layers = model.cfg.n_layers
    settings = (settings or CompareSettings()).resolve(n_layers)
    torch.manual_seed(settings.seed)
    training = collect_training_activations(
        model, train_harmful, train_harmless, settings, progress=progress
    )
    layer_choice = "w2_relative" if settings.layers == "auto" else "given"
    settings, w2 = choose_layers(settings, training.stats, n_layers)
    _log(f"selective layers ({layer_choice}): {settings.layers}", progress)
    fitted, _ = fit_methods(
        model, train_harmful, train_harmless, settings, training=training, progress=progress
    )
    _log("evaluating the unmodified model", progress)
    start = time.perf_counter()
    none, reference = evaluate_method(
        model, "none", None, prompts, settings, None, progress=progress
    )
    none.seconds = {"evaluate": round(time.perf_counter() - start, 2)}
    results = {"none": none}
    budget: float | None = None
    if isinstance(settings.match_kl, int | float):
        budget = float(settings.match_kl)
    for name, interventions in fitted.items():
        match = None
        start = time.perf_counter()
        sets_budget = name == "direction_ablation" and settings.match_kl == "direction_ablation"
        if budget is not None and not sets_budget:
            _log(f"{name}: bisecting its strength to a harmless KL of {budget:.4g}", progress)
            base = at_strength(interventions, 1.0)

            def damage_at(strength: float, base: InterventionSet = base) -> float:
                return harmless_kl(
                    model,
                    at_strength(base, strength),
                    prompts.harmless,
                    reference.harmless_logprobs,
                    settings,
                )

            match = match_strength(
                damage_at,
                budget,
                max_strength=settings.max_strength,
                steps=settings.bisection_steps,
            )
            interventions = at_strength(base, match.strength)
        elif settings.strength != 1.0:
            interventions = at_strength(interventions, settings.strength)
        searched = time.perf_counter()
        _log(f"evaluating {name}", progress)
        result, _ = evaluate_method(
            model, name, interventions, prompts, settings, reference, progress=progress
        )
        result.match = match
        result.seconds = {
            "search": round(searched - start, 2),
            "evaluate": round(time.perf_counter() - searched, 2),
        }
        results[name] = result
        if sets_budget:
            budget = result.metrics["kl_harmless"].value
            if not budget > 0:
                raise RuntimeError(
                    "direction ablation left the harmless next-token distribution unchanged "
                    "(KL 0), so it cannot set a damage budget; pass a number as match_kl"
                )
    return Comparison(results, fitted, settings, training.stats, w2, layer_choice)


def overlap(train: Sequence[str], held_out: Sequence[str]) -> list[str]:
    """Prompts found in both sets (compared after stripping whitespace and case)."""
    seen = {p.strip().lower() for p in train}
    return [p for p in held_out if p.strip().lower() in seen]


def comparison_record(
    comparison: Comparison,
    *,
    model_name: str,
    train: Mapping[str, Sequence[str]],
    held_out: EvalPrompts,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``results.json`` object (see the README's "results.json" section)."""
    return {
        "format": "tl_ot_ablation.compare/1",
        "model": model_name,
        "seed": comparison.settings.seed,
        "settings": asdict(comparison.settings),
        "prompts": {
            "train_sha256": prompts_hash(train["harmful"], train["harmless"]),
            "eval_sha256": prompts_hash(held_out.harmful, held_out.harmless),
            "text_sha256": prompts_hash(held_out.texts),
            "n_train_harmful": len(train["harmful"]),
            "n_train_harmless": len(train["harmless"]),
            "n_eval_harmful": len(held_out.harmful),
            "n_eval_harmless": len(held_out.harmless),
            "n_texts": len(held_out.texts),
            "train_eval_overlap": len(overlap(train["harmful"], held_out.harmful))
            + len(overlap(train["harmless"], held_out.harmless)),
        },
        "methods": {name: result.to_dict() for name, result in comparison.results.items()},
        "layer_choice": comparison.layer_choice,
        "w2_by_layer": comparison.w2_by_layer,
        **(extra or {}),
    }
