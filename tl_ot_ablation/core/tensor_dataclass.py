"""Shared behaviour of the frozen tensor-holding dataclasses: batch shape, indexing, ``.to``.

Every tensor field has a fixed number of trailing *event* dimensions (``EVENT_DIMS``); whatever
leads them is the batch shape shared by all fields, typically one entry per layer. Fields that
are themselves ``TensorDataclass`` instances (a map's PCA basis) are handled recursively.
The interventions' and the basis's constructors (so every copy and every load too) check their
tensors with ``_check_tensor_fields``: finite floats, one batch shape, one size per named axis.
"""

import dataclasses
import hashlib
import math
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from .errors import UserInputError
from .validate import all_finite

Self = TypeVar("Self", bound="TensorDataclass")


def update_digest(digest: Any, tensor: Tensor) -> None:
    """Fold a tensor into a ``hashlib`` digest: its dtype, shape and raw bytes (any dtype,
    bfloat16 included), so equal digests mean bit-identical tensors."""
    flat = tensor.detach().cpu().contiguous()
    digest.update(f"{flat.dtype}{tuple(flat.shape)}".encode())
    digest.update(flat.reshape(-1).view(torch.uint8).numpy().tobytes())


class TensorDataclass:
    """Mixin for ``@dataclass(frozen=True)`` classes whose tensors share leading batch dims."""

    EVENT_DIMS: ClassVar[dict[str, int]] = {}
    #: Names of each tensor field's event axes (``"k k"``); a class that gives them gets
    #: ``EVENT_DIMS`` from them, and ``_check_tensor_fields`` checks that an axis name has one
    #: size across all fields and nested objects.
    EVENT_AXES: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "EVENT_AXES" in cls.__dict__:
            cls.EVENT_DIMS = {name: len(axes.split()) for name, axes in cls.EVENT_AXES.items()}

    def _axis_sizes(self, prefix: str = "") -> tuple[torch.Size, dict[str, tuple[int, str]]]:
        """``(batch shape, {axis: (size, where it was read)})``, raising on any disagreement."""
        owner = type(self).__name__
        batch: tuple[torch.Size, str] | None = None
        sizes: dict[str, tuple[int, str]] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            where = f"{prefix}{f.name}"
            if isinstance(value, TensorDataclass):
                value_batch, nested = value._axis_sizes(f"{where}.")
                described = f"{where} (batch shape {tuple(value_batch)})"
            elif f.name in self.EVENT_DIMS:
                axes = self.EVENT_AXES.get(f.name, "").split()
                event = self.EVENT_DIMS[f.name]
                if value.ndim < event:
                    layout = ", ".join(["*batch", *axes]) if axes else f"*batch + {event} dims"
                    raise UserInputError(
                        f"{owner}.{where} must have shape [{layout}], got {tuple(value.shape)}"
                    )
                value_batch = value.shape[: value.ndim - event]
                described = f"{where} (shape {tuple(value.shape)})"
                event_shape = value.shape[value.ndim - event :] if axes else ()
                nested = {
                    axis: (int(size), described)
                    for axis, size in zip(axes, event_shape, strict=True)
                }
            else:
                continue
            if batch is None:
                batch = (value_batch, described)
            elif value_batch != batch[0]:
                raise UserInputError(
                    f"{owner}: {described} and {batch[1]} must share the leading (layer) "
                    f"dimensions; got {tuple(value_batch)} and {tuple(batch[0])}"
                )
            for axis, (size, seen) in nested.items():
                if axis not in sizes:
                    sizes[axis] = (size, seen)
                elif sizes[axis][0] != size:
                    raise UserInputError(
                        f"{owner}: {seen} has {axis}={size}, but {sizes[axis][1]} has "
                        f"{axis}={sizes[axis][0]}; every field must share {axis}"
                    )
        for axis, (size, seen) in sizes.items():
            if size < 1:
                raise UserInputError(f"{owner}: {seen} has {axis}=0; it must be at least 1")
        return (batch[0] if batch else torch.Size()), sizes

    def _check_tensor_fields(self) -> None:
        """What a public constructor checks of every object: each tensor field is a finite float
        tensor, and all agree on the batch shape and on each named axis (``EVENT_AXES``).
        Nested objects were checked by their own constructors. One pass over the values."""
        owner = type(self).__name__
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name not in self.EVENT_DIMS:
                continue
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"{owner}.{f.name} must be a torch.Tensor, got {type(value).__name__}"
                )
            if not value.is_floating_point():
                raise UserInputError(
                    f"{owner}.{f.name} must be a floating-point tensor, got dtype {value.dtype}"
                )
            if not all_finite(value):
                bad = int((~torch.isfinite(value)).sum())
                raise UserInputError(
                    f"{owner}.{f.name} holds {bad} NaN or inf value(s) ({value.dtype}); a fit "
                    "never stores them: refit, or check how the tensor was built (a cast "
                    "with .to() to float16 turns values above 65504 into inf: keep the fit "
                    "in float32)"
                )
        self._axis_sizes()

    def _tensor_items(self) -> Iterator[tuple[str, "Tensor | TensorDataclass"]]:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Tensor | TensorDataclass):
                yield f.name, value

    @property
    def batch_shape(self) -> torch.Size:
        """Leading dimensions shared by every tensor (``()`` for a single layer's object)."""
        for name, value in self._tensor_items():
            if isinstance(value, TensorDataclass):
                return value.batch_shape
            event = self.EVENT_DIMS[name]
            return value.shape[: value.ndim - event]
        return torch.Size()

    def fingerprint(self) -> str:
        """Hex SHA-256 of the class, every field's value and every tensor's dtype, shape and
        bytes: equal exactly when two objects compute the same thing (a cache key)."""
        digest = hashlib.sha256(type(self).__name__.encode())
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            digest.update(f.name.encode())
            if isinstance(value, TensorDataclass):
                digest.update(value.fingerprint().encode())
            elif isinstance(value, Tensor):
                update_digest(digest, value)
            else:
                digest.update(repr(value).encode())
        return digest.hexdigest()

    def _replace_tensors(self: Self, fn: Any) -> Self:
        changes = {}
        for name, value in self._tensor_items():
            changes[name] = (
                value._replace_tensors(fn) if isinstance(value, TensorDataclass) else fn(value)
            )
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to(
        self: Self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Self:
        """Copy with every tensor moved to ``device`` and/or cast to the float ``dtype``."""
        if dtype is not None and not dtype.is_floating_point:
            raise UserInputError(f"dtype must be a floating-point dtype, got {dtype}")
        return self._replace_tensors(lambda t: t.to(device=device, dtype=dtype))

    @property
    def device(self) -> torch.device:
        for _, value in self._tensor_items():
            return value.device
        raise AttributeError("no tensors")

    @property
    def dtype(self) -> torch.dtype:
        for _, value in self._tensor_items():
            return value.dtype
        raise AttributeError("no tensors")

    def __getitem__(self: Self, index: int | slice) -> Self:
        """The object for one entry (or a slice) of the leading batch axis, e.g. one layer."""
        if not self.batch_shape:
            raise IndexError(
                f"this {type(self).__name__} is not batched; there is nothing to index"
            )
        if isinstance(index, int) and not -self.batch_shape[0] <= index < self.batch_shape[0]:
            raise IndexError(
                f"index {index} is out of range for batch shape {tuple(self.batch_shape)}"
            )
        return self._replace_tensors(lambda t: t[index])

    def __len__(self) -> int:
        if not self.batch_shape:
            raise TypeError(f"this {type(self).__name__} is not batched and has no len()")
        return self.batch_shape[0]

    def _as_rows(self, x: Tensor, d_model: int) -> Tensor:
        """View ``x`` as ``[*batch, m, d_model]`` rows matching this object's batch shape."""
        batch = self.batch_shape
        if x.shape[-1] != d_model or x.shape[: len(batch)] != batch:
            expected = (
                "[*batch, d_model]"
                if not batch
                else f"[{', '.join(map(str, batch))}, ..., {d_model}]"
            )
            raise UserInputError(
                f"{type(self).__name__} with batch shape {tuple(batch)} expects activations of "
                f"shape {expected} with d_model={d_model}, got {tuple(x.shape)}"
            )
        if not batch:
            return x
        return x.reshape(*batch, -1, d_model)


class StrengthMixin(TensorDataclass):
    """``strength`` handling shared by every intervention: 0 is the identity, 1 the fitted edit."""

    strength: float
    #: Strengths above this get a warning (the fitted map is defined up to 1); None: no limit.
    STRENGTH_WARN_ABOVE: ClassVar[float | None] = 1.0

    def __post_init__(self) -> None:
        self._check_tensor_fields()
        if not (isinstance(self.strength, int | float) and math.isfinite(self.strength)):
            raise UserInputError(f"strength must be a finite number, got {self.strength!r}")
        if self.strength < 0:
            raise UserInputError(
                f"strength must be >= 0, got {self.strength}; use .inverse() to move "
                "activations the other way"
            )

    @property
    def d_model(self) -> int:
        """Width of the activations this intervention takes (its tensors' last dimension)."""
        for _, value in self._tensor_items():
            if isinstance(value, TensorDataclass):
                return int(value.d_model)  # type: ignore[attr-defined]
            return int(value.shape[-1])
        raise AttributeError(f"{type(self).__name__} holds no tensors")

    def with_strength(self: Self, strength: float) -> Self:
        """Copy with another ``strength`` (0: identity, 1: the fitted edit)."""
        limit = self.STRENGTH_WARN_ABOVE  # type: ignore[attr-defined]
        if limit is not None and strength > limit:
            warnings.warn(
                f"strength={strength} > {limit} extrapolates beyond the fitted "
                f"{type(self).__name__}; check the damage (KL) it causes on harmless prompts",
                stacklevel=2,
            )
        return dataclasses.replace(self, strength=float(strength))  # type: ignore[type-var]
