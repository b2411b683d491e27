"""Input checks shared by the fitting code: fail early, name the argument and the fix."""

import functools
import math
import numbers
import sys
import warnings
import weakref
from collections.abc import Callable
from types import FrameType

import torch
from torch import Tensor

from .errors import UserInputError

# Float32 second moments are safe while the rows' spread lies in [2^-40, 2^40]: then every
# product down to eps² of the largest one is a normal float32 number (2^-80·2^-46 = 2^-126, the
# smallest), and sums of up to ~10^14 of the largest ones stay below float32's maximum.
_FLOAT32_SPREAD_RANGE = (2.0**-40, 2.0**40)


def check_float_tensor(value: object, name: str) -> Tensor:
    """Raise unless ``value`` is a floating-point tensor with at least one dimension."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise UserInputError(
            f"{name} must be a floating-point tensor, got dtype {value.dtype}; "
            f"convert it with {name}.float()"
        )
    if value.ndim < 1:
        raise UserInputError(f"{name} must have a last dimension d_model, got a scalar")
    return value


def check_finite(value: Tensor, name: str) -> None:
    """Raise if ``value`` holds NaN or inf, saying how many and where to look."""
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise UserInputError(
            f"{name} contains {bad} non-finite value(s) (NaN or inf); check the activations "
            "you collected (e.g. fp16 overflow, or pad positions that were not masked out)"
        )


def check_rows(value: object, name: str, *, min_rows: int = 2) -> Tensor:
    """Validate a ``[*batch, n, d]`` block of sample rows."""
    rows = check_float_tensor(value, name)
    if rows.ndim < 2:
        raise UserInputError(
            f"{name} must have shape [*batch, n, d_model], got {tuple(rows.shape)}; "
            f"use {name}.unsqueeze(0) for a single row"
        )
    if rows.shape[-2] < min_rows:
        raise UserInputError(
            f"need at least {min_rows} samples in {name} to estimate a covariance, "
            f"got n={rows.shape[-2]}"
        )
    check_finite(rows, name)
    return rows


def check_same_width(
    source: Tensor, target: Tensor, names: tuple[str, str] = ("source", "target")
) -> None:
    """Raise unless two row blocks share ``d_model`` and their leading batch shape."""
    first, second = names
    if source.shape[-1] != target.shape[-1]:
        raise UserInputError(
            f"{first} and {second} activations must share d_model; got "
            f"{tuple(source.shape)} and {tuple(target.shape)}"
        )
    if source.shape[:-2] != target.shape[:-2]:
        raise UserInputError(
            f"{first} and {second} must have the same leading (layer) dimensions; got "
            f"{tuple(source.shape)} and {tuple(target.shape)}"
        )


def check_n_components(n_components: int | None, d_model: int) -> int:
    """Resolve ``None`` to the full space and range-check an explicit subspace size."""
    if n_components is None:
        return d_model
    if isinstance(n_components, bool) or not isinstance(n_components, int):
        raise UserInputError(f"n_components must be an int or None, got {n_components!r}")
    if not 1 <= n_components <= d_model:
        raise UserInputError(
            f"n_components must be in [1, {d_model}] (or None), got {n_components}"
        )
    return n_components


# ``reg`` is relative to the mean variance: above 1/eps32 the ridge alone sets the stored float32
# covariances (the data's variances vanish below their rounding), so A = I; MeanShift is that map.
MAX_REG = 1 / float(torch.finfo(torch.float32).eps)


def check_reg(reg: float) -> float:
    """Raise unless ``reg`` is a finite number in ``[0, MAX_REG]``."""
    if isinstance(reg, bool) or not isinstance(reg, numbers.Real) or not math.isfinite(reg):
        raise UserInputError(f"reg must be a finite number >= 0, got {reg!r}")
    if reg < 0:
        raise UserInputError(f"reg must be a finite number >= 0, got {reg!r}")
    if reg > MAX_REG:
        raise UserInputError(
            f"reg={reg:g} is too large: it is relative to the mean variance, and above "
            f"1/eps(float32) = {MAX_REG:.3g} the ridge drowns the covariances (A = I). Use a "
            "reg below 1 (the default is 1e-3), or MeanShift for the map with A = I"
        )
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
        stacklevel=stacklevel_outside(sys._getframe()),
    )
    return torch.float64


# --- invariants of stored fits, checked by the public constructors ------------------------------

_EPS32 = float(torch.finfo(torch.float32).eps)


def stored_tolerance(dtype: torch.dtype, dim: int) -> float:
    """Relative tolerance on a stored fit's invariants (unit norm, orthonormal rows, symmetric
    p.s.d. matrices) for tensors of ``dtype`` with ``dim``-long rows.

    Fits compute in float32 at least, so a stored tensor carries float32 rounding whatever its
    dtype: up to dim·eps32 for sums of ``dim`` terms (Higham 2002, §3.1), and about sqrt(eps32)
    for Gram matrices of thousands of float32 rows; a half-precision copy
    (``to(torch.float16)``) adds a few eps of its own dtype. Anything further off is not
    rounding: the tensor was built wrong.
    """
    return max(4 * float(torch.finfo(dtype).eps), math.sqrt(_EPS32), dim * _EPS32)


_Check = Callable[[Tensor, str], None]
# (id, check) -> (weak reference, version counter) of tensors that passed a check. Copies such as
# ``with_strength`` reuse their tensors, so a full-space map (k = d_model: O(k³) checks, seconds
# at k = 4096) is checked once, not per copy; an in-place edit bumps the version: checked again.
_PASSED: dict[tuple[int, str], tuple["weakref.ref[Tensor]", int]] = {}


def _once_per_tensor(check: _Check) -> _Check:
    """Run ``check(tensor, name)`` only for tensors that have not passed it unchanged before."""

    @functools.wraps(check)
    def checked(tensor: Tensor, name: str) -> None:
        key = (id(tensor), check.__name__)
        try:
            version = tensor._version
        except RuntimeError:  # an inference-mode tensor has no version counter: always check
            check(tensor, name)
            return
        seen = _PASSED.get(key)
        if seen is not None and seen[0]() is tensor and seen[1] == version:
            return
        check(tensor, name)

        def forget(_: object, key: tuple[int, str] = key) -> None:
            _PASSED.pop(key, None)

        _PASSED[key] = (weakref.ref(tensor, forget), version)

    return checked


def _where(bad: Tensor) -> str:
    """`` in layer(s) [...]`` for a ``[*batch]`` mask, or nothing for an unbatched object."""
    if bad.ndim == 0:
        return ""
    return f" in layer(s) {bad.flatten().nonzero().flatten().tolist()} of {bad.numel()}"


def check_unit_rows(direction: Tensor, name: str) -> None:
    """Raise unless each ``[..., d]`` row of ``direction`` has unit norm (within tolerance)."""
    norms = direction.to(compute_dtype(direction.dtype)).norm(dim=-1)
    zero = norms == 0
    if bool(zero.any()):
        raise UserInputError(
            f"{name} is zero{_where(zero)}: there is nothing to ablate, and the edit would "
            "change nothing. Pass a unit direction (DirectionAblation.fit finds one)"
        )
    tol = stored_tolerance(direction.dtype, direction.shape[-1])
    off = (norms - 1).abs() > tol
    if bool(off.any()):
        worst = float(norms.flatten()[(norms - 1).abs().flatten().argmax()])
        raise UserInputError(
            f"{name} must have unit norm (within {tol:.1g}), got norm {worst:.6g}{_where(off)}; "
            "pass direction / direction.norm(dim=-1, keepdim=True)"
        )


@_once_per_tensor
def check_orthonormal_rows(rows: Tensor, name: str) -> None:
    """Raise unless the ``[..., k, d]`` rows are orthonormal (within tolerance): one
    ``k × k × d`` product."""
    work = rows.to(compute_dtype(rows.dtype))
    eye = torch.eye(rows.shape[-2], dtype=work.dtype, device=work.device)
    error = (work @ work.mT - eye).abs().amax((-2, -1))
    tol = stored_tolerance(rows.dtype, rows.shape[-1])
    if bool((error > tol).any()):
        raise UserInputError(
            f"{name} must have orthonormal rows (components @ components.mT = I within "
            f"{tol:.1g}), but is off by {float(error.max()):.3g}{_where(error > tol)}; "
            "orthonormalise it, e.g. torch.linalg.qr(components.mT).Q.mT"
        )


@_once_per_tensor
def check_symmetric_psd(matrix: Tensor, name: str) -> None:
    """Raise unless the ``[..., k, k]`` matrices are symmetric p.s.d. within tolerance (relative
    to their largest entry): one Cholesky factorisation of ``M + tol·max|M|·I``."""
    work = matrix.to(compute_dtype(matrix.dtype))
    tol = stored_tolerance(matrix.dtype, matrix.shape[-1])
    scale = work.abs().amax((-2, -1))
    scale = torch.where(scale > 0, scale, 1)  # a zero matrix is p.s.d.
    asymmetric = (work - work.mT).abs().amax((-2, -1)) > tol * scale
    if bool(asymmetric.any()):
        raise UserInputError(
            f"{name} must be symmetric (within {tol:.1g} of its largest entry), but is not"
            f"{_where(asymmetric)}; a covariance or transport matrix is symmetric by "
            "construction: refit it, or pass (M + M.mT) / 2"
        )
    eye = torch.eye(matrix.shape[-1], dtype=work.dtype, device=work.device)
    shifted = (work + work.mT) / 2 + (tol * scale)[..., None, None] * eye
    _, info = torch.linalg.cholesky_ex(shifted)
    if bool((info != 0).any()):
        lowest = torch.linalg.eigvalsh((work + work.mT) / 2)[..., 0] / scale
        raise UserInputError(
            f"{name} must be positive semi-definite, but has an eigenvalue of "
            f"{float(lowest.min()):.3g} times its largest entry{_where(info != 0)} (tolerance "
            f"-{tol:.1g}); a covariance or transport matrix is p.s.d. by construction: refit it"
        )


def all_finite(tensor: Tensor) -> bool:
    """Whether ``tensor`` holds no NaN or inf: one sum (NaN and inf propagate through it), ~20x
    cheaper than ``isfinite().all()`` on CPU; ``isfinite`` only if the sum itself overflowed."""
    tensor = tensor.detach()
    if math.isfinite(float(tensor.sum(dtype=compute_dtype(tensor.dtype)))):
        return True
    return bool(torch.isfinite(tensor).all())


def cast_back(out: Tensor, x: Tensor, what: str, strength: float) -> Tensor:
    """``out``, computed from the activations ``x``, in ``x``'s dtype; raise if that turned
    finite inputs into inf or NaN (an overflow, e.g. float16's 65504), instead of returning it.

    Costs one sum over the output (and a sync on GPU); the inputs are looked at only when it
    finds a non-finite value.
    """
    result = out.to(x.dtype)
    if all_finite(result):
        return result
    # Per row: an edit mixes a row's coordinates, so one inf in the input can spoil its row.
    new = (~torch.isfinite(result)).any(-1) & torch.isfinite(x).all(-1)
    if not bool(new.any()):
        return result  # the non-finite values come from non-finite inputs
    if x.dtype in (torch.float16, torch.bfloat16) and out.dtype != x.dtype:
        advice = (
            "run the model in torch.bfloat16 (which has float32's range) or torch.float32, or "
            f"lower the strength (now {strength:g})"
        )
    else:
        advice = (
            f"lower the strength (now {strength:g}) and check the map's largest stretch "
            "(diagnostics().max_stretch) and the activations' scale"
        )
    raise UserInputError(
        f"{what}: the edited activations exceed the range of {x.dtype} (largest finite value "
        f"{torch.finfo(x.dtype).max:.4g}): {int(new.sum())} finite row(s) came out with inf or "
        f"NaN values; {advice}"
    )


# The package, and the shape-checking wrappers that pytest puts around its functions.
_INTERNAL_MODULES = ("tl_ot_ablation.", "jaxtyping.", "beartype.")


def stacklevel_outside(frame: FrameType) -> int:
    """``stacklevel`` for a ``warnings.warn`` called in ``frame`` (pass ``sys._getframe()``) that
    points at the first frame outside the package: the user's line, whatever route led there."""
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        _INTERNAL_MODULES
    ):
        frame, level = frame.f_back, level + 1
    return level
