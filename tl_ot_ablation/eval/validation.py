"""What ``compare`` measures of an edit on the validation prompts, each measurement made once.

The layer search and every strength choice (``choices``) ask the same few questions of an edit
on the validation split: its first-token KL from the unmodified model on the harmless prompts
(``Validation.kl``), the judge's labels of its greedy completions of the harmful ones
(``Validation.labels``) and the refusal log-odds of its first answer token on them
(``Validation.refusal_odds``). A run asks some of them more than once, and a second run on the
same prompts asks most of them again; ``Validation`` answers each from what it remembers
(``measured``) and, given a ``MeasurementStore`` (``run_cache.StoredMeasurements``: the result
cache), from what an earlier run stored, before it decodes anything.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor

from ..lens.generation import GenerationOptions, generate_with_first_logprobs
from ..lens.intervention_set import InterventionSet
from .common import hooks_of, judged_generation
from .damage import summarise
from .early_stop import Labels, cannot_reach, judge_until_decided
from .metrics import kl_divergence, refusal_log_odds, refusal_token_ids
from .prompt_sets import ValidationPrompts
from .settings import CompareSettings

MemoKey = tuple[Any, ...]
"""``(what, the edit's fingerprint, *the settings the measurement depends on)``."""


@runtime_checkable
class MeasurementStore(Protocol):
    """Where measurements outlive the run (``run_cache.StoredMeasurements``)."""

    def get(self, key: MemoKey) -> Any | None:
        """The stored value of the measurement ``key`` (``None``: not stored)."""

    def put(self, key: MemoKey, value: Any) -> None:
        """Store ``value`` (JSON data) as the measurement ``key``."""


@dataclass
class Validation:
    """The validation prompts, the unmodified model's first-token log-probabilities on the
    harmless ones (the reference of every validation KL), and what was measured on them.

    A run measures the same edit more than once: the layer search judges the chosen layer at
    its KL ceiling and the strength choice then asks for that point again, with the same
    bisection of KLs before it; direction ablation's KL at strength 1 is the budget and the
    top of its own search. ``kl``, ``labels`` and ``refusal_odds`` remember every result under
    the edit's fingerprint and the settings it depends on, so none is decoded twice; with a
    ``store``, results of earlier runs are read back too (labels group by group, so a read-back
    list is exactly what judging would give at the same point, early stops included).
    """

    prompts: ValidationPrompts
    harmless_logprobs: Float[Tensor, "prompt vocab"]
    measured: dict[MemoKey, Any] = field(default_factory=dict, repr=False)
    reused: int = 0
    """How many measurements were served from ``measured`` or the ``store`` instead of being
    run again."""
    store: MeasurementStore | None = field(default=None, repr=False)

    def _remember(self, key: MemoKey | None, run: Callable[[], Any]) -> Any:
        if key is None:  # an edit without a fingerprint (a plain callable): always run
            return run()
        if key not in self.measured:
            stored = None if self.store is None else self.store.get(key)
            if stored is None:
                self.measured[key] = run()
                if self.store is not None:
                    self.store.put(key, self.measured[key])
                return self.measured[key]
            self.measured[key] = stored
        self.reused += 1
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
        stored: Labels | None = None
        if key is not None and self.store is not None:
            stored = self.store.get(key)
        served = []

        def judge(start: int, stop: int) -> list[str]:
            if stored is not None and None not in stored[start:stop]:
                served.append(stop - start)  # an earlier run judged this group: read it
                return [str(label) for label in stored[start:stop]]
            return judged_completions(model, interventions, harmful[start:stop], settings)

        labels = judge_until_decided(known, judge, group=settings.early_stop, need=need)
        self.reused += bool(served)
        if key is not None:
            self.measured[key] = labels
            if self.store is not None and _judged(labels) > _judged(stored or []):
                self.store.put(key, labels)
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
            logprobs = first_logprobs(
                model, self.prompts.harmful, interventions.fwd_hooks(), settings
            )
            odds = refusal_log_odds(logprobs, refusal_token_ids(model.tokenizer))
            return float(odds.mean())

        return float(self._remember(key, run))


def _judged(labels: Sequence[str | None]) -> int:
    return sum(label is not None for label in labels)


def _edit_key(
    what: str, interventions: InterventionSet | None, depends: tuple[Any, ...]
) -> MemoKey | None:
    """The memo key of a measurement of ``interventions`` (``None``: the unmodified model)."""
    fingerprint = "unmodified" if interventions is None else interventions.fingerprint()
    return None if fingerprint is None else (what, fingerprint, *depends)


def validation_reference(
    model: Any, prompts: ValidationPrompts, settings: CompareSettings
) -> Validation:
    """``prompts`` with the unmodified model's first step on the harmless ones."""
    return Validation(prompts, first_logprobs(model, prompts.harmless, [], settings))


def first_logprobs(
    model: Any,
    prompts: Sequence[str],
    fwd_hooks: Sequence[tuple[str, Any]],
    settings: CompareSettings,
) -> Float[Tensor, "prompt vocab"]:
    """Log-probabilities of the first answer token of ``prompts`` under ``fwd_hooks`` (one
    forward pass, batched and formatted as the settings' generation)."""
    _, logprobs = generate_with_first_logprobs(
        model,
        prompts,
        fwd_hooks=fwd_hooks,
        max_new_tokens=1,
        options=GenerationOptions(
            batch_size=settings.collect.batch_size, system=settings.collect.system, progress=False
        ),
    )
    return logprobs


def harmless_kl_per_prompt(
    model: Any,
    interventions: InterventionSet,
    harmless: Sequence[str],
    reference_logprobs: Float[Tensor, "prompt vocab"],
    settings: CompareSettings,
) -> Float[Tensor, " prompt"]:
    """The first-token KL from ``reference_logprobs`` of each of ``harmless`` under
    ``interventions``."""
    logprobs = first_logprobs(model, harmless, interventions.fwd_hooks(), settings)
    return kl_divergence(reference_logprobs, logprobs)


def harmless_kl(
    model: Any,
    interventions: InterventionSet,
    harmless: Sequence[str],
    reference_logprobs: Float[Tensor, "prompt vocab"],
    settings: CompareSettings,
) -> float:
    """The matched-damage cost: ``settings.match_measure`` (the mean by default) of the
    per-prompt first-token KL on ``harmless`` under ``interventions`` (``damage.summarise``)."""
    kl = harmless_kl_per_prompt(model, interventions, harmless, reference_logprobs, settings)
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
