"""Save and load fitted interventions: safetensors for tensors, JSON for everything else.

A saved object is a folder holding ``tensors.safetensors`` and ``config.json``. The config names
the ``kind`` (class), a ``format_version``, every non-tensor field (strength, reg, basis method,
...) and free-form ``metadata`` (what the map was fitted on). Loading never unpickles; it
ignores unknown config keys, so files from newer minor versions still load, and raises a clear
error for an unknown kind or format version.
"""

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ._tensor_dataclass import TensorDataclass
from .baselines import ActAdd, DirectionAblation, PerNeuronOT
from .ot_map import GaussianOTMap, MeanShift
from .pca import PCABasis

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
TENSORS_NAME = "tensors.safetensors"
SET_KIND = "InterventionSet"  # saved by InterventionSet.save: a folder of saved objects

_KINDS: dict[str, type[TensorDataclass]] = {
    cls.__name__: cls
    for cls in (GaussianOTMap, MeanShift, DirectionAblation, ActAdd, PerNeuronOT, PCABasis)
}


def _flatten(obj: TensorDataclass, prefix: str = "") -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(value, TensorDataclass):
            sub_tensors, sub_fields = _flatten(value, f"{prefix}{f.name}.")
            tensors.update(sub_tensors)
            fields[f.name] = sub_fields
        elif isinstance(value, Tensor):
            tensors[prefix + f.name] = value.detach().to("cpu").contiguous().clone()
        else:
            fields[f.name] = value
    return tensors, fields


def _build(
    cls: type, tensors: Mapping[str, Tensor], fields: Mapping[str, Any], prefix: str = ""
) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if name in tensors:
            kwargs[f.name] = tensors[name]
        elif (
            isinstance(fields.get(f.name), dict)
            and isinstance(f.type, type)
            and issubclass(f.type, TensorDataclass)
        ):
            kwargs[f.name] = _build(f.type, tensors, fields[f.name], f"{name}.")
        elif f.name in fields:
            kwargs[f.name] = fields[f.name]
    return cls(**kwargs)


def save(obj: Any, path: str | Path, *, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``obj`` (a fitted map, baseline, basis or InterventionSet) to the folder ``path``.

    Example:
        >>> import tempfile
        >>> ab = DirectionAblation(direction=torch.tensor([1.0, 0.0]))
        >>> folder = save(ab, tempfile.mkdtemp() + "/ab", metadata={"layer": 6})
        >>> load(folder).direction
        tensor([1., 0.])
    """
    from .intervention_set import InterventionSet  # imports this module: import here

    if isinstance(obj, InterventionSet):
        if metadata:
            raise ValueError("an InterventionSet keeps its metadata itself: set obj.metadata")
        return obj.save(path)
    kind = type(obj).__name__
    if kind not in _KINDS:
        raise TypeError(f"cannot save a {kind}; savable kinds are {sorted(_KINDS)}")
    tensors, fields = _flatten(obj)
    config = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "fields": fields,
        "metadata": dict(metadata or {}),
    }
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(config, indent=2, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
    save_file(tensors, str(folder / TENSORS_NAME))
    (folder / CONFIG_NAME).write_text(text + "\n")
    return folder


def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON config of a saved object, validated (kind and format version known)."""
    folder = Path(path)
    config_file = folder / CONFIG_NAME
    if not folder.is_dir() or not config_file.is_file():
        raise ValueError(_not_saved(folder))
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON ({err})") from err
    if not isinstance(config, dict) or "kind" not in config or "format_version" not in config:
        raise ValueError(f"{config_file} has no 'kind' / 'format_version': not written by save()")
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{folder} has format_version {config['format_version']!r}; this version of "
            f"tl_ot_ablation reads format_version {FORMAT_VERSION}. Upgrade tl_ot_ablation."
        )
    known = sorted([*_KINDS, SET_KIND])
    if config["kind"] not in known:
        raise ValueError(f"{folder} holds an unknown kind {config['kind']!r}; known: {known}")
    if config["kind"] != SET_KIND and not (folder / TENSORS_NAME).is_file():
        raise ValueError(_not_saved(folder))
    return config


def _not_saved(folder: Path) -> str:
    return (
        f"{folder} is not a saved tl_ot_ablation object: expected a folder holding "
        f"{CONFIG_NAME} and {TENSORS_NAME}, as written by tl_ot_ablation.save"
    )


def load(path: str | Path, *, device: torch.device | str = "cpu") -> Any:
    """Read an object written by ``save`` onto ``device``; tensors come back bit-for-bit."""
    config = read_config(path)
    if config["kind"] == SET_KIND:
        from .intervention_set import InterventionSet  # imports this module: import here

        return InterventionSet.from_config(path, config, device=device)
    tensors = load_file(str(Path(path) / TENSORS_NAME), device=str(device))
    return _build(_KINDS[config["kind"]], tensors, config.get("fields", {}))
