"""One JSON codec for every typed record: dataclass fields and type hints drive both ways.

A record (``results.json``, ``sweep.json``, ``detect.json`` and the parts inside them) is a
dataclass. ``encode`` writes its fields in declaration order; ``decode`` reads them back by their
type hints, checking every key and value, so a field added to a record is written and validated
without a line of JSON code, and an unknown, missing or mistyped key fails at once with a
``RecordError`` that names it (``results.json: methods.ot_full.kl_harmless lacks ['ci_low']``).

Three hooks cover what plain fields cannot say:

- ``Record.FORMAT``: the ``"<kind>/<version>"`` string written first and checked on reading;
- ``Record.DERIVED``: read-only keys written for readers of the file (``seed``), ignored on
  reading;
- field metadata ``FLATTEN`` / ``CHECK``: a ``dict`` field whose entries sit at the top level of
  the object (a method's metrics), and a field with a check beyond its type.

A type that defines its own ``to_json`` / ``from_json`` (the settings dataclasses) is written and
read with them.
"""

import dataclasses
import functools
import json
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from ..core.errors import UserInputError
from ..io import atomic

FLATTEN = "record_flatten"
"""Field metadata: the keys of a flattened ``dict`` field, in the order they are written."""
CHECK = "record_check"
"""Field metadata: ``check(value, where)``, run on the decoded value; raises ``RecordError``."""


class RecordError(UserInputError):
    """A results file that does not follow the record schema."""


R = TypeVar("R", bound="Record")


def check_keys(data: Any, allowed: set[str] | frozenset[str], where: str) -> None:
    """Raise unless ``data`` is a JSON object whose keys are all in ``allowed``."""
    if not isinstance(data, Mapping):
        raise RecordError(f"{where} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise RecordError(
            f"{where} has unknown key(s) {unknown}; expected some of {sorted(allowed)}"
        )


class Record:
    """A record file: its dataclass fields, a ``FORMAT`` and the file name errors start with.

    Subclasses are dataclasses; ``to_json`` / ``from_json`` / ``write`` / ``read`` come from
    here, so no record hand-codes its JSON.
    """

    FORMAT: ClassVar[str | None] = None
    """``"tl_ot_ablation.<kind>/<version>"``, written first (``None``: a part of a file)."""
    FILE: ClassVar[str] = "record"
    """How error messages name the object (``"results.json"``)."""
    DERIVED: ClassVar[Mapping[str, str]] = {}
    """``{key: field}``: a read-only property written right after ``field``."""

    def to_json(self) -> dict[str, Any]:
        """The JSON form: ``format`` first, then the fields in declaration order."""
        return _encode_object(self)

    @classmethod
    def from_json(cls: type[R], data: Any, where: str | None = None) -> R:
        """Validate and read ``to_json`` output (an unknown, missing or mistyped key raises
        ``RecordError`` naming it)."""
        value: R = decode(cls, data, where or cls.FILE)
        return value

    @classmethod
    def coerce(cls: type[R], value: Any) -> R:
        """``value`` as this record: itself, an object's ``to_record()``, or its JSON dict
        (validated), e.g. a ``json.load`` of the file in a notebook."""
        if hasattr(value, "to_record"):
            value = value.to_record()
        return value if isinstance(value, cls) else cls.from_json(value)

    def write(self, path: str | Path) -> Path:
        """Write as indented JSON, atomically."""
        return atomic.write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        """Read and validate a file ``write`` wrote."""
        return cls.from_json(read_json(path))


def read_json(path: str | Path) -> Any:
    """The JSON in ``path`` (``RecordError`` when it is not JSON)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordError(f"{path} is not valid JSON ({err})") from err


def encode(value: Any) -> Any:
    """The JSON value of ``value``: dataclasses field by field (or by their own ``to_json``),
    containers element by element, anything else as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if not isinstance(value, Record) and hasattr(value, "to_json"):
            return value.to_json()
        return _encode_object(value)
    if isinstance(value, Mapping):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    return value


def _encode_object(value: Any) -> dict[str, Any]:
    cls = type(value)
    data: dict[str, Any] = {}
    if getattr(cls, "FORMAT", None) is not None:
        data["format"] = cls.FORMAT
    derived = getattr(cls, "DERIVED", {})
    for item in dataclasses.fields(value):
        field_value = getattr(value, item.name)
        if FLATTEN in item.metadata:
            data |= {k: encode(field_value[k]) for k in item.metadata[FLATTEN] if k in field_value}
        else:
            data[item.name] = encode(field_value)
        data |= {key: getattr(value, key) for key, after in derived.items() if after == item.name}
    return data


def _child(where: str, key: str) -> str:
    return f"{where}: {key}" if where.endswith(".json") else f"{where}.{key}"


def decode(kind: Any, value: Any, where: str) -> Any:
    """``value`` read as type ``kind`` (a type hint); ``where`` names it in errors."""
    origin = get_origin(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        return _decode_union(kind, value, where)
    if kind in (int, float, str, bool):
        return _decode_scalar(kind, value, where)
    if origin is list or origin is tuple:
        if not isinstance(value, list | tuple):
            raise RecordError(f"{where} must be a list, got {value!r}")
        args = get_args(kind)
        if origin is tuple and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise RecordError(f"{where} must have {len(args)} entries, got {value!r}")
            return tuple(
                decode(a, v, f"{where}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        items = [decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise RecordError(f"{where} must be a JSON object, got {value!r}")
        item_kind = get_args(kind)[1]
        return {str(k): decode(item_kind, v, _child(where, str(k))) for k, v in value.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _decode_object(kind, value, where)
    raise TypeError(f"the record codec cannot read {kind!r} ({where})")


def _decode_scalar(kind: type, value: Any, where: str) -> Any:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is float and number:
        return float(value)
    if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
        return value
    raise RecordError(f"{where} must be {kind.__name__}, got {value!r}")


def _decode_union(kind: Any, value: Any, where: str) -> Any:
    options = [option for option in get_args(kind) if option is not type(None)]
    if value is None and len(options) < len(get_args(kind)):
        return None
    if len(options) == 1:  # ``X | None``: X's own error names what is wrong
        return decode(options[0], value, where)
    for option in options:
        try:
            return decode(option, value, where)
        except RecordError:
            continue
    names = " or ".join(getattr(option, "__name__", str(option)) for option in options)
    raise RecordError(f"{where} must be {names}, got {value!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _decode_object(cls: type, data: Any, where: str) -> Any:
    if not issubclass(cls, Record) and hasattr(cls, "from_json"):
        try:
            return cls.from_json(dict(data))
        except (TypeError, ValueError, AttributeError) as err:
            raise RecordError(f"{where}: {err}") from err
    fields = [item for item in dataclasses.fields(cls) if item.init]
    flat = {item.name: item.metadata[FLATTEN] for item in fields if FLATTEN in item.metadata}
    allowed = {item.name for item in fields if item.name not in flat}
    allowed |= {key for keys in flat.values() for key in keys} | set(getattr(cls, "DERIVED", {}))
    expected = getattr(cls, "FORMAT", None)
    check_keys(data, allowed | ({"format"} if expected else set()), where)
    if expected is not None:
        _check_format(data.get("format"), expected, where)
    required = {
        item.name
        for item in fields
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise RecordError(f"{where} lacks {missing}")
    values: dict[str, Any] = {}
    for item in fields:
        kind = _hints(cls)[item.name]
        if item.name in flat:
            entry = get_args(kind)[1]
            keys = [key for key in flat[item.name] if key in data]
            values[item.name] = {k: decode(entry, data[k], _child(where, k)) for k in keys}
        elif item.name in data:
            values[item.name] = decode(kind, data[item.name], _child(where, item.name))
            if CHECK in item.metadata:
                item.metadata[CHECK](values[item.name], _child(where, item.name))
    try:
        return cls(**values)
    except RecordError:
        raise
    except (TypeError, ValueError) as err:
        raise RecordError(f"{where}: {err}") from err


def _check_format(found: Any, expected: str, where: str) -> None:
    """Raise unless ``found`` is ``expected``; say so when only the version differs."""
    if found == expected:
        return
    kind, _, version = expected.rpartition("/")
    if isinstance(found, str) and found.rpartition("/")[0] == kind:
        raise RecordError(
            f"{where}: format is {found!r}, expected {expected!r} (record version "
            f"{found.rpartition('/')[2]}; this package reads version {version})"
        )
    raise RecordError(f"{where}: format is {found!r}, expected {expected!r}")
