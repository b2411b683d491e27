"""Side-by-side comparison of refusal interventions on the same prompts (``compare``).

Data flow: prompts -> one pass of activations at every layer -> statistics (and rows) ->
the selective layers (``resolve_layers``) -> every registered method fitted (``methods``) ->
hooks -> completions and next-token distributions on held-out prompts -> metrics -> record.

Every method is fitted on one prompt split and evaluated on a disjoint one:

- harmful and harmless refusal rates (marker judge on greedy completions) and the
  generation-free refusal score (log-odds of refusal-starting tokens) on harmful prompts;
- damage on harmless prompts: first-token KL from the unmodified model, the perplexity of the
  unmodified model's own harmless completions and of plain prose under the intervention;
- the share of degenerate completions and the unmodified model's perplexity of the harmful
  completions, so a 0 % refusal rate made of gibberish is visible;
- detectability: how well an activation monitor fitted on clean training activations
  (``eval.detect``) tells each method's harmful runs from clean traffic (AUROC), read from the
  same generation passes by observe-only hooks (no extra pass).

Each method's strength is chosen on a *validation* split, never on the evaluation prompts
(``eval.strength``): the largest strength whose harmless KL stays within the budget (by default
direction ablation's own validation KL), then, among fractions of it, the one whose validation
harmful completions the judge finds most compliant. The method is then evaluated there.
"""

import dataclasses
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..core.errors import UserInputError
from ..lens.fit import TrainingActivations, collect_every_layer, prompts_hash
from ..lens.generation import generate_with_first_logprobs
from ..lens.intervention_set import InterventionSet
from ..lens.monitor import ActivationMonitor, ScoreLog
from .capability import Question, capability_accuracy
from .damage import harmless_damage, per_prompt_json, summarise
from .detect import detectability, fit_compare_monitor
from .evaluate import completion_nll, text_hooks, text_nll
from .gate_report import GateRecorder, explain_gates
from .judge import judge
from .matched import StrengthMatch
from .methods import METHODS, FitContext, fit_method
from .metrics import (
    Estimate,
    degenerate_rate,
    is_refusal,
    kl_divergence,
    label_share,
    perplexity,
    refusal_log_odds,
    refusal_rate,
    refusal_token_ids,
    with_ci,
)
from .record import CompareRecord, MethodRecord, PromptsRecord
from .selection import LayerChoice, best_trial, judged_candidates, resolve_layers, w2_by_layer
from .settings import CompareSettings
from .strength import StrengthChoice, StrengthPoint, choose_strength
from .xstest import OverRefusalPrompts, over_refusal_metrics, run_over_refusal


@dataclass
class EvalPrompts:
    """Held-out prompts: harmful and harmless instructions, plain prose, multiple-choice
    questions for the capability check (none: the check is skipped) and an XSTest-style
    over-refusal set (``None``: not run)."""

    harmful: list[str]
    harmless: list[str]
    texts: list[str]
    questions: list[Question] = field(default_factory=list)
    xstest: OverRefusalPrompts | None = None

    def sets(self) -> dict[str, list[str]]:
        """The instruction sets by name, as the completions are keyed: harmful, harmless and,
        when given, xstest_safe and xstest_unsafe."""
        named = {"harmful": self.harmful, "harmless": self.harmless}
        if self.xstest is not None:
            named |= {"xstest_safe": self.xstest.safe, "xstest_unsafe": self.xstest.unsafe}
        return named


@dataclass
class ValidationPrompts:
    """Prompts for choosing each method's strength (``eval.strength``), disjoint from both the
    training and the evaluation prompts."""

    harmful: list[str]
    harmless: list[str]


@dataclass
class MethodResult:
    """One method's evaluation: its strength, metrics with CIs, and completions."""

    name: str
    strength: float | None
    metrics: dict[str, Estimate]
    completions: dict[str, list[str]]
    match: StrengthMatch | None = None
    choice: StrengthChoice | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    refused_harmful: list[int] = field(default_factory=list)
    judged_harmful: list[str] = field(default_factory=list)
    monitor_scores: dict[str, dict[str, Tensor]] = field(default_factory=dict, repr=False)
    """``{"harmful" | "harmless": {score: per-prompt scores}}`` when a monitor watched."""
    kl_harmless: list[float] = field(default_factory=list)
    """First-token KL of each held-out harmless prompt."""
    judged_harmless: list[str] = field(default_factory=list)
    judged_xstest: dict[str, list[str]] = field(default_factory=dict)
    gate: GateRecorder | None = field(default=None, repr=False)
    """What a gated map's gate did on each prompt (``gate_report``)."""
    seed: int = 0
    """The bootstrap seed (the settings'), for the gate's shares."""

    def to_record(self) -> MethodRecord:
        """The ``results.json`` entry (completions go to ``completions.json``)."""
        return MethodRecord(
            self.strength,
            dict(self.metrics),
            self.refused_harmful,
            self.match,
            self.fit,
            self.seconds,
            self.judged_harmful,
            None if self.choice is None else self.choice.to_dict(),
            kl_harmless_per_prompt=self.kl_harmless,
            judged_harmless=self.judged_harmless,
            judged_xstest=self.judged_xstest,
            gate=None if self.gate is None else self.gate.summary(seed=self.seed),
        )


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


def at_strength(interventions: InterventionSet, strength: float) -> InterventionSet:
    """``interventions.with_strength(strength)`` without the extrapolation warning (strength > 1
    is what a matched-damage search asks for on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="strength=.* extrapolates", category=UserWarning)
        return interventions.with_strength(strength)


def log(message: str, progress: bool) -> None:
    """A progress line on stderr (tqdm-safe), when ``progress``."""
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
    when a transport method's estimator needs them (and they fit in memory)."""
    uses_rows = any(METHODS[m].transport for m in settings.methods)
    log(f"collecting activations at all {model.cfg.n_layers} layers", progress)
    return collect_every_layer(
        model,
        harmful,
        harmless,
        estimator=settings.estimator if uses_rows else "ridge",
        **settings.collect(progress=progress).kwargs(),
    )


def choose_layers(
    settings: CompareSettings, training: TrainingActivations, n_layers: int
) -> tuple[CompareSettings, LayerChoice]:
    """Settings with concrete selective layers (``"auto"``: the W2² / variance argmax of the
    training statistics), and the choice with its W2 table."""
    choice = resolve_layers(
        settings.layers,
        n_layers,
        training.stats,
        n_components=settings.n_components,
        reg=settings.reg,
    )
    return dataclasses.replace(settings, layers=choice.layers), choice


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
            model, harmful, harmless, settings, progress=progress
        )
    context = FitContext(
        model,
        harmful,
        harmless,
        list(settings.layers),
        settings.direction_layer,
        settings.map_spec(),
        settings.collect(progress=progress),
        settings.sequential,
        training,
    )
    fitted = {}
    for name in settings.methods:
        if name != "none":
            log(f"fitting {name}", progress)
            start = time.perf_counter()
            fitted[name] = fit_method(name, context)
            fitted[name].metadata["fit_seconds"] = round(time.perf_counter() - start, 2)
    return fitted, training


@dataclass
class _Reference:
    """The unmodified model's held-out outputs that every method is compared with."""

    harmless_logprobs: Tensor
    harmless_completions: list[str]
    harmless_labels: list[str] = field(default_factory=list)
    xstest_labels: dict[str, list[str]] | None = None


def _nonempty(prompts: Sequence[str], completions: Sequence[str]) -> tuple[list[str], list[str]]:
    kept = [(p, c) for p, c in zip(prompts, completions, strict=True) if c]
    return [p for p, _ in kept], [c for _, c in kept]


def _perplexities(
    model: Any,
    interventions: InterventionSet | None,
    prompts: EvalPrompts,
    harmful_out: Sequence[str],
    reference: _Reference,
    settings: CompareSettings,
) -> dict[str, Estimate]:
    """Perplexity of the unmodified model's harmless completions and of prose under the
    intervention, and the unmodified model's perplexity of the harmful completions (fluency:
    gibberish scores high, refusals low; absent when every completion is empty)."""
    ref_prompts, ref_completions = _nonempty(prompts.harmless, reference.harmless_completions)
    if not ref_prompts:
        raise RuntimeError("the unmodified model's harmless completions are all empty")
    options: dict[str, Any] = {"batch_size": settings.batch_size, "system": settings.system}
    groups = [] if interventions is None else [interventions]
    nll = completion_nll(model, ref_prompts, ref_completions, interventions=groups, **options)
    hooks = [] if interventions is None else text_hooks(interventions)
    text = text_nll(model, prompts.texts, fwd_hooks=hooks, batch_size=settings.batch_size)
    metrics = {"ppl_harmless": perplexity(nll), "ppl_text": perplexity(text)}
    fluent_prompts, fluent_completions = _nonempty(prompts.harmful, harmful_out)
    if fluent_prompts:
        fluency = completion_nll(model, fluent_prompts, fluent_completions, **options)
        metrics["ppl_harmful_base"] = perplexity(fluency)
    return metrics


def evaluate_method(
    model: Any,
    name: str,
    interventions: InterventionSet | None,
    prompts: EvalPrompts,
    settings: CompareSettings,
    reference: _Reference | None,
    *,
    monitor: ActivationMonitor | None = None,
    progress: bool = True,
) -> tuple[MethodResult, _Reference]:
    """Generate, judge and score one method on the held-out prompts.

    ``reference`` is the unmodified model's evaluation (``None`` when evaluating it); a
    ``monitor`` observes the generation passes (after the intervention's hooks), and so does a
    gated map's ``GateRecorder`` (before them). With ``prompts.xstest``, its safe and unsafe
    prompts are generated and judged too (``xstest``).
    """
    edit = [] if interventions is None else interventions.fwd_hooks()
    gate = GateRecorder.for_set(interventions)
    options: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "batch_size": settings.batch_size,
        "system": settings.system,
        "progress": progress,
    }
    logs = {"harmful": ScoreLog(), "harmless": ScoreLog()}

    def run(kind: str, asked: Sequence[str]) -> tuple[list[str], Tensor]:
        watch = [] if monitor is None or kind not in logs else monitor.fwd_hooks(logs[kind])
        seen = [] if gate is None else gate.hooks(kind)
        hooks = [*seen, *edit, *watch]
        return generate_with_first_logprobs(model, asked, fwd_hooks=hooks, **options)

    def judged_labels(asked: Sequence[str], said: Sequence[str]) -> list[str]:
        return judge(list(asked), list(said), model=model, method=settings.judge, progress=False)

    # Harmless prompts are generated on their own, in the same batches as the KL measured by
    # the matched-damage search (``harmless_kl``), so both see bit-identical first steps.
    harmful_out, harmful_logprobs = run("harmful", prompts.harmful)
    harmless_out, harmless_logprobs = run("harmless", prompts.harmless)
    markers = {"first_n": settings.judge_tokens, "tokenizer": model.tokenizer}
    score = refusal_log_odds(harmful_logprobs, refusal_token_ids(model.tokenizer))
    judged = {
        "harmful": judged_labels(prompts.harmful, harmful_out),
        "harmless": judged_labels(prompts.harmless, harmless_out),
    }
    if reference is None:
        reference = _Reference(harmless_logprobs, harmless_out, judged["harmless"])
    kl = kl_divergence(reference.harmless_logprobs, harmless_logprobs)
    xstest_out: dict[str, list[str]] = {}
    xstest_labels: dict[str, list[str]] = {}
    if prompts.xstest is not None:
        xstest_out, xstest_labels = run_over_refusal(prompts.xstest, run, judged_labels)
        if reference.xstest_labels is None:  # evaluating the unmodified model
            reference.xstest_labels = xstest_labels
    metrics = {
        **_judged_rates(judged, settings.seed),
        "refusal_rate_harmful": refusal_rate(harmful_out, **markers),
        "refusal_rate_harmless": refusal_rate(harmless_out, **markers),
        "kl_harmless": with_ci(kl, seed=settings.seed),
        "refusal_score_harmful": with_ci(score, seed=settings.seed),
        "degenerate_flag_rate_harmful": degenerate_rate(harmful_out),
        "degenerate_flag_rate_harmless": degenerate_rate(harmless_out),
        **_perplexities(model, interventions, prompts, harmful_out, reference, settings),
        **harmless_damage(
            kl,
            harmless_out,
            reference.harmless_completions,
            judged["harmless"],
            reference.harmless_labels,
            threshold=settings.kl_threshold,
            seed=settings.seed,
        ),
    }
    if xstest_labels:
        metrics |= over_refusal_metrics(xstest_labels, reference.xstest_labels, seed=settings.seed)
    if prompts.questions:
        metrics["capability_accuracy"] = capability_accuracy(
            model,
            prompts.questions,
            fwd_hooks=edit,
            batch_size=settings.batch_size,
            system=settings.system,
            seed=settings.seed,
        )
    result = MethodResult(
        name,
        None if interventions is None else interventions.strength,
        metrics,
        {"harmful": harmful_out, "harmless": harmless_out, **xstest_out},
        fit={} if interventions is None else dict(interventions.metadata),
        refused_harmful=[int(is_refusal(text, **markers)) for text in harmful_out],
        judged_harmful=judged["harmful"],
        kl_harmless=per_prompt_json(kl),
        judged_harmless=judged["harmless"],
        judged_xstest=xstest_labels,
        gate=gate,
        seed=settings.seed,
    )
    if monitor is not None:
        (layer,) = monitor.layers  # compare's monitor watches one layer (fit_compare_monitor)
        result.monitor_scores = {
            kind: {score: by_layer[layer] for score, by_layer in log.prompt_scores().items()}
            for kind, log in logs.items()
        }
    return result, reference


def _judged_rates(judged: dict[str, list[str]], seed: int) -> dict[str, Estimate]:
    """Shares of each judged label: compliance, deflection and degenerate on harmful prompts
    (attack success is compliance), compliance and refusal on harmless ones."""

    def share(kind: str, label: str) -> Estimate:
        return label_share(judged[kind], label, seed=seed)

    return {
        "compliance_rate_harmful": share("harmful", "compliance"),
        "deflection_rate_harmful": share("harmful", "deflection"),
        "degenerate_rate_harmful": share("harmful", "degenerate"),
        "compliance_rate_harmless": share("harmless", "compliance"),
        "degenerate_rate_harmless": share("harmless", "degenerate"),
    }


def harmless_kl(
    model: Any,
    interventions: InterventionSet,
    harmless: Sequence[str],
    reference_logprobs: Tensor,
    settings: CompareSettings,
) -> float:
    """The matched-damage cost: ``settings.match_measure`` (the mean by default) of the
    per-prompt first-token KL on ``harmless`` under ``interventions`` (``damage.summarise``)."""
    _, logprobs = generate_with_first_logprobs(
        model,
        harmless,
        fwd_hooks=interventions.fwd_hooks(),
        max_new_tokens=1,
        batch_size=settings.batch_size,
        system=settings.system,
        progress=False,
    )
    kl = kl_divergence(reference_logprobs, logprobs)
    return summarise(kl, settings.match_measure, settings.kl_threshold)


@dataclass
class _Validation:
    """The validation prompts and the unmodified model's first-token log-probabilities on the
    harmless ones (the reference of every validation KL)."""

    prompts: ValidationPrompts
    harmless_logprobs: Tensor


def _validation_reference(
    model: Any, prompts: ValidationPrompts, settings: CompareSettings
) -> _Validation:
    _, logprobs = generate_with_first_logprobs(
        model,
        prompts.harmless,
        max_new_tokens=1,
        batch_size=settings.batch_size,
        system=settings.system,
        progress=False,
    )
    return _Validation(prompts, logprobs)


def judged_generation(
    model: Any,
    harmful: Sequence[str],
    fwd_hooks: Sequence[tuple[str, Any]],
    *,
    max_new_tokens: int,
    batch_size: int,
    system: str | None,
    judge_method: str,
) -> tuple[list[str], Float[Tensor, "prompt vocab"], list[str]]:
    """Greedy completions of ``harmful`` under ``fwd_hooks``, the first step's log-probs and
    the judge's labels of the completions (the judged passes of ``compare`` and ``sweep``)."""
    said, logprobs = generate_with_first_logprobs(
        model,
        harmful,
        fwd_hooks=list(fwd_hooks),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        system=system,
        progress=False,
    )
    labels = judge(list(harmful), said, model=model, method=judge_method, progress=False)
    return said, logprobs, labels


def _judged_completions(
    model: Any,
    interventions: InterventionSet | None,
    harmful: Sequence[str],
    settings: CompareSettings,
) -> list[str]:
    """The judge's labels of greedy completions of ``harmful`` under ``interventions``."""
    hooks = [] if interventions is None else interventions.fwd_hooks()
    *_, labels = judged_generation(
        model,
        harmful,
        hooks,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        system=settings.system,
        judge_method=settings.judge,
    )
    return labels


def chosen_strength(
    model: Any,
    interventions: InterventionSet,
    budget: float | None,
    validation: _Validation,
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
            edited = at_strength(base, strength)
            harmless = validation.prompts.harmless
            measured[strength] = harmless_kl(
                model, edited, harmless, validation.harmless_logprobs, settings
            )
        return measured[strength]

    def judge_at(strength: float) -> list[str]:
        edited = at_strength(base, strength)
        return _judged_completions(model, edited, validation.prompts.harmful, settings)

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


def _budget(
    model: Any, interventions: InterventionSet, validation: _Validation, settings: CompareSettings
) -> float:
    """The damage budget set by a method: its validation harmless KL's ``match_measure`` at
    strength 1."""
    kl = harmless_kl(
        model,
        at_strength(interventions, 1.0),
        validation.prompts.harmless,
        validation.harmless_logprobs,
        settings,
    )
    if not kl > 0:
        raise RuntimeError(
            f"direction ablation's harmless damage ({settings.match_measure} of the first-token "
            f"KL, threshold {settings.kl_threshold:g} nats) is 0, so it cannot set a damage "
            "budget; pass a number as match_kl, or another match_measure"
        )
    return kl


def _needs_validation(settings: CompareSettings) -> bool:
    """Whether strengths (a KL budget, or judged compliance) or the layer are chosen on the
    validation prompts rather than fixed."""
    return (
        settings.match_kl is not None
        or settings.select == "compliance"
        or settings.layers == "judged"
    )


def _fixed_budget(settings: CompareSettings) -> float | None:
    """The KL budget when ``match_kl`` is a number (``None``: none, or set by a method)."""
    return None if isinstance(settings.match_kl, str | None) else float(settings.match_kl)


def judge_layers(
    model: Any,
    harmful: Sequence[str],
    harmless: Sequence[str],
    settings: CompareSettings,
    training: TrainingActivations,
    validation: _Validation,
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
    w2 = w2_by_layer(training.stats, n_layers, n_components=settings.n_components, reg=settings.reg)
    candidates = judged_candidates(n_layers, w2)
    direction_layer, method = settings.direction_layer, settings.judged_method
    if direction_layer is None or method is None:
        raise UserInputError("judge_layers needs resolved settings with a selective method")

    def context(layers: list[int]) -> FitContext:
        return FitContext(
            model,
            harmful,
            harmless,
            layers,
            direction_layer,
            settings.map_spec(),
            settings.collect(progress=False),
            settings.sequential,
            training,
        )

    budget = _fixed_budget(settings)
    if settings.match_kl == "direction_ablation":
        direction = fit_method("direction_ablation", context(candidates))
        budget = _budget(model, direction, validation, settings)
    at_ceiling = dataclasses.replace(settings, select="compliance", strength_fractions=(1.0,))
    trials: list[dict[str, Any]] = []
    for layer in candidates:
        log(f"layer {layer}: {method} judged on the validation prompts", progress)
        fitted = fit_method(method, context([layer]))
        _, choice = chosen_strength(model, fitted, budget, validation, at_ceiling)
        unusable = StrengthPoint(choice.strength, 0.0)  # a ceiling of 0: nothing to judge
        point = next((p for p in choice.points if p.strength == choice.strength), unusable)
        trials.append({"layer": layer, **dataclasses.asdict(point)})
    best = int(best_trial(trials)["layer"])
    chosen = dataclasses.replace(settings, layers=[best])
    return chosen, LayerChoice([best], "judged", w2, trials), budget


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
    training = collect_training_activations(model, harmful, harmless, settings, progress=progress)
    checked = _validation_reference(model, validation, settings)
    _, choice, _ = judge_layers(
        model, harmful, harmless, settings, training, checked, progress=progress
    )
    return choice


def run_comparison(
    model: Any,
    train_harmful: Sequence[str],
    train_harmless: Sequence[str],
    prompts: EvalPrompts,
    settings: CompareSettings | None = None,
    *,
    validation: ValidationPrompts | None = None,
    progress: bool = True,
) -> Comparison:
    """Fit every method on the training prompts, choose its strength on ``validation`` and
    evaluate it on ``prompts``.

    Strengths (``eval.strength``): with ``settings.match_kl``, each method's KL ceiling is the
    largest strength within the budget on the validation harmless prompts (the method that sets
    the budget has ceiling 1; without a budget every ceiling is ``settings.strength``); with
    ``settings.select="compliance"``, the fraction of the ceiling with the most judged
    compliance on the validation harmful prompts is used. ``validation`` is required unless
    strengths are fixed (``match_kl=None, select="kl"``) and the layers are not judged.
    """
    n_layers = model.cfg.n_layers
    settings = (settings or CompareSettings()).resolve(n_layers)
    if validation is None and _needs_validation(settings):
        fixes = ["fix the strengths with match_kl=None, select='kl'"]
        if settings.layers == "judged":  # the default
            fixes.append("give the layers (layers='auto' or a list) instead of 'judged'")
        raise UserInputError(
            "choosing strengths or layers needs validation prompts disjoint from the evaluation "
            "ones: pass validation=ValidationPrompts(harmful, harmless) (JobPrompts.shipped "
            "gives the package's split), or " + " and ".join(fixes)
        )
    training = collect_training_activations(
        model, train_harmful, train_harmless, settings, progress=progress
    )
    checked = (
        _validation_reference(model, validation, settings)
        if validation is not None and _needs_validation(settings)
        else None
    )
    budget = _fixed_budget(settings)
    if settings.layers == "judged":
        assert checked is not None
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
        monitor = fit_compare_monitor(
            model,
            train_harmful,
            train_harmless,
            list(settings.layers),
            n_components=settings.n_components,
            training=training,
            collect=settings.collect(progress=progress).kwargs(),
        )
    log("evaluating the unmodified model", progress)
    start = time.perf_counter()
    none, reference = evaluate_method(
        model, "none", None, prompts, settings, None, monitor=monitor, progress=progress
    )
    none.seconds = {"evaluate": round(time.perf_counter() - start, 2)}
    results = {"none": none}
    if checked is not None and settings.select == "compliance":
        labels = _judged_completions(model, None, checked.prompts.harmful, settings)
        anchor = StrengthPoint.judged(0.0, 0.0, labels)
        none.choice = StrengthChoice(0.0, "unmodified", 0.0, None, [anchor])
    for name, interventions in fitted.items():
        start = time.perf_counter()
        sets_budget = name == "direction_ablation" and settings.match_kl == "direction_ablation"
        strength_choice = None
        if checked is not None:
            if sets_budget and budget is None:  # its validation KL at 1 is everyone's budget
                budget = _budget(model, interventions, checked, settings)
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
        result, _ = evaluate_method(
            model,
            name,
            interventions,
            prompts,
            settings,
            reference,
            monitor=monitor,
            progress=progress,
        )
        if monitor is not None:
            clean = [none.monitor_scores["harmful"], none.monitor_scores["harmless"]]
            edited = result.monitor_scores["harmful"]
            result.metrics.update(detectability(edited, clean, seed=settings.seed))
        result.choice = strength_choice
        result.match = None if strength_choice is None else strength_choice.match
        result.seconds = {
            "search": round(searched - start, 2),
            "evaluate": round(time.perf_counter() - searched, 2),
        }
        results[name] = result
    gates = {name: result.gate for name, result in results.items() if result.gate is not None}
    if gates and settings.gate_neighbours:
        log("finding the training prompts nearest to those that open the gate", progress)
        spent = explain_gates(
            model,
            gates,
            prompts.sets(),
            (train_harmful, train_harmless),
            n_neighbours=settings.gate_neighbours,
            batch_size=settings.batch_size,
            system=settings.system,
        )
        for name, seconds in spent.items():
            results[name].seconds["gate_neighbours"] = seconds
    return Comparison(
        results, fitted, settings, training.stats, choice.w2, choice.how, choice.trials
    )


def overlap(train: Sequence[str], held_out: Sequence[str]) -> list[str]:
    """Prompts found in both sets (compared after stripping whitespace and case)."""
    seen = {p.strip().lower() for p in train}
    return [p for p in held_out if p.strip().lower() in seen]


def validation_overlap(
    train: Mapping[str, Sequence[str]], held_out: EvalPrompts, validation: ValidationPrompts
) -> list[str]:
    """Validation prompts that also appear among the training or evaluation prompts."""
    return [
        text
        for kind in ("harmful", "harmless")
        for text in overlap([*train[kind], *getattr(held_out, kind)], getattr(validation, kind))
    ]


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
        train_eval_overlap=len(overlap(train["harmful"], held_out.harmful))
        + len(overlap(train["harmless"], held_out.harmless)),
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
