"""Save and load fitted tensor objects: safetensors for tensors, JSON for everything else.

A saved object is a folder holding ``tensors.safetensors`` and ``config.json``. The config names
the ``kind`` (class), a ``format_version``, every non-tensor field (strength, reg, basis method,
...), free-form ``metadata`` (what the object was fitted on) and, for integrity, the SHA-256 of
the tensor file and each tensor's shape and dtype. Loading never unpickles. It checks, and names
the file and field of any failure: the kind and format version, the checksum, that every tensor
the kind needs is present with the recorded shape and is finite, that no tensor belongs to
another kind, and that every required field is given. Unknown config keys are ignored, so files
from newer minor versions still load. Folders are written atomically (``io.atomic``).
"""

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ..core.baselines import ActAdd, DirectionAblation, PerNeuronOT
from ..core.devices import resolve_device
from ..core.errors import UserInputError
from ..core.ot_map import GaussianOTMap, MeanShift
from ..core.pca import PCABasis
from ..core.tensor_dataclass import TensorDataclass
from . import atomic
from .manifest import sha256_file, verify_manifest

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
TENSORS_NAME = "tensors.safetensors"

KINDS: dict[str, type[TensorDataclass]] = {
    cls.__name__: cls
    for cls in (GaussianOTMap, MeanShift, DirectionAblation, ActAdd, PerNeuronOT, PCABasis)
}
"""Savable tensor kinds by class name (a folder of objects, e.g. an InterventionSet, is saved
by its own layer with its own kind)."""


def _flatten(
    obj: TensorDataclass, prefix: str = ""
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if isinstance(value, TensorDataclass):
            sub_tensors, sub_fields = _flatten(value, f"{prefix}{f.name}.")
            tensors.update(sub_tensors)
            fields[f.name] = sub_fields
        elif isinstance(value, torch.Tensor):
            tensors[prefix + f.name] = value.detach().to("cpu").contiguous().clone()
        else:
            fields[f.name] = value
    return tensors, fields


def _tensor_names(cls: type, prefix: str = "") -> set[str]:
    """Every tensor a saved ``cls`` holds, by its flattened name."""
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        if isinstance(f.type, type) and issubclass(f.type, TensorDataclass):
            names |= _tensor_names(f.type, f"{prefix}{f.name}.")
        elif f.name in getattr(cls, "EVENT_DIMS", {}):
            names.add(prefix + f.name)
    return names


def _build(
    cls: type,
    tensors: Mapping[str, torch.Tensor],
    fields: Mapping[str, Any],
    where: Path,
    prefix: str = "",
) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if isinstance(f.type, type) and issubclass(f.type, TensorDataclass):
            sub = fields.get(f.name)
            if not isinstance(sub, dict):
                raise UserInputError(f"{where}: field {name!r} of {cls.__name__} is missing")
            kwargs[f.name] = _build(f.type, tensors, sub, where, f"{name}.")
        elif name in tensors:
            kwargs[f.name] = tensors[name]
        elif f.name in fields:
            kwargs[f.name] = fields[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserInputError(f"{where}: field {name!r} of {cls.__name__} is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        message = f"{where}: the saved fields do not make a valid {cls.__name__}: {err}"
        raise UserInputError(message) from err


OBJECT_KEYS = ("kind", "format_version", "fields", "metadata", "tensors", "sha256")
"""The config keys of a saved object that its checksum covers (format version 1)."""
CHECKSUM_KEY = "config_sha256"


def _known_fields(cls: type, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` restricted to ``cls``'s dataclass fields (recursively), so keys a newer
    version adds are ignored by the checksum as they are by loading."""
    known: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in fields:
            continue
        value = fields[f.name]
        nested = isinstance(f.type, type) and issubclass(f.type, TensorDataclass)
        if nested and isinstance(value, dict):
            value = _known_fields(f.type, value)  # type: ignore[arg-type]
        known[f.name] = value
    return known


def config_checksum(config: Mapping[str, Any], keys: tuple[str, ...] = OBJECT_KEYS) -> str:
    """SHA-256 of the config's ``keys`` (a tensor kind's ``fields`` restricted to its own), in
    canonical JSON: what loading reads, so an edited or corrupted value cannot load silently."""
    covered = {key: config[key] for key in keys if key in config}
    kind = KINDS.get(config.get("kind", ""))
    if kind is not None and isinstance(covered.get("fields"), dict):
        covered["fields"] = _known_fields(kind, covered["fields"])
    try:
        text = json.dumps(covered, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"metadata must be JSON-serialisable (and finite): {err}") from err
    return hashlib.sha256(text.encode()).hexdigest()


def write_config(
    folder: Path, config: Mapping[str, Any], keys: tuple[str, ...] = OBJECT_KEYS
) -> None:
    """Write ``config.json`` (sorted keys) with its checksum over ``keys``; raises
    ``ValueError`` for non-JSON values."""
    config = {**config, CHECKSUM_KEY: config_checksum(config, keys)}
    text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    (folder / CONFIG_NAME).write_text(text + "\n")


def verify_config(
    folder: Path, config: Mapping[str, Any], keys: tuple[str, ...] = OBJECT_KEYS
) -> None:
    """Raise unless ``config`` matches the checksum it was written with; a config without one
    (deleted, or from before checksums) cannot be verified and is refused as well."""
    recorded = config.get(CHECKSUM_KEY)
    if recorded is None:
        raise UserInputError(
            f"{folder / CONFIG_NAME} has no {CHECKSUM_KEY!r}, so it cannot be verified (it was "
            "written by an older tl_ot_ablation, or edited); save it again, or load it "
            "unverified (verify=False) if you trust it"
        )
    if recorded != config_checksum(config, keys):
        raise UserInputError(
            f"{folder / CONFIG_NAME} does not match the checksum it was saved with: a value was "
            "edited or corrupted after saving; save the object again"
        )


def write_object(obj: Any, folder: Path, metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``obj``'s files into an existing (temporary) ``folder``; see ``save``."""
    kind = type(obj).__name__
    if kind not in KINDS:
        raise TypeError(f"cannot save a {kind}; savable kinds are {sorted(KINDS)}")
    tensors, fields = _flatten(obj)
    (folder / TENSORS_NAME).write_bytes(safetensors_bytes(tensors))
    write_config(
        folder,
        {
            "kind": kind,
            "format_version": FORMAT_VERSION,
            "fields": fields,
            "metadata": dict(metadata or {}),
            "tensors": {
                name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                for name, t in tensors.items()
            },
            "sha256": {TENSORS_NAME: sha256_file(folder / TENSORS_NAME)},
        },
    )


def save(
    obj: Any,
    path: str | Path,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a fitted map, baseline or basis to the folder ``path``, atomically.

    An existing folder written by tl_ot_ablation is replaced whole; any other non-empty folder
    is refused unless ``overwrite=True``.

    Example:
        >>> import tempfile
        >>> ab = DirectionAblation(direction=torch.tensor([1.0, 0.0]))
        >>> folder = save(ab, tempfile.mkdtemp() + "/ab", metadata={"layer": 6})
        >>> load(folder).direction
        tensor([1., 0.])
    """
    if type(obj).__name__ not in KINDS:
        raise TypeError(f"cannot save a {type(obj).__name__}; savable kinds are {sorted(KINDS)}")
    with atomic.folder(path, overwrite=overwrite) as temp:
        write_object(obj, temp, metadata)
    return Path(path)


def not_saved_message(folder: Path) -> str:
    return (
        f"{folder} is not a saved tl_ot_ablation object: expected a folder holding "
        f"{CONFIG_NAME} and {TENSORS_NAME}, as written by tl_ot_ablation.save"
    )


def read_config(path: str | Path, *, kinds: Mapping[str, Any] = KINDS) -> dict[str, Any]:
    """The JSON config of a saved object, validated: its kind is one of ``kinds`` and its
    format version is known; a tensor kind's tensor file is present."""
    folder = Path(path)
    config_file = folder / CONFIG_NAME
    if not folder.is_dir() or not config_file.is_file():
        raise UserInputError(not_saved_message(folder))
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{config_file} is not valid JSON ({err})") from err
    if not isinstance(config, dict) or "kind" not in config or "format_version" not in config:
        raise UserInputError(
            f"{config_file} has no 'kind' / 'format_version': not written by save()"
        )
    version = config["format_version"]
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > 1
        fix = (
            "upgrade tl_ot_ablation to read it"
            if newer
            else "this version no longer reads it; fit and save it again"
        )
        raise UserInputError(
            f"{folder} has format_version {version!r}; this version of tl_ot_ablation reads "
            f"format_version {FORMAT_VERSION}: {fix}"
        )
    if config["kind"] not in kinds:
        raise UserInputError(
            f"{folder} holds an unknown kind {config['kind']!r}; known: {sorted(kinds)}"
        )
    if config["kind"] in KINDS and not (folder / TENSORS_NAME).is_file():
        raise UserInputError(not_saved_message(folder))
    for key, kind in (("fields", dict), ("metadata", dict), ("tensors", dict), ("sha256", dict)):
        if key in config and not isinstance(config[key], kind):
            raise UserInputError(f"{config_file}: field {key!r} must be a JSON object")
    return config


def _load_tensors(folder: Path, config: Mapping[str, Any], verify: bool) -> dict[str, torch.Tensor]:
    file = folder / TENSORS_NAME
    expected = config.get("sha256", {}).get(TENSORS_NAME)
    if expected is None and verify:
        raise UserInputError(
            f"{folder / CONFIG_NAME} records no SHA-256 for {TENSORS_NAME}, so it cannot be "
            "verified; save it again, or load it unverified (verify=False) if you trust it"
        )
    if expected is not None and sha256_file(file) != expected:
        raise UserInputError(
            f"{file} does not match the SHA-256 recorded in {folder / CONFIG_NAME}: the file was "
            "changed or corrupted after saving; save the object again"
        )
    try:
        tensors = load_file(str(file), device="cpu")
    except (SafetensorError, OSError, RuntimeError) as err:
        raise UserInputError(f"{file} is not a readable safetensors file ({err})") from err
    kind = KINDS[config["kind"]]
    wanted = _tensor_names(kind)
    missing, foreign = sorted(wanted - set(tensors)), sorted(set(tensors) - wanted)
    if missing or foreign:
        raise UserInputError(
            f"{file} does not hold the tensors of a {config['kind']}: "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and foreign else "")
            + (f"unexpected {foreign}" if foreign else "")
        )
    for name, spec in config.get("tensors", {}).items():
        if name in tensors and list(tensors[name].shape) != list(spec.get("shape", [])):
            raise UserInputError(
                f"{file}: tensor {name!r} has shape {list(tensors[name].shape)}, but "
                f"{CONFIG_NAME} records {spec.get('shape')}"
            )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserInputError(f"{file}: tensor {name!r} holds NaN or inf values")
    return tensors


def to_device(obj: Any, device: torch.device | str) -> Any:
    """``obj.to(device)``, with an error that blames the device, not the file, when it is
    unknown or not available here (``devices.resolve_device``)."""
    try:
        target = resolve_device(device)
    except ValueError as err:
        raise UserInputError(f"cannot load onto device {device!r}: {err}") from err
    return obj if target.type == "cpu" else obj.to(target)


def load_part(path: str | Path, *, verify: bool = True) -> Any:
    """Read one saved object on the CPU, checking its own config and tensor checksums but not
    a manifest (a set's parts are covered by the set's manifest)."""
    folder = Path(path)
    config = read_config(folder)
    tensors = _load_tensors(folder, config, verify)
    fields = config.get("fields", {})
    built = _build(KINDS[config["kind"]], tensors, fields, folder / CONFIG_NAME)
    if verify:
        verify_config(folder, config)  # last, so a specific problem is named first
    return built


def load(path: str | Path, *, device: torch.device | str = "cpu", verify: bool = True) -> Any:
    """Read an object written by ``save`` onto ``device``; tensors come back bit-for-bit.

    Every file is checked against the folder's manifest and checksums; ``verify=False`` reads
    a folder that has none (written by an older version) at your own risk.
    """
    folder = Path(path)
    built = load_part(folder, verify=verify)
    if verify:
        verify_manifest(folder)  # last, so a specific problem is named first
    return to_device(built, device)
