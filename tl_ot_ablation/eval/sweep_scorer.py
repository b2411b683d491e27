"""How a sweep scores one placement: refusal log-odds, harmless KL and, when judged, the
judge's shares; and which placement is best within a damage budget.

A point is scored by two forward passes over held-out prompts and no generation: the mean
refusal log-odds on harmful prompts (Arditi et al.'s score; lower is less refusal) and the
first-token KL on harmless prompts (the damage, with its distribution). A judged point also
generates greedy completions of the harmful prompts and labels them (``common.judged_generation``),
taking its log-odds from the same pass. ``sweep.run_sweep`` places the maps; this module
scores them, and ``experiments/`` reuse the ``Scorer`` on their own interventions.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..core.errors import UserInputError
from ..lens.intervention_set import InterventionSet
from .common import hooks_of, judged_generation
from .damage import KL_THRESHOLD, MEASURE_METRIC, kl_distribution
from .evaluate import next_token_logprobs
from .metrics import (
    Estimate,
    kl_divergence,
    label_share,
    refusal_log_odds,
    refusal_token_ids,
    with_ci,
)
from .record import SweepPoint


@dataclass
class Scorer:
    """Scores interventions by refusal log-odds (harmful) and first-token KL (harmless), and,
    when asked (``judged=True`` in ``point``), by the judge's labels of greedy completions of
    the harmful prompts (``max_new_tokens`` long, labelled by ``judge(method=judge_method)``)."""

    model: Any
    harmful: Sequence[str]
    harmless: Sequence[str]
    batch_size: int = 16
    system: str | None = None
    seed: int = 0
    reference: Tensor | None = None
    max_new_tokens: int = 64
    judge_method: str = "classifier"
    kl_threshold: float = KL_THRESHOLD

    def __post_init__(self) -> None:
        self.refusal_ids = refusal_token_ids(self.model.tokenizer)
        self.reference = self._logprobs(self.harmless, [])

    def _logprobs(self, prompts: Sequence[str], hooks: list[tuple[str, Any]]) -> Tensor:
        return next_token_logprobs(
            self.model, prompts, fwd_hooks=hooks, batch_size=self.batch_size, system=self.system
        )

    def __call__(self, interventions: InterventionSet | None) -> tuple[Estimate, Estimate]:
        """Mean refusal log-odds (harmful) and mean KL (harmless), with CIs."""
        score, kl = self.per_prompt(interventions)
        return with_ci(score, seed=self.seed), with_ci(kl, seed=self.seed)

    def per_prompt(self, interventions: InterventionSet | None) -> tuple[Tensor, Tensor]:
        """Refusal log-odds per harmful prompt and KL per harmless prompt."""
        hooks = hooks_of(interventions)
        score = refusal_log_odds(self._logprobs(self.harmful, hooks), self.refusal_ids)
        return score, self._kl(hooks)

    def _kl(self, hooks: list[tuple[str, Any]]) -> Tensor:
        assert self.reference is not None
        return kl_divergence(self.reference, self._logprobs(self.harmless, hooks))

    def generate_and_judge(
        self, interventions: InterventionSet | None
    ) -> tuple[Tensor, list[str], list[str]]:
        """Refusal log-odds per harmful prompt (from the first generation step), the greedy
        completions of the harmful prompts and the judge's labels of them."""
        said, logprobs, labels = judged_generation(
            self.model,
            self.harmful,
            hooks_of(interventions),
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
            system=self.system,
            judge_method=self.judge_method,
        )
        return refusal_log_odds(logprobs, self.refusal_ids), said, labels

    def point(
        self,
        kind: str,
        method: str,
        layers: Sequence[int],
        k: int | None,
        strength: float,
        interventions: InterventionSet | None,
        *,
        judged: bool = False,
    ) -> tuple[SweepPoint, list[str] | None]:
        """Score ``interventions`` as one sweep point; with ``judged``, also the harmful
        completions (else ``None``)."""
        said: list[str] | None = None
        shares: dict[str, Estimate] = {}
        if judged:
            score, said, labels = self.generate_and_judge(interventions)
            shares = {
                label: label_share(labels, label, seed=self.seed)
                for label in ("compliance", "deflection", "degenerate")
            }
            kl = self._kl(hooks_of(interventions))
        else:
            score, kl = self.per_prompt(interventions)
        spread = kl_distribution(kl, threshold=self.kl_threshold, seed=self.seed)
        spread.pop("kl_harmless_max")
        point = SweepPoint(
            kind,
            method,
            tuple(layers),
            k,
            strength,
            with_ci(score, seed=self.seed),
            with_ci(kl, seed=self.seed),
            # Logit judge: the share of prompts whose first token is more likely than not a
            # refusal start (log-odds > 0), a generation-free refusal rate.
            with_ci((score > 0).double(), seed=self.seed),
            **shares,
            **spread,
        )
        return point, said


def point_damage(point: SweepPoint, measure: str = "mean") -> float:
    """A point's harmless damage in ``measure`` (``damage.MATCH_MEASURES``; a point scored
    before the distribution was kept has only the mean)."""
    estimate = getattr(point, MEASURE_METRIC[measure])
    if estimate is None:
        raise UserInputError(
            f"this sweep point has no {measure} KL; it was scored with the mean only"
        )
    return float(estimate.value)


def best_placement(
    candidates: Sequence[SweepPoint], budget: float, measure: str = "mean"
) -> SweepPoint | None:
    """The best of ``candidates`` whose damage (``measure`` of the per-prompt KL) is within
    ``budget`` (``None``: none is): when every candidate within it was judged, the most judged
    compliance (ties, common on a few dozen prompts: the lower refusal log-odds, then the lower
    KL); else the lowest refusal log-odds."""
    within = [p for p in candidates if point_damage(p, measure) <= budget]
    if not within:
        return None
    if all(p.compliance is not None for p in within):
        return max(
            within,
            key=lambda p: (_value(p.compliance), -p.refusal_score.value, -p.kl_harmless.value),
        )
    return min(within, key=lambda p: p.refusal_score.value)


def _value(estimate: Estimate | None) -> float:
    assert estimate is not None
    return estimate.value
