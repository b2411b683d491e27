"""What a researcher measures, in one public place (``tl_ot_ablation.metrics``).

- ``judge(prompts, completions, *, model=None, method="classifier")``: each pair labelled one of
  ``LABELS`` (``refusal``, ``deflection``, ``compliance``, ``degenerate``), offline;
  ``method="markers"`` is the substring judge that cannot see deflection;
- ``is_refusal`` / ``refusal_rate``: the refusal markers; ``refusal_log_odds``: Arditi et al.'s
  generation-free score; ``kl_divergence`` and ``perplexity``: damage;
  ``degeneracy`` / ``degenerate_rate``: output that is no longer language;
- ``with_ci``: a mean with its bootstrap interval (an ``Estimate``).

The implementations live in ``eval.judge`` and ``eval.metrics``; this module only gathers them.
"""

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
    with_ci,
)

__all__ = [
    "LABELS",
    "REFUSAL_MARKERS",
    "Estimate",
    "degeneracy",
    "degenerate_rate",
    "is_degenerate",
    "is_refusal",
    "judge",
    "kl_divergence",
    "perplexity",
    "refusal_log_odds",
    "refusal_rate",
    "with_ci",
]
