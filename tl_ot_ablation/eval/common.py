"""What several jobs share: progress lines, a set at a chosen strength, and the judged pass.

``compare``, ``sweep``, ``monitor`` and ``fit`` all print the same progress lines, set fitted
interventions to a strength without the extrapolation warning, and (``compare`` and a judged
``sweep``) generate greedy completions of harmful prompts for the judge. These helpers live
here, not in one job's module, so that no job imports another job's internals.
"""

import sys
import warnings
from collections.abc import Sequence
from typing import Any

from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..lens.generation import GenerationOptions, generate_with_first_logprobs
from ..lens.intervention_set import InterventionSet
from .judge import judge


def log(message: str, progress: bool) -> None:
    """A progress line on stderr (tqdm-safe), when ``progress``."""
    if progress:
        tqdm.write(f"[tl-ot-ablation] {message}", file=sys.stderr)


def at_strength(interventions: InterventionSet, strength: float) -> InterventionSet:
    """``interventions.with_strength(strength)`` without the extrapolation warning (strength > 1
    is what a matched-damage search asks for on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="strength=.* extrapolates", category=UserWarning)
        return interventions.with_strength(strength)


def hooks_of(interventions: InterventionSet | None) -> list[tuple[str, Any]]:
    """The forward hooks of ``interventions`` (none for the unmodified model, ``None``)."""
    return [] if interventions is None else interventions.fwd_hooks()


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
        options=GenerationOptions(batch_size=batch_size, system=system, progress=False),
    )
    labels = judge(list(harmful), said, model=model, method=judge_method, progress=False)
    return said, logprobs, labels
