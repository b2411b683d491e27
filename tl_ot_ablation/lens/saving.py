"""``tlo.save`` / ``tlo.load``: one entry point for a single fitted object or a whole set.

Tensor objects (maps, baselines, bases) are stored by ``io.serialize``; an
``InterventionSet`` is a folder of those plus its own config, written by
``InterventionSet.save``. Both are written atomically and verified when read.
"""

from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserInputError
from ..io import serialize
from .intervention_set import SET_KIND, InterventionSet


def save(
    obj: Any,
    path: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``obj`` (a fitted map, baseline, basis or InterventionSet) to the folder ``path``,
    atomically; see ``io.serialize.save`` for what is checked and replaced."""
    if isinstance(obj, InterventionSet):
        if metadata:
            raise UserInputError("an InterventionSet keeps its metadata itself: set obj.metadata")
        return obj.save(path, overwrite=overwrite)
    return serialize.save(obj, path, metadata=metadata, overwrite=overwrite)


def load(path: str | Path, *, device: torch.device | str = "cpu", verify: bool = True) -> Any:
    """Read an object written by ``save`` onto ``device``, verifying it (its manifest,
    checksums, shapes, finiteness, fields; ``verify=False`` skips the checksums and manifest
    an older version did not write); tensors come back bit-for-bit."""
    config = serialize.read_config(path, kinds={**serialize.KINDS, SET_KIND: InterventionSet})
    if config["kind"] == SET_KIND:
        return InterventionSet.load(path, device=device, verify=verify)
    return serialize.load(path, device=device, verify=verify)
