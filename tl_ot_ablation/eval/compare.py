"""The ``compare`` pipeline: every registered method fitted, tuned and evaluated alike.

Data flow: prompts -> one pass of activations at every layer -> statistics (and rows)
(``fitting``) -> the selective layers, ``"auto"`` or judged on validation prompts
(``choices``) -> every registered method fitted (``methods``) -> each method's strength
chosen on the validation split (``choices.chosen_strength``) -> completions and next-token
distributions on held-out prompts, and their metrics (``held_out.evaluate_method``; the graded
harm score of every method's harmful completions at once, ``held_out.add_harm_scores``) ->
``Comparison`` -> the ``results.json`` record (``comparison_record``).

Every method is fitted on one prompt split, its strength chosen on a second (validation) and it
is evaluated on a third, disjoint from both (``prompt_sets``). Detectability, how well an
activation monitor fitted on clean training activations (``eval.detect``) tells each method's
harmful runs from clean traffic (AUROC), is read from the same generation passes by
observe-only hooks (no extra pass).

Given a result cache, the validation measurements and every method's held-out evaluation are
kept between runs (``run_cache``): a second run with one more method decodes that method's
searches and evaluation only.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.errors import UserInputError
from ..io.result_cache import ResultCache
from ..lens.intervention_set import InterventionSet
from ..lens.training import prompts_hash
from .choices import (
    choose_layers,
    chosen_strength,
    damage_budget,
    fixed_budget,
    judge_layers,
    needs_validation,
)
from .common import at_strength, log
from .detect import detectability, fit_compare_monitor
from .fitting import collect_training_activations, fit_methods
from .gate_report import explain_gates
from .held_out import MethodResult, add_harm_scores
from .job_plan import (
    GATE_NEIGHBOURS,
    LAYER_SEARCH,
    TRAINING,
    UNMODIFIED,
    VALIDATION,
    compare_progress,
    evaluation_stage,
    strength_stage,
)
from .job_progress import JobProgress
from .prompt_sets import EvalPrompts, ValidationPrompts, held_out_overlap, validation_overlap
from .record import CompareRecord, PromptsRecord
from .run_cache import cached_evaluation, cached_validation
from .settings import CompareSettings
from .strength import StrengthChoice, StrengthPoint
from .xstest import OverRefusalPrompts


@dataclass
class Comparison:
    """Every method's result, the fitted sets, the settings used and the layer choice."""

    results: dict[str, MethodResult]
    interventions: dict[str, InterventionSet]
    settings: CompareSettings
    stats: Any = None
    w2_by_layer: list[dict[str, int | float]] | None = None
    layer_choice: str = "given"
    layer_trials: list[dict[str, Any]] | None = None


def run_comparison(
    model: Any,
    train_harmful: Sequence[str],
    train_harmless: Sequence[str],
    prompts: EvalPrompts,
    settings: CompareSettings | None = None,
    *,
    validation: ValidationPrompts | None = None,
    progress: bool = True,
    cache: ResultCache | None = None,
) -> Comparison:
    """Fit every method on the training prompts, choose its strength on ``validation`` and
    evaluate it on ``prompts``.

    Strengths (``eval.strength``): with ``settings.match_kl``, each method's KL ceiling is the
    largest strength within the budget on the validation harmless prompts (the method that sets
    the budget has ceiling 1; without a budget every ceiling is ``settings.strength``); with
    ``settings.select="compliance"``, the fraction of the ceiling with the most judged
    compliance on the validation harmful prompts is used. ``validation`` is required unless
    strengths are fixed (``match_kl=None, select="kl"``) and the layers are not judged.
    ``cache`` keeps the validation measurements and every method's held-out evaluation between
    runs (``run_cache``: a second run on the same prompts decodes only what changed); within a
    run, no validation measurement is made twice (``validation.Validation``). With
    ``progress``, one bar covers the whole job, its estimate logged before it starts
    (``job_plan``, ``job_progress``).
    """
    n_layers = model.cfg.n_layers
    settings = (settings or CompareSettings()).resolve(n_layers)
    _require_validation(settings, validation)
    train = (train_harmful, train_harmless)
    job = compare_progress(model, settings, train, prompts, validation, progress)
    with job:
        return _run_stages(model, train, prompts, settings, validation, job, progress, cache)


def _run_stages(
    model: Any,
    train: tuple[Sequence[str], Sequence[str]],
    prompts: EvalPrompts,
    settings: CompareSettings,
    validation: ValidationPrompts | None,
    job: JobProgress,
    progress: bool,
    cache: ResultCache | None,
) -> Comparison:
    """``run_comparison``'s stages, each inside ``job.stage`` (``job_plan``'s names)."""
    train_harmful, train_harmless = train
    n_layers = model.cfg.n_layers
    with job.stage(TRAINING):
        training = collect_training_activations(
            model, train_harmful, train_harmless, settings, settings.methods, progress=progress
        )
    checked = None
    if validation is not None and needs_validation(settings):
        with job.stage(VALIDATION):
            checked = cached_validation(model, validation, settings, cache)
    budget = fixed_budget(settings)
    if settings.layers == "judged":
        assert checked is not None
        with job.stage(LAYER_SEARCH):
            settings, choice, budget = judge_layers(
                model, train_harmful, train_harmless, settings, training, checked, progress=progress
            )
    else:
        settings, choice = choose_layers(settings, training, n_layers)
    log(f"selective layers ({choice.how}): {settings.layers}", progress)
    fitted, _ = fit_methods(
        model, train_harmful, train_harmless, settings, training=training, progress=progress
    )
    monitor = None
    if settings.detect and not isinstance(settings.layers, str):
        assert settings.map.n_components is not None  # JobSettings requires a k
        monitor = fit_compare_monitor(
            model,
            train_harmful,
            train_harmless,
            list(settings.layers),
            n_components=settings.map.n_components,
            training=training,
            collect=settings.collecting(progress=progress),
        )
    log("evaluating the unmodified model", progress)
    with job.stage(UNMODIFIED):
        start = time.perf_counter()
        none, reference = cached_evaluation(
            model,
            "none",
            None,
            prompts,
            settings,
            None,
            monitor=monitor,
            cache=cache,
            progress=progress,
        )
        none.seconds.setdefault("evaluate", round(time.perf_counter() - start, 2))
        if checked is not None and settings.select == "compliance":
            labels = checked.labels(model, None, settings)
            anchor = StrengthPoint.judged(0.0, 0.0, labels)
            none.choice = StrengthChoice(0.0, "unmodified", 0.0, None, [anchor])
    results = {"none": none}
    for name, interventions in fitted.items():
        start = time.perf_counter()
        sets_budget = name == "direction_ablation" and settings.match_kl == "direction_ablation"
        strength_choice = None
        if checked is not None:
            with job.stage(strength_stage(name)):
                if sets_budget and budget is None:  # its validation KL at 1 is everyone's budget
                    budget = damage_budget(model, interventions, checked, settings)
                log(f"{name}: choosing its strength on the validation prompts", progress)
                interventions, strength_choice = chosen_strength(
                    model,
                    interventions,
                    None if sets_budget else budget,
                    checked,
                    settings,
                    ceiling=1.0 if sets_budget else None,
                    known_kl={1.0: budget} if sets_budget and budget is not None else None,
                )
        elif settings.strength != 1.0:
            interventions = at_strength(interventions, settings.strength)
        searched = time.perf_counter()
        log(f"evaluating {name}", progress)
        with job.stage(evaluation_stage(name)):
            result, _ = cached_evaluation(
                model,
                name,
                interventions,
                prompts,
                settings,
                reference,
                monitor=monitor,
                cache=cache,
                progress=progress,
            )
        if monitor is not None:
            clean = [none.monitor_scores["harmful"], none.monitor_scores["harmless"]]
            edited = result.monitor_scores["harmful"]
            result.metrics.update(detectability(edited, clean, seed=settings.seed))
        result.choice = strength_choice
        result.match = None if strength_choice is None else strength_choice.match
        result.seconds = {  # a read-back result's {"evaluate": 0.0, "cached": 1.0} last
            "search": round(searched - start, 2),
            "evaluate": round(time.perf_counter() - searched, 2),
            **result.seconds,
        }
        results[name] = result
    add_harm_scores(results, prompts.harmful, settings)
    if checked is not None and checked.reused:
        log(f"{checked.reused} validation measurements reused instead of run again", progress)
    if settings.gate_neighbours:
        with job.stage(GATE_NEIGHBOURS):
            _explain_gates(
                model, results, prompts, (train_harmful, train_harmless), settings, progress
            )
    return Comparison(
        results, fitted, settings, training.stats, choice.w2, choice.how, choice.trials
    )


def _require_validation(settings: CompareSettings, validation: ValidationPrompts | None) -> None:
    """Raise when ``settings`` choose strengths or layers and no validation prompts are given."""
    if validation is None and needs_validation(settings):
        fixes = ["fix the strengths with match_kl=None, select='kl'"]
        if settings.layers == "judged":  # the default
            fixes.append("give the layers (layers='auto' or a list) instead of 'judged'")
        raise UserInputError(
            "choosing strengths or layers needs validation prompts disjoint from the evaluation "
            "ones: pass validation=ValidationPrompts(harmful, harmless) (JobPrompts.shipped "
            "gives the package's split), or " + " and ".join(fixes)
        )


def _explain_gates(
    model: Any,
    results: dict[str, MethodResult],
    prompts: EvalPrompts,
    train: tuple[Sequence[str], Sequence[str]],
    settings: CompareSettings,
    progress: bool,
) -> None:
    """The training prompts nearest to the held-out ones that open each gated map's gate most
    (``gate_report.explain_gates``); the time it took goes to each result's ``seconds``."""
    gates = {name: result.gate for name, result in results.items() if result.gate is not None}
    if not gates:
        return
    log("finding the training prompts nearest to those that open the gate", progress)
    spent = explain_gates(
        model,
        gates,
        prompts.sets(),
        train,
        n_neighbours=settings.gate_neighbours,
        batch_size=settings.collect.batch_size,
        system=settings.collect.system,
    )
    for name, seconds in spent.items():
        results[name].seconds["gate_neighbours"] = seconds


def comparison_record(
    comparison: Comparison,
    *,
    model_name: str,
    train: Mapping[str, Sequence[str]],
    held_out: EvalPrompts,
    validation: ValidationPrompts | None = None,
    command: str | None = None,
    preset: str | None = None,
) -> CompareRecord:
    """The typed ``results.json`` record of a comparison (``record.CompareRecord``)."""
    checked: dict[str, Any] = {"validation_sha256": None}
    if validation is not None:
        checked = {
            "validation_sha256": prompts_hash(validation.harmful, validation.harmless),
            "n_validation_harmful": len(validation.harmful),
            "n_validation_harmless": len(validation.harmless),
            "validation_overlap": len(validation_overlap(train, held_out, validation)),
        }
    prompts = PromptsRecord(
        train_sha256=prompts_hash(train["harmful"], train["harmless"]),
        eval_sha256=prompts_hash(held_out.harmful, held_out.harmless),
        text_sha256=prompts_hash(held_out.texts),
        n_train_harmful=len(train["harmful"]),
        n_train_harmless=len(train["harmless"]),
        n_eval_harmful=len(held_out.harmful),
        n_eval_harmless=len(held_out.harmless),
        n_texts=len(held_out.texts),
        n_questions=len(held_out.questions),
        train_eval_overlap=len(held_out_overlap(train, held_out)),
        **checked,
        **_xstest_counts(held_out.xstest),
    )
    return CompareRecord(
        model=model_name,
        settings=comparison.settings,
        prompts=prompts,
        methods={name: result.to_record() for name, result in comparison.results.items()},
        layer_choice=comparison.layer_choice,
        w2_by_layer=comparison.w2_by_layer,
        layer_trials=comparison.layer_trials,
        command=command,
        preset=preset,
    )


def _xstest_counts(xstest: OverRefusalPrompts | None) -> dict[str, Any]:
    """The ``PromptsRecord`` fields of an over-refusal set (none when not run)."""
    if xstest is None:
        return {}
    return {
        "xstest_source": xstest.source,
        "xstest_sha256": prompts_hash(xstest.safe, xstest.unsafe),
        "n_xstest_safe": len(xstest.safe),
        "n_xstest_unsafe": len(xstest.unsafe),
    }


__all__ = [
    "CompareSettings",
    "Comparison",
    "EvalPrompts",
    "MethodResult",
    "ValidationPrompts",
    "comparison_record",
    "run_comparison",
]
