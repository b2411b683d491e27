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
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Float
from torch import Tensor

from ..core.errors import UserInputError
from ..lens.generation import GenerationOptions, generate_with_first_logprobs
from ..lens.intervention_set import InterventionSet
from ..lens.training import TrainingActivations
from .common import at_strength, hooks_of, judged_generation, log
from .damage import summarise
from .early_stop import Labels, cannot_reach, compliant, judge_until_decided, needed_count
from .fitting import collect_training_activations, compare_context
from .methods import fit_method
from .metrics import kl_divergence, refusal_log_odds, refusal_token_ids
from .prompt_sets import ValidationPrompts
from .selection import LayerChoice, best_trial, judged_candidates, resolve_layers, w2_by_layer
from .settings import CompareSettings
from .strength import StrengthChoice, StrengthPoint, choose_strength


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


@dataclass
class Validation:
    """The validation prompts, the unmodified model's first-token log-probabilities on the
    harmless ones (the reference of every validation KL), and what was measured on them.

    A run measures the same edit more than once: the layer search judges the chosen layer at
    its KL ceiling and the strength choice then asks for that point again, with the same
    bisection of KLs before it; direction ablation's KL at strength 1 is the budget and the
    top of its own search. ``kl`` and ``labels`` remember every result under the edit's
    fingerprint and the settings it depends on, so none is decoded twice.
    """

    prompts: ValidationPrompts
    harmless_logprobs: Float[Tensor, "prompt vocab"]
    measured: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)
    reused: int = 0
    """How many measurements were served from ``measured`` instead of being run again."""

    def _remember(self, key: tuple[Any, ...] | None, run: Callable[[], Any]) -> Any:
        if key is None:  # an edit without a fingerprint (a plain callable): always run
            return run()
        if key in self.measured:
            self.reused += 1
        else:
            self.measured[key] = run()
        return self.measured[key]

    def kl(self, model: Any, interventions: InterventionSet, settings: CompareSettings) -> float:
        """``harmless_kl`` of ``interventions`` on the validation harmless prompts."""
        collect = settings.collect
        key = _edit_key(
            "kl",
            interventions,
            (collect.batch_size, collect.system, settings.match_measure, settings.kl_threshold),
        )
        return self._remember(
            key,
            lambda: harmless_kl(
                model, interventions, self.prompts.harmless, self.harmless_logprobs, settings
            ),
        )

    def labels(
        self,
        model: Any,
        interventions: InterventionSet | None,
        settings: CompareSettings,
        *,
        need: int | None = None,
    ) -> Labels:
        """The judge's labels of greedy completions of the validation harmful prompts under
        ``interventions``, ``settings.early_stop`` prompts at a time; given ``need``, judging
        stops once that many compliant answers are out of reach (``early_stop``: the labels
        not judged are ``None``). A later call continues where an earlier one stopped."""
        collect = settings.collect
        depends = (
            settings.max_new_tokens,
            collect.batch_size,
            collect.system,
            settings.judge,
            settings.early_stop,
        )
        key = _edit_key("labels", interventions, depends)
        harmful = self.prompts.harmful
        unjudged: Labels = [None] * len(harmful)
        known: Labels = list(self.measured.get(key, unjudged)) if key else unjudged
        if key in self.measured and (None not in known or cannot_reach(known, need)):
            self.reused += 1  # every prompt judged, or judged far enough to answer
            return known
        labels = judge_until_decided(
            known,
            lambda start, stop: judged_completions(
                model, interventions, harmful[start:stop], settings
            ),
            group=settings.early_stop,
            need=need,
        )
        if key is not None:
            self.measured[key] = labels
        return labels

    def refusal_odds(
        self, model: Any, interventions: InterventionSet, settings: CompareSettings
    ) -> float:
        """The mean refusal log-odds of the first answer token on the validation harmful
        prompts under ``interventions`` (one forward pass, no decoding): the screen that
        orders the layer search's candidates, most compliant-looking first."""
        collect = settings.collect
        key = _edit_key("refusal", interventions, (collect.batch_size, collect.system))

        def run() -> float:
            _, logprobs = generate_with_first_logprobs(
                model,
                self.prompts.harmful,
                fwd_hooks=interventions.fwd_hooks(),
                max_new_tokens=1,
                options=GenerationOptions(
                    batch_size=collect.batch_size, system=collect.system, progress=False
                ),
            )
            odds = refusal_log_odds(logprobs, refusal_token_ids(model.tokenizer))
            return float(odds.mean())

        return float(self._remember(key, run))


def _edit_key(
    what: str, interventions: InterventionSet | None, depends: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    """The memo key of a measurement of ``interventions`` (``None``: the unmodified model)."""
    fingerprint = "unmodified" if interventions is None else interventions.fingerprint()
    return None if fingerprint is None else (what, fingerprint, *depends)


def validation_reference(
    model: Any, prompts: ValidationPrompts, settings: CompareSettings
) -> Validation:
    """``prompts`` with the unmodified model's first step on the harmless ones."""
    _, logprobs = generate_with_first_logprobs(
        model,
        prompts.harmless,
        max_new_tokens=1,
        options=GenerationOptions(
            batch_size=settings.collect.batch_size, system=settings.collect.system, progress=False
        ),
    )
    return Validation(prompts, logprobs)


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


def harmless_kl(
    model: Any,
    interventions: InterventionSet,
    harmless: Sequence[str],
    reference_logprobs: Float[Tensor, "prompt vocab"],
    settings: CompareSettings,
) -> float:
    """The matched-damage cost: ``settings.match_measure`` (the mean by default) of the
    per-prompt first-token KL on ``harmless`` under ``interventions`` (``damage.summarise``)."""
    _, logprobs = generate_with_first_logprobs(
        model,
        harmless,
        fwd_hooks=interventions.fwd_hooks(),
        max_new_tokens=1,
        options=GenerationOptions(
            batch_size=settings.collect.batch_size, system=settings.collect.system, progress=False
        ),
    )
    kl = kl_divergence(reference_logprobs, logprobs)
    return summarise(kl, settings.match_measure, settings.kl_threshold)


def judged_completions(
    model: Any,
    interventions: InterventionSet | None,
    harmful: Sequence[str],
    settings: CompareSettings,
) -> list[str]:
    """The judge's labels of greedy completions of ``harmful`` under ``interventions``."""
    *_, labels = judged_generation(
        model,
        harmful,
        hooks_of(interventions),
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.collect.batch_size,
        system=settings.collect.system,
        judge_method=settings.judge,
    )
    return labels


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
