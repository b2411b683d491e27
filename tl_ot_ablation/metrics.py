"""What a researcher measures, in one public place (``tl_ot_ablation.metrics``).

- ``judge(prompts, completions, *, model=None, method="classifier")``: each pair labelled one of
  ``LABELS`` (``refusal``, ``deflection``, ``compliance``, ``degenerate``), offline;
  ``method="markers"`` is the substring judge that cannot see deflection;
- ``is_refusal`` / ``refusal_rate``: the refusal markers; ``refusal_log_odds``: Arditi et al.'s
  generation-free score (of the tokens ``refusal_token_ids(tokenizer)`` picks);
  ``kl_divergence`` and ``perplexity``: damage;
  ``degeneracy`` / ``degenerate_rate``: output that is no longer language;
- ``harm_scores(prompts, completions, *, labels=None)``: a graded, StrongREJECT-style harm
  score per pair in [0, 1] (``eval.harm_score``; a heuristic proxy, docs/judge.md);
- ``with_ci``: a mean with its bootstrap interval (an ``Estimate``).

The implementations live in ``eval.judge``, ``eval.harm_score`` and ``eval.metrics``; this
module only gathers them.
"""

from .eval.harm_score import harm_scores
from .eval.judge import LABELS, judge
from .eval.metrics import (
    REFUSAL_MARKERS,
    Estimate,
    degeneracy,
    degenerate_rate,
    is_degenerate,
    is_refusal,
    kl_divergence,
    perplexity,
    refusal_log_odds,
    refusal_rate,
    refusal_token_ids,
    with_ci,
)

__all__ = [
    "LABELS",
    "REFUSAL_MARKERS",
    "Estimate",
    "degeneracy",
    "degenerate_rate",
    "harm_scores",
    "is_degenerate",
    "is_refusal",
    "judge",
    "kl_divergence",
    "perplexity",
    "refusal_log_odds",
    "refusal_rate",
    "refusal_token_ids",
    "with_ci",
]
