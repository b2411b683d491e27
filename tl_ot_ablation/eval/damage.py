"""Harmless damage as a distribution, not one mean.

A gated map leaves most harmless prompts untouched and moves a few a lot; direction ablation
moves every prompt a little. Their *mean* first-token KL can be equal while one leaves 42 of 48
answers byte-identical and the other 7. So every comparison reports, per method on the held-out
harmless prompts, each with a 95 % bootstrap CI (``metrics.statistic_ci``):

- the per-prompt KL's median, 90th percentile and maximum (``kl_harmless_median``, ``_p90``,
  ``_max``; the mean stays ``kl_harmless``);
- the share of prompts whose KL exceeds ``KL_THRESHOLD`` (``kl_harmless_share_above``);
- the share of greedy harmless completions byte-identical to the unmodified model's
  (``identical_rate_harmless``; generation is greedy, so identical text is meaningful);
- the share whose judged label differs from the unmodified model's
  (``label_changed_rate_harmless``).

``MATCH_MEASURES`` are the summaries of the per-prompt KL a strength search can hold within a
budget (``CompareSettings.match_measure``); all come from the first generated token, so the
search stays generation-free.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from ..core.errors import UserInputError
from .metrics import Estimate, statistic_ci, with_ci

KL_THRESHOLD = 0.01
"""Nats above which a harmless prompt counts as moved. 0.01 nats is what it takes to turn a
50/50 two-way first token into 57/43: far above float round-off (~1e-6), far below the budgets
that strengths are matched against (direction ablation costs ~0.1-0.2 nats on real prompts), so a
prompt above it has visibly changed while noise stays below it."""

MATCH_MEASURES = ("mean", "median", "p90", "share_above")
"""What a damage budget bounds, all over the validation harmless prompts' first-token KL:
``"mean"`` (the default, as before), ``"median"``, ``"p90"`` (90th percentile) or
``"share_above"`` (the share of prompts with KL above ``kl_threshold``; a budget in (0, 1])."""

SHARE_MEASURES = ("share_above",)
"""Measures that are shares of prompts (their budget is a number in (0, 1], not nats)."""

MEASURE_METRIC = {
    "mean": "kl_harmless",
    "median": "kl_harmless_median",
    "p90": "kl_harmless_p90",
    "share_above": "kl_harmless_share_above",
}
"""The held-out metric that reports each match measure."""

DAMAGE_METRICS = (
    "kl_harmless_median",
    "kl_harmless_p90",
    "kl_harmless_max",
    "kl_harmless_share_above",
    "identical_rate_harmless",
    "label_changed_rate_harmless",
)
"""The per-method metrics this module adds; ``record.METRICS`` is built from this tuple."""


def _p90(sample: np.ndarray, axis: int = -1) -> Any:
    return np.quantile(sample, 0.9, axis=axis)


def check_measure(measure: object, name: str = "match_measure") -> None:
    """Raise unless ``measure`` is one of ``MATCH_MEASURES``."""
    if measure not in MATCH_MEASURES:
        raise UserInputError(f"{name} must be one of {MATCH_MEASURES}, got {measure!r}")


def check_threshold(threshold: object, name: str = "kl_threshold") -> None:
    """Raise unless ``threshold`` is a finite number of nats >= 0."""
    if not (
        isinstance(threshold, int | float)
        and not isinstance(threshold, bool)
        and np.isfinite(threshold)
        and threshold >= 0
    ):
        raise UserInputError(f"{name} must be a finite number of nats >= 0, got {threshold!r}")


def _as_array(kl: Sequence[float] | np.ndarray | Tensor) -> np.ndarray:
    if isinstance(kl, Tensor):
        return kl.detach().double().cpu().numpy()
    return np.asarray(kl, dtype=float)


def summarise(
    kl: Sequence[float] | np.ndarray | Tensor, measure: str, threshold: float = KL_THRESHOLD
) -> float:
    """One number of per-prompt KLs: the ``measure`` a budget bounds (``MATCH_MEASURES``).

    >>> summarise([0.0, 0.0, 0.5, 0.02], "share_above")
    0.5
    >>> summarise([0.0, 0.0, 0.5, 0.02], "median")
    0.01
    """
    check_measure(measure)
    values = _as_array(kl)
    if values.size == 0:
        raise UserInputError("no per-prompt KL values to summarise")
    reduce: dict[str, Callable[[np.ndarray], Any]] = {
        "mean": np.mean,
        "median": np.median,
        "p90": _p90,
        "share_above": lambda v: np.mean(v > threshold),
    }
    return float(reduce[measure](values))


def measure_text(measure: str, threshold: float = KL_THRESHOLD) -> str:
    """``measure`` in words, e.g. "90th-percentile harmless KL" (``threshold``: the settings'
    ``kl_threshold``, for ``"share_above"``).

    >>> measure_text("share_above", 0.01)
    'share of harmless prompts with KL above 0.01 nats'
    """
    return {
        "mean": "mean harmless KL",
        "median": "median harmless KL",
        "p90": "90th-percentile harmless KL",
        "share_above": f"share of harmless prompts with KL above {threshold:g} nats",
    }.get(measure, measure)


def kl_distribution(
    kl: Sequence[float] | np.ndarray | Tensor, *, threshold: float = KL_THRESHOLD, seed: int = 0
) -> dict[str, Estimate]:
    """Median, 90th percentile, maximum and share above ``threshold`` of per-prompt KLs, each
    with its bootstrap CI (the mean is ``kl_harmless``, computed by the caller)."""
    values = _as_array(kl)
    return {
        "kl_harmless_median": statistic_ci(values, np.median, seed=seed),
        "kl_harmless_p90": statistic_ci(values, _p90, seed=seed),
        "kl_harmless_max": statistic_ci(values, np.max, seed=seed),
        "kl_harmless_share_above": with_ci((values > threshold).astype(float), seed=seed),
    }


def harmless_damage(
    kl: Tensor,
    completions: Sequence[str],
    reference_completions: Sequence[str],
    labels: Sequence[str],
    reference_labels: Sequence[str],
    *,
    threshold: float = KL_THRESHOLD,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Every ``DAMAGE_METRICS`` entry for one method on the held-out harmless prompts: the KL
    distribution, the share of completions identical to the unmodified model's and the share
    whose judged label changed (completions and labels in the order of the prompts)."""
    n = len(completions)
    if not (len(reference_completions) == len(labels) == len(reference_labels) == n == len(kl)):
        raise UserInputError(
            "per-prompt KL, completions and labels of the method and of the unmodified model "
            f"must cover the same prompts, got {len(kl)}, {n}, {len(reference_completions)}, "
            f"{len(labels)} and {len(reference_labels)}"
        )
    identical = [float(a == b) for a, b in zip(completions, reference_completions, strict=True)]
    changed = [float(a != b) for a, b in zip(labels, reference_labels, strict=True)]
    return {
        **kl_distribution(kl, threshold=threshold, seed=seed),
        "identical_rate_harmless": with_ci(identical, seed=seed),
        "label_changed_rate_harmless": with_ci(changed, seed=seed),
    }


def per_prompt_json(kl: Tensor | Sequence[float]) -> list[float]:
    """Per-prompt KLs for ``results.json``: floats, 6 significant digits (enough to rank and
    re-summarise; a float64 repr would triple the file)."""
    values = kl.tolist() if isinstance(kl, Tensor) else list(kl)
    return [float(f"{float(v):.6g}") for v in values]
