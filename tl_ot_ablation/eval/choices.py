"""The choices ``compare`` makes before it evaluates: the selective layer and each strength.

Both are made on training statistics or on a *validation* split, never on the evaluation
prompts:

- layers: ``"auto"`` is the W2² / variance argmax of the training statistics
  (``choose_layers``, no generation); ``"judged"`` fits the first selective method at each
  candidate layer and keeps the one whose validation harmful completions, at its KL ceiling,
  the judge finds most compliant (``judge_layers``; ``choose_layer`` from Python);
- strengths (``eval.strength``): the largest strength whose validation harmless KL stays
  within the damage budget (by default direction ablation's own validation KL,
  ``damage_budget``), then, among fractions of it, the one whose validation harmful
  completions the judge finds most compliant (``chosen_strength``).

Every measurement on the validation prompts goes through ``validation.Validation``, which makes
each one once (and, given the result cache, once across runs: ``run_cache``).
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import UserInputError
from ..lens.intervention_set import InterventionSet
from ..lens.training import TrainingActivations
from .common import at_strength, log
from .early_stop import Labels, compliant, needed_count
from .fitting import collect_training_activations, compare_context
from .methods import fit_method
from .prompt_sets import ValidationPrompts
from .selection import LayerChoice, best_trial, judged_candidates, resolve_layers, w2_by_layer
from .settings import CompareSettings
from .strength import StrengthChoice, StrengthPoint, choose_strength
from .validation import Validation, validation_reference


def choose_layers(
    settings: CompareSettings, training: TrainingActivations, n_layers: int
) -> tuple[CompareSettings, LayerChoice]:
    """Settings with concrete selective layers (``"auto"``: the W2² / variance argmax of the
    training statistics), and the choice with its W2 table."""
    choice = resolve_layers(
        settings.layers,
        n_layers,
        training.stats,
        n_components=settings.map.n_components,
        reg=settings.map.reg,
    )
    return dataclasses.replace(settings, layers=choice.layers), choice


def needs_validation(settings: CompareSettings) -> bool:
    """Whether strengths (a KL budget, or judged compliance) or the layer are chosen on the
    validation prompts rather than fixed."""
    return (
        settings.match_kl is not None
        or settings.select == "compliance"
        or settings.layers == "judged"
    )


def fixed_budget(settings: CompareSettings) -> float | None:
    """The KL budget when ``match_kl`` is a number (``None``: none, or set by a method)."""
    return None if isinstance(settings.match_kl, str | None) else float(settings.match_kl)


def damage_budget(
    model: Any, interventions: InterventionSet, validation: Validation, settings: CompareSettings
) -> float:
    """The damage budget set by a method: its validation harmless KL's ``match_measure`` at
    strength 1."""
    kl = validation.kl(model, at_strength(interventions, 1.0), settings)
    if not kl > 0:
        raise RuntimeError(
            f"direction ablation's harmless damage ({settings.match_measure} of the first-token "
            f"KL, threshold {settings.kl_threshold:g} nats) is 0, so it cannot set a damage "
            "budget; pass a number as match_kl, or another match_measure"
        )
    return kl


def chosen_strength(
    model: Any,
    interventions: InterventionSet,
    budget: float | None,
    validation: Validation,
    settings: CompareSettings,
    *,
    ceiling: float | None = None,
    known_kl: Mapping[float, float] | None = None,
) -> tuple[InterventionSet, StrengthChoice]:
    """The set at the strength chosen on the validation prompts (``strength.choose_strength``):
    KL ceiling from ``budget`` (or ``ceiling``), then the judged-compliance choice.
    ``known_kl`` holds validation KLs already measured (``{strength: kl}``), not measured again."""
    base = at_strength(interventions, 1.0)
    measured = dict(known_kl or {})

    def kl_at(strength: float) -> float:
        if strength not in measured:
            measured[strength] = validation.kl(model, at_strength(base, strength), settings)
        return measured[strength]

    def judge_at(strength: float, need: int | None) -> Labels:
        return validation.labels(model, at_strength(base, strength), settings, need=need)

    choice = choose_strength(
        kl_at,
        judge_at,
        budget=budget,
        ceiling=settings.strength if ceiling is None else ceiling,
        fractions=settings.strength_fractions,
        rule=settings.select,
        max_strength=settings.max_strength,
        steps=settings.bisection_steps,
    )
    return at_strength(base, choice.strength), choice


def judge_layers(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    settings: CompareSettings,
    training: TrainingActivations,
    validation: Validation,
    *,
    progress: bool = True,
) -> tuple[CompareSettings, LayerChoice, float | None]:
    """``layers="judged"``: the layer where ``settings.judged_method``, at its KL ceiling within
    the budget, makes the model comply most often on the validation harmful prompts.

    Each of ``selection.judged_candidates`` is tried with the method fitted there alone (one KL
    search and one judged generation pass per layer); ``selection.best_trial`` picks. Returns the
    settings with that layer, the choice with every trial, and the KL budget (measured here when
    direction ablation sets it, so that it is not measured again)."""
    n_layers = model.cfg.n_layers
    spec = settings.map
    w2 = w2_by_layer(training.stats, n_layers, n_components=spec.n_components, reg=spec.reg)
    candidates = judged_candidates(n_layers, w2)
    method = settings.judged_method
    if settings.direction_layer is None or method is None:
        raise UserInputError("judge_layers needs resolved settings with a selective method")

    def fit_at(name: str, layers: list[int]) -> InterventionSet:
        context = compare_context(
            model, harmful, harmless, settings, training, layers=layers, progress=False
        )
        return fit_method(name, context)

    budget = fixed_budget(settings)
    if settings.match_kl == "direction_ablation":
        direction = fit_at("direction_ablation", candidates)
        budget = damage_budget(model, direction, validation, settings)
    ceiling_only = dataclasses.replace(settings, select="kl", strength_fractions=(1.0,))
    trials: list[dict[str, Any]] = []
    judged: list[tuple[int, InterventionSet, StrengthPoint]] = []
    for layer in candidates:
        log(f"layer {layer}: {method}'s KL ceiling on the validation prompts", progress)
        fitted = fit_at(method, [layer])
        edit, choice = chosen_strength(model, fitted, budget, validation, ceiling_only)
        ceiling = next((p for p in choice.points if p.strength == choice.strength), None)
        if ceiling is None or choice.strength <= 0:  # a ceiling of 0: nothing to judge
            trials.append({"layer": layer, **dataclasses.asdict(StrengthPoint(0.0, 0.0))})
        else:
            judged.append((layer, edit, ceiling))
    if settings.early_stop is not None:  # the likeliest winner first: the rest stop sooner
        screen = {
            layer: validation.refusal_odds(model, edit, settings) for layer, edit, _ in judged
        }
        judged.sort(key=lambda item: screen[item[0]])
    best: tuple[int, float, int] | None = None  # (compliant count, KL, layer)
    for layer, edit, ceiling in judged:
        log(f"layer {layer}: {method} judged at its KL ceiling", progress)
        wins_ties = best is not None and (ceiling.kl, layer) < (best[1], best[2])
        need = needed_count(None if best is None else best[0], wins_ties)
        labels = validation.labels(model, edit, settings, need=need)
        point = StrengthPoint.judged(ceiling.strength, ceiling.kl, labels)
        trial = {"layer": layer, **dataclasses.asdict(point)}
        if settings.early_stop is not None:
            trial["refusal_log_odds"] = screen[layer]
        trials.append(trial)
        if point.complete and (need is None or compliant(labels) >= need):
            best = (compliant(labels), ceiling.kl, layer)
    trials.sort(key=lambda trial: trial["layer"])
    winner = int(best_trial(trials)["layer"])
    chosen = dataclasses.replace(settings, layers=[winner])
    return chosen, LayerChoice([winner], "judged", w2, trials), budget


def choose_layer(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    validation: ValidationPrompts,
    settings: CompareSettings | None = None,
    *,
    progress: bool = True,
) -> LayerChoice:
    """The layer ``compare`` judges best (``layers="judged"``), from Python: fit on ``harmful``
    / ``harmless``, then for each candidate layer one KL search and one judged generation pass
    over ``validation`` (``judge_layers``). Its ``trials`` hold every candidate's numbers."""
    settings = dataclasses.replace(settings or CompareSettings(), layers="judged")
    settings = settings.resolve(model.cfg.n_layers)
    training = collect_training_activations(
        model, harmful, harmless, settings, settings.methods, progress=progress
    )
    checked = validation_reference(model, validation, settings)
    _, choice, _ = judge_layers(
        model, harmful, harmless, settings, training, checked, progress=progress
    )
    return choice
