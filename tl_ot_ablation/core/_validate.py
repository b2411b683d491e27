"""Input checks shared by the fitting code: fail early, name the argument and the fix."""

import sys
import warnings
from types import FrameType

import torch
from torch import Tensor

# Float32 second moments are safe while the rows' spread lies in [2^-40, 2^40]: then every
# product down to eps² of the largest one is a normal float32 number (2^-80·2^-46 = 2^-126, the
# smallest), and sums of up to ~10^14 of the largest ones stay below float32's maximum.
_FLOAT32_SPREAD_RANGE = (2.0**-40, 2.0**40)
# A class whose variance is below the other's by more than float32's resolution has (near) zero
# variance: the transport matrix degenerates (A -> 0, or stretches of 1/sqrt(eps) and more).
_DEGENERATE_VARIANCE_RATIO = float(torch.finfo(torch.float32).eps)


def check_float_tensor(value: object, name: str) -> Tensor:
    """Raise unless ``value`` is a floating-point tensor with at least one dimension."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor, got dtype {value.dtype}; "
            f"convert it with {name}.float()"
        )
    if value.ndim < 1:
        raise ValueError(f"{name} must have a last dimension d_model, got a scalar")
    return value


def check_finite(value: Tensor, name: str) -> None:
    """Raise if ``value`` holds NaN or inf, saying how many and where to look."""
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"{name} contains {bad} non-finite value(s) (NaN or inf); check the activations "
            "you collected (e.g. fp16 overflow, or pad positions that were not masked out)"
        )


def check_rows(value: object, name: str, *, min_rows: int = 2) -> Tensor:
    """Validate a ``[*batch, n, d]`` block of sample rows."""
    rows = check_float_tensor(value, name)
    if rows.ndim < 2:
        raise ValueError(
            f"{name} must have shape [*batch, n, d_model], got {tuple(rows.shape)}; "
            f"use {name}.unsqueeze(0) for a single row"
        )
    if rows.shape[-2] < min_rows:
        raise ValueError(
            f"need at least {min_rows} samples in {name} to estimate a covariance, "
            f"got n={rows.shape[-2]}"
        )
    check_finite(rows, name)
    return rows


def check_same_width(source: Tensor, target: Tensor) -> None:
    """Raise unless two row blocks share ``d_model`` and their leading batch shape."""
    if source.shape[-1] != target.shape[-1]:
        raise ValueError(
            "source and target activations must share d_model; got "
            f"{tuple(source.shape)} and {tuple(target.shape)}"
        )
    if source.shape[:-2] != target.shape[:-2]:
        raise ValueError(
            "source and target must have the same leading (layer) dimensions; got "
            f"{tuple(source.shape)} and {tuple(target.shape)}"
        )


def check_n_components(n_components: int | None, d_model: int) -> int:
    """Resolve ``None`` to the full space and range-check an explicit subspace size."""
    if n_components is None:
        return d_model
    if isinstance(n_components, bool) or not isinstance(n_components, int):
        raise ValueError(f"n_components must be an int or None, got {n_components!r}")
    if not 1 <= n_components <= d_model:
        raise ValueError(f"n_components must be in [1, {d_model}] (or None), got {n_components}")
    return n_components


def check_reg(reg: float) -> float:
    if not (reg >= 0 and reg == reg and reg != float("inf")):
        raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
    return float(reg)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float dtype computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def moments_dtype(rows: Tensor) -> torch.dtype:
    """The dtype to form the second moments of ``[*batch, n, d]`` rows in.

    ``compute_dtype``, except float64 where float32 products of the rows' spread would
    underflow (rows at a scale of ~1e-13 and below) or overflow (~1e12 and above): float32
    statistics would then silently collapse to 0 or blow up to inf. Costs two reductions.
    """
    dtype = compute_dtype(rows.dtype)
    if dtype == torch.float64 or rows.numel() == 0:
        return dtype
    spread = float((rows.amax(-2) - rows.amin(-2)).amax())  # >= max |x - mean| per column
    low, high = _FLOAT32_SPREAD_RANGE
    return torch.float64 if 0 < spread < low or spread > high else dtype


def storage_dtype(dtype: torch.dtype, variance: Tensor, what: str) -> torch.dtype:
    """``dtype`` to store a fit in, or float64 where float32 cannot hold its second moments.

    Variances below ``tiny / eps`` (~1e-31: activations at a scale of ~1e-16 and below) would
    be stored as float32 subnormals, or 0, and those above ``max · eps`` would overflow in
    later products: the fit is then kept in float64, with a warning, rather than silently
    losing its covariances (outputs still come back in the activations' dtype).
    """
    if dtype != torch.float32 or variance.numel() == 0:
        return dtype
    info = torch.finfo(torch.float32)
    top = float(variance.abs().amax())
    if top == 0 or top != top or info.tiny / info.eps <= top <= info.max * info.eps:
        return dtype
    warnings.warn(
        f"{what}: the activations' variance ({top:.3g}) is outside float32's range, so the "
        "fit is stored in float64 (its outputs keep the activations' dtype); rescale the "
        "activations towards unit scale to store it in float32",
        UserWarning,
        stacklevel=_stacklevel_outside(sys._getframe()),
    )
    return torch.float64


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
        degenerate = var <= _DEGENERATE_VARIANCE_RATIO * largest
        if bool(degenerate.any()):
            where = "" if var.ndim == 0 else f" in {int(degenerate.sum())} of {var.numel()} layers"
            warnings.warn(
                f"{what}: the {name} activations have (near) zero variance{where} (total "
                f"{float(var.min()):.3g}, vs {float(largest.max()):.3g}), so the fitted map "
                f"degenerates (it sends every row to one point, or stretches by huge factors). "
                f"Check the {name} activations (all rows equal? the wrong positions?); {knobs}",
                UserWarning,
                stacklevel=_stacklevel_outside(sys._getframe()),
            )


# The package, and the shape-checking wrappers that pytest puts around its functions.
_INTERNAL_MODULES = ("tl_ot_ablation.", "jaxtyping.", "beartype.")


def _stacklevel_outside(frame: FrameType) -> int:
    """``stacklevel`` for a ``warnings.warn`` called in ``frame`` (pass ``sys._getframe()``) that
    points at the first frame outside the package: the user's line, whatever route led there."""
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        _INTERNAL_MODULES
    ):
        frame, level = frame.f_back, level + 1
    return level
