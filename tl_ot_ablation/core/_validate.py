"""Input checks shared by the fitting code: fail early, name the argument and the fix."""

import torch
from torch import Tensor


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
