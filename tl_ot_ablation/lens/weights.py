"""A hash of a model's weights: the part of a cache key that says which model produced a result.

Two models with the same name can differ (another revision, a fine-tune, another dtype, a
quantised copy), and a result cache keyed by name would then serve one model's completions
for the other. The hash covers every entry of the wrapped model's ``state_dict`` (name, dtype,
shape and bytes; quantised tensors by their integer values, scales and zero points), so only
the same weights share it. It reads every byte once (a few seconds for a 1.5B model on a CPU)
and is kept per model object until a weight changes.
"""

import hashlib
import weakref
from typing import Any

import torch

from ..core.tensor_dataclass import update_digest

_HASHES: "weakref.WeakKeyDictionary[Any, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _quantized_parts(tensor: torch.Tensor) -> list[torch.Tensor]:
    """A quantised tensor as plain ones: its integer values, scales and zero points."""
    if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scale = torch.tensor([tensor.q_scale(), float(tensor.q_zero_point())])
        return [tensor.int_repr(), scale]
    return [tensor.int_repr(), tensor.q_per_channel_scales(), tensor.q_per_channel_zero_points()]


def _update(digest: Any, value: object) -> None:
    """Fold a state-dict value into ``digest``: a tensor by dtype, shape and bytes
    (``core.tensor_dataclass.update_digest``; a quantised one part by part); a tuple or list
    (the packed parameters of a quantised layer) item by item; anything else by repr."""
    if isinstance(value, torch.Tensor) and value.is_quantized:
        digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
        for part in _quantized_parts(value):
            update_digest(digest, part)
    elif isinstance(value, torch.Tensor):
        update_digest(digest, value)
    elif isinstance(value, tuple | list):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _update(digest, item)
    else:
        digest.update(repr(value).encode())


def _state_signature(module: Any) -> tuple:
    """What changes whenever a weight does, read without the bytes: every tensor's dtype,
    shape, storage address and in-place version counter (torch's ``_version``, which every
    in-place operation bumps, ``no_grad`` or not)."""
    return tuple(
        (name, value.dtype, tuple(value.shape), value.data_ptr(), value._version)
        if isinstance(value, torch.Tensor) and not value.is_quantized
        else (name, id(value))
        for name, value in module.state_dict(keep_vars=True).items()
    )


def weights_sha256(model: Any) -> str:
    """Hex SHA-256 of the weights of ``model`` (a TransformerLens bridge or any
    ``torch.nn.Module``). Kept per model object until a weight changes (in place, or replaced,
    or cast: ``_state_signature``), then computed again."""
    module = getattr(model, "original_model", model)
    signature = _state_signature(module)
    try:
        kept_signature, kept = _HASHES[module]
        if kept_signature == signature:
            return kept
    except (KeyError, TypeError):
        pass
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        _update(digest, value)
    found = digest.hexdigest()
    try:
        _HASHES[module] = (signature, found)
    except TypeError:  # an object that takes no weak reference: hash again next time
        pass
    return found
