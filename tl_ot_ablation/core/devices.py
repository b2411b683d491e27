"""Check a device name before anything loads.

``torch.device("nonsense")`` raises a ``RuntimeError`` listing twenty device types, and an
unavailable accelerator (``cuda`` on a CPU-only build, ``cuda:3`` on a 2-GPU machine, ``mps``
off a Mac) fails only when the first tensor moves, deep inside torch, after the model has
loaded. ``resolve_device`` turns both into a one-line ``ValueError`` that says what this
machine has and what to pass instead.
"""

import torch

from .errors import UserInputError

_EXAMPLES = "e.g. cpu, cuda, cuda:1 or mps"
_ALWAYS = ("cpu", "meta")
"""Device types every PyTorch build can use."""


def available_devices() -> list[str]:
    """The devices this machine can use: ``cpu``, each CUDA device, ``mps``, each XPU."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        names += [f"xpu:{i}" for i in range(xpu.device_count())]
    return names


def resolve_device(device: str | torch.device | None, option: str = "device") -> torch.device:
    """``device`` parsed and checked to exist here (``None``: CUDA if available, else CPU,
    as ``load_model`` picks).

    Args:
        device: A name such as ``"cuda:1"``, a ``torch.device``, or ``None``.
        option: How the caller names the setting in messages (the CLI: ``"--device"``).

    Raises:
        ValueError: ``device`` is no device name, or this machine cannot use it; the message
            lists the devices available here and what to pass instead.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str | torch.device):
        raise UserInputError(
            f"{option} must be a name ({_EXAMPLES}) or torch.device, got {device!r}"
        )
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UserInputError(
            f"{option} {device!r} is not a device: expected {_EXAMPLES} "
            f"(available here: {', '.join(available_devices())})"
        ) from None
    problem = _unavailable(parsed)
    if problem is not None:
        available = available_devices()
        instead = _suggestion(parsed, available)
        fix = f"{option} {instead}" if option.startswith("--") else f"{option}={instead!r}"
        raise UserInputError(
            f"{option} {str(device)!r}: {problem}; available here: {', '.join(available)}; "
            f"use {fix}"
        )
    return parsed


def _unavailable(device: torch.device) -> str | None:
    """Why this machine cannot use ``device`` (``None``: it can)."""
    kind = device.type
    if kind in _ALWAYS:
        return None
    if kind == "cuda":
        if not torch.cuda.is_available():
            built = torch.version.cuda is not None or torch.version.hip is not None
            return "no CUDA GPU is visible" if built else "this PyTorch build has no CUDA"
        return _missing_index(device, torch.cuda.device_count(), "CUDA")
    if kind == "mps":
        return None if torch.backends.mps.is_available() else "MPS (Apple GPUs) is unavailable"
    backend = getattr(torch, kind, None)
    if backend is None or not hasattr(backend, "is_available"):
        return f"this package does not run on {kind!r} devices"
    if not backend.is_available():
        return f"no {kind} device is available"
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    return _missing_index(device, count, kind)


def _missing_index(device: torch.device, count: int, label: str) -> str | None:
    """Why ``device``'s index is not one of the ``count`` devices of its type, if it is not."""
    if device.index is None or device.index < count:
        return None
    return f"this machine has {count} {label} device{'s' if count != 1 else ''}"


def _suggestion(device: torch.device, available: list[str]) -> str:
    """What to pass instead of ``device``: the first available device of its type, else CPU."""
    same = [name for name in available if torch.device(name).type == device.type]
    return same[0] if same else "cpu"
