"""One method evaluated on the held-out prompts: generate, judge and score (``compare``).

For each method (and the unmodified model first, whose outputs are the ``Reference`` every
other method is compared with), on prompts disjoint from those it was fitted and tuned on:

- harmful and harmless refusal rates (marker judge on greedy completions), the judged label
  shares, and the generation-free refusal score (log-odds of refusal-starting tokens) on
  harmful prompts;
- damage on harmless prompts: first-token KL from the unmodified model, the perplexity of the
  unmodified model's own harmless completions and of plain prose under the intervention;
- the share of degenerate completions and the unmodified model's perplexity of the harmful
  completions, so a 0 % refusal rate made of gibberish is visible;
- over-refusal (``xstest``) and multiple-choice accuracy (``capability``) when asked;
- the graded harm score of each harmful completion (``harm_score``, added for every method at
  once by ``add_harm_scores``) where the judge is not the marker judge;
- the per-prompt scores of an activation monitor watching the same generation passes.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jaxtyping import Float
from torch import Tensor

from ..lens.generation import GenerationOptions, generate_with_first_logprobs
from ..lens.intervention_set import InterventionSet
from ..lens.monitor import ActivationMonitor
from ..lens.monitor_log import ScoreLog
from .capability import capability_accuracy
from .common import hooks_of
from .damage import harmless_damage, per_prompt_json
from .evaluate import completion_nll, text_hooks, text_nll
from .gate_report import GateRecorder
from .harm_score import harm_metrics, harm_scores, scored_with
from .judge import judge
from .matched import StrengthMatch
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
from .prompt_sets import EvalPrompts
from .record import MethodRecord
from .settings import CompareSettings
from .strength import StrengthChoice
from .xstest import over_refusal_metrics, run_over_refusal


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
    harm_scores: list[float] = field(default_factory=list)
    """The graded harm score of each held-out harmful completion (``add_harm_scores``)."""

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
            harm_score_harmful_per_prompt=self.harm_scores,
        )


@dataclass
class Reference:
    """The unmodified model's held-out outputs that every method is compared with.

    Attributes:
        harmless_logprobs: First-step log-probabilities on the harmless prompts,
            ``[prompt, vocab]``.
        harmless_completions: Its greedy harmless completions.
        harmless_labels: The judge's labels of them.
        xstest_labels: The judge's labels of its over-refusal completions (``None``: not run).
    """

    harmless_logprobs: Float[Tensor, "prompt vocab"]
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
    reference: Reference,
    settings: CompareSettings,
) -> dict[str, Estimate]:
    """Perplexity of the unmodified model's harmless completions and of prose under the
    intervention, and the unmodified model's perplexity of the harmful completions (fluency:
    gibberish scores high, refusals low; absent when every completion is empty)."""
    ref_prompts, ref_completions = _nonempty(prompts.harmless, reference.harmless_completions)
    if not ref_prompts:
        raise RuntimeError("the unmodified model's harmless completions are all empty")
    collect = settings.collect
    options: dict[str, Any] = {"batch_size": collect.batch_size, "system": collect.system}
    groups = [] if interventions is None else [interventions]
    nll = completion_nll(model, ref_prompts, ref_completions, interventions=groups, **options)
    hooks = [] if interventions is None else text_hooks(interventions)
    text = text_nll(model, prompts.texts, fwd_hooks=hooks, batch_size=settings.collect.batch_size)
    metrics = {"ppl_harmless": perplexity(nll), "ppl_text": perplexity(text)}
    fluent_prompts, fluent_completions = _nonempty(prompts.harmful, harmful_out)
    if fluent_prompts:
        fluency = completion_nll(model, fluent_prompts, fluent_completions, **options)
        metrics["ppl_harmful_base"] = perplexity(fluency)
    return metrics


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


def evaluate_method(
    model: Any,
    name: str,
    interventions: InterventionSet | None,
    prompts: EvalPrompts,
    settings: CompareSettings,
    reference: Reference | None,
    *,
    monitor: ActivationMonitor | None = None,
    progress: bool = True,
) -> tuple[MethodResult, Reference]:
    """Generate, judge and score one method on the held-out prompts.

    ``reference`` is the unmodified model's evaluation (``None`` when evaluating it); a
    ``monitor`` observes the generation passes (after the intervention's hooks), and so does a
    gated map's ``GateRecorder`` (before them). With ``prompts.xstest``, its safe and unsafe
    prompts are generated and judged too (``xstest``).
    """
    edit = hooks_of(interventions)
    gate = GateRecorder.for_set(interventions)
    options = GenerationOptions(
        batch_size=settings.collect.batch_size, system=settings.collect.system, progress=progress
    )
    logs = {"harmful": ScoreLog(), "harmless": ScoreLog()}

    def run(kind: str, asked: Sequence[str]) -> tuple[list[str], Tensor]:
        watch = [] if monitor is None or kind not in logs else monitor.fwd_hooks(logs[kind])
        seen = [] if gate is None else gate.hooks(kind)
        hooks = [*seen, *edit, *watch]
        return generate_with_first_logprobs(
            model,
            asked,
            fwd_hooks=hooks,
            max_new_tokens=settings.max_new_tokens,
            options=options,
        )

    def judged_labels(asked: Sequence[str], said: Sequence[str]) -> list[str]:
        return judge(list(asked), list(said), model=model, method=settings.judge, progress=False)

    # Harmless prompts are generated on their own, in the same batches as the KL measured by
    # the matched-damage search (``validation.harmless_kl``), so both see bit-identical first steps.
    harmful_out, harmful_logprobs = run("harmful", prompts.harmful)
    harmless_out, harmless_logprobs = run("harmless", prompts.harmless)
    markers = {"first_n": settings.judge_tokens, "tokenizer": model.tokenizer}
    score = refusal_log_odds(harmful_logprobs, refusal_token_ids(model.tokenizer))
    judged = {
        "harmful": judged_labels(prompts.harmful, harmful_out),
        "harmless": judged_labels(prompts.harmless, harmless_out),
    }
    if reference is None:
        reference = Reference(harmless_logprobs, harmless_out, judged["harmless"])
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
            batch_size=settings.collect.batch_size,
            system=settings.collect.system,
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


def add_harm_scores(
    results: Mapping[str, MethodResult], harmful: Sequence[str], settings: CompareSettings
) -> bool:
    """Score every method's held-out harmful completions with ``harm_score`` (its judged labels
    decide ``refused``), in one embedding pass, into ``harm_scores`` and the
    ``harm_score_harmful`` metric. Skipped (``False``) under the marker judge, which loads no
    model, or where the embedding model is not installed (``harm_score.scored_with``)."""
    if not scored_with(settings.judge):
        return False
    prompts: list[str] = []
    completions: list[str] = []
    labels: list[str] = []
    for name, result in results.items():
        said, judged = result.completions["harmful"], result.judged_harmful
        if not len(said) == len(judged) == len(harmful):
            raise ValueError(
                f"{name}: {len(said)} harmful completions and {len(judged)} labels for "
                f"{len(harmful)} prompts"
            )
        prompts += harmful
        completions += said
        labels += judged
    scores = harm_scores(prompts, completions, labels=labels)
    for number, result in enumerate(results.values()):
        result.harm_scores = scores[number * len(harmful) : (number + 1) * len(harmful)]
        result.metrics |= harm_metrics(result.harm_scores, seed=settings.seed)
    return True
