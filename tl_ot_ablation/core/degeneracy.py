"""Fits that would change nothing or degenerate: identical classes and zero-variance classes.

Both are data problems, not bugs: the same prompts on both sides (layer 0 of a rotary model
holds the same template rows for every prompt), or a class whose rows are all equal. The
tolerances come from the rounding of the float64 statistics, derived in ``identical_classes``.
"""

import math
import sys
import warnings

import torch
from torch import Tensor

from .errors import UserInputError
from .validate import compute_dtype, stacklevel_outside

# A class whose variance is below the other's by more than float32's resolution has (near) zero
# variance: the transport matrix degenerates (A -> 0, or stretches of 1/sqrt(eps) and more).
DEGENERATE_VARIANCE_RATIO = float(torch.finfo(torch.float32).eps)


def warn_if_degenerate(variances: dict[str, Tensor], what: str, knobs: str) -> None:
    """Warn if one class's total variance (``[*batch]``, e.g. per layer) is (near) zero next to
    the other's: a fit then silently collapses (all rows sent to one point) or explodes.

    Args:
        variances: ``{"source": trace, "target": trace}``.
        what: The object being fitted, for the message.
        knobs: What the user can turn, and whether it helps, for the message.
    """
    (name_a, var_a), (name_b, var_b) = variances.items()
    largest = torch.maximum(var_a, var_b)
    for name, var in ((name_a, var_a), (name_b, var_b)):
        degenerate = var <= DEGENERATE_VARIANCE_RATIO * largest
        if bool(degenerate.any()):
            where = "" if var.ndim == 0 else f" in {int(degenerate.sum())} of {var.numel()} layers"
            warnings.warn(
                f"{what}: the {name} activations have (near) zero variance{where} (total "
                f"{float(var.min()):.3g}, vs {float(largest.max()):.3g}), so the fitted map "
                f"degenerates (it sends every row to one point, or stretches by huge factors). "
                f"Check the {name} activations (all rows equal? the wrong positions?); {knobs}",
                UserWarning,
                stacklevel=stacklevel_outside(sys._getframe()),
            )


class IdenticalClassesError(UserInputError):
    """The two classes of a fit are one distribution up to rounding (W2 = 0): the fitted edit
    would change nothing, or, for a direction, there is none."""


def identical_classes(
    means: tuple[Tensor, Tensor],
    spread: Tensor,
    *,
    covs: tuple[Tensor, Tensor] | None = None,
    width: int,
    offset: Tensor | float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Per batch entry (``[*batch]`` bool), whether two classes' Gaussians are equal up to rounding.

    Args:
        means: Both classes' means, ``[*batch, k]``.
        spread: Their mean total variance, ``[*batch]``.
        covs: Both covariances ``[*batch, k, k]`` (or variances ``[*batch, k]``); ``None``
            compares the means alone.
        width: Length of the rows the statistics were summed from (``d_model``).
        offset: Further variance whose rounding reaches the means, ``[*batch]``: the full
            space's, for means of coordinates ``(x - μ) @ Vᵀ`` of ``d_model``-wide rows.
        dtype: The rows' dtype (its compute dtype sets the rounding).

    The same rows summed in another order or batch give statistics that differ by rounding
    alone. ``GaussianStats`` sums rows centred on a first estimate of their mean, so its means
    are exact to ~log2(n)·eps of the rows' spread (not of their norm, however large their common
    mean) and a projection onto a subspace adds ~sqrt(d)·eps; ``8·sqrt(d)·eps`` of
    ``sqrt(spread)`` covers both with room (0.15 eps is typical). Covariances differ by up to
    n·eps of the spread (float32 products; Higham 2002, §3.1), ~sqrt(n)·eps typically (~14 eps
    at n = 2e4): ``sqrt(eps)`` covers any realistic ``n``. Two different prompt sets differ far
    more (by their sampling noise alone, ~1/sqrt(n) of the spread), so classes count as
    identical when ``|m_s - m_t| <= 8·sqrt(d)·eps·sqrt(spread + offset)`` and
    ``|S - C|_F <= sqrt(eps)·spread``.
    """
    eps = torch.finfo(compute_dtype(dtype)).eps
    mean_s, mean_t = (m.double() for m in means)
    tol_mean = 8 * math.sqrt(width) * eps
    same = (mean_s - mean_t).square().sum(-1) <= tol_mean**2 * (spread + offset)
    if covs is not None:
        gap = (covs[0].double() - covs[1].double()).flatten(spread.ndim).norm(dim=-1)
        same = same & (gap <= math.sqrt(eps) * spread)
    return same


def check_distinct_classes(same: Tensor, what: str, compared: str, consequence: str) -> None:
    """Raise ``IdenticalClassesError`` where ``same`` (from ``identical_classes``) holds.

    Args:
        same: ``[*batch]`` bool, one entry per layer.
        what: The object being fitted, for the message.
        compared: What was compared ("means", "means and covariances").
        consequence: What an identical pair means for the fit.
    """
    if not bool(same.any()):
        return
    where = ""
    if same.ndim == 1:
        where = f" in layer(s) {same.nonzero().flatten().tolist()} of {same.numel()}"
    elif same.ndim > 1:
        where = f" in {int(same.sum())} of {same.numel()} layers"
    raise IdenticalClassesError(
        f"{what}: the source (harmful) and target (harmless) {compared} are identical (up to "
        f"rounding){where}, so {consequence}. Were both sets of activations collected from the "
        "same prompts? Fit on harmful and harmless prompts that differ"
    )
