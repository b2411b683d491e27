"""What every job's settings share (``JobSettings``): the map, how prompts are run, the
training size and the seed; presets; and the JSON form the records store.

The map is a ``MapSpec`` and the way prompts are run a ``CollectOptions``, held as they are
(``settings.map``, ``settings.collect``) and passed down to the fits unchanged, so a job and
``fit_ot_ablation`` read one definition of each field. Their defaults are ``JOB_MAP``
(``RECOMMENDED_MAP`` with k = 64) and ``JOB_COLLECT`` (batches of 32), so ``run_sweep()`` from
Python and ``tl-ot-ablation sweep`` measure the same map.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ...core.errors import UserInputError
from ...lens.collect import CollectOptions
from ...lens.map_spec import RECOMMENDED_MAP, MapSpec
from .checks import check_seed, positive_int

PRESETS = ("default", "quick")
S = TypeVar("S", bound="JobSettings")

JOB_MAP = dataclasses.replace(RECOMMENDED_MAP, n_components=RECOMMENDED_MAP.n_components or 64)
"""The map every job fits by default: ``RECOMMENDED_MAP`` (Ledoit-Wolf covariances, the
posterior gate) in a k = 64 subspace."""
JOB_COLLECT = CollectOptions(batch_size=32)
"""How every job runs its prompts by default: at the post-instruction positions, in batches of
32 (on a 2-core CPU greedy generation of 32 prompts ran 1.7x faster in batches of 32 than of
8; the logits of 32 prompts take about 20 MB per token of prompt, e.g. 1.2 GB at 60)."""
MAP_FIELDS = tuple(f.name for f in dataclasses.fields(MapSpec))
"""The ``MapSpec`` fields, which ``preset`` and ``with_changes`` also take by name."""
COLLECT_FIELDS = tuple(f.name for f in dataclasses.fields(CollectOptions) if f.name != "progress")
"""The ``CollectOptions`` fields a setting holds (not ``progress``, which is per call)."""
LEGACY_FIELDS = {
    "map": ("n_components", "reg", "estimator", "gate", "gate_prior", "preserve_norm"),
    "collect": ("positions", "batch_size", "system"),
}
"""The map and collection fields older records stored flat, beside the job's own."""


@dataclass(frozen=True)
class JobSettings:
    """What every job shares: the map, how prompts are run, the training set size and the
    seed.

    Attributes:
        map: How each transport map is fitted and applied (``MapSpec``: ``n_components``,
            ``reg``, ``estimator``, ``gate``, ...); default ``JOB_MAP``. A job needs a
            subspace size: ``n_components=None`` (the full space) is refused.
        collect: How prompts are run (``CollectOptions``: ``positions``, ``batch_size``,
            ``system``); default ``JOB_COLLECT``. Its ``progress`` is not a setting: each job
            call says whether to show progress (``collecting``).
        n_train: Training prompts per class: the first this many of the shipped split or file.
        seed: Seeds sampling and the bootstrap (through generators; no global seed is set).
        allow_control_tokens: Let prompts and the system prompt hold the tokenizer's control
            tokens (``<|im_end|>``, ...), which act as real chat-turn markers; refused by
            default (``control_tokens.check_control_tokens``). The jobs (``eval.jobs``) honour it.
    """

    map: MapSpec = JOB_MAP
    collect: CollectOptions = JOB_COLLECT
    n_train: int = 256
    seed: int = 0
    allow_control_tokens: bool = False

    QUICK: ClassVar[dict[str, Any]] = {}
    """The ``"quick"`` preset's changes to the defaults."""

    OLDER_RECORDS: ClassVar[dict[str, Any]] = {}
    """Fields added after records were first written, with the value those records ran with
    (``from_json`` fills them in where missing, instead of today's default)."""

    def __post_init__(self) -> None:
        if not isinstance(self.map, MapSpec):
            raise UserInputError(f"map must be a MapSpec, got {self.map!r}")
        if not isinstance(self.collect, CollectOptions):
            raise UserInputError(f"collect must be a CollectOptions, got {self.collect!r}")
        if self.map.n_components is None:  # a job's PCA subspace is always a chosen size
            raise UserInputError("n_components must be an integer >= 1, got None")
        positive_int(self.n_train, "n_train")
        check_seed(self.seed)

    def check_layers(self, n_layers: int) -> None:
        """Raise if a layer index is not a block of a model with ``n_layers`` (the CLI calls
        it right after loading, before any activation pass)."""
        raise NotImplementedError(f"{type(self).__name__} names no layers to check")

    def collecting(self, *, progress: bool = True) -> CollectOptions:
        """``collect`` for one call, with that call's ``progress``."""
        return dataclasses.replace(self.collect, progress=progress)

    @classmethod
    def nest(cls, changes: Mapping[str, Any], base: "JobSettings | None" = None) -> dict[str, Any]:
        """``changes`` with any ``MapSpec`` or ``CollectOptions`` field given by name (e.g.
        ``n_components=16``, ``batch_size=8``) moved into ``map`` / ``collect``, on top of
        ``base``'s (default: the class defaults)."""
        own = {f.name for f in dataclasses.fields(cls)}
        routed = (set(MAP_FIELDS) | set(COLLECT_FIELDS)) - own
        nested = {k: v for k, v in changes.items() if k not in routed}
        defaults = base or cls
        for name, fields in (("map", MAP_FIELDS), ("collect", COLLECT_FIELDS)):
            given = {k: v for k, v in changes.items() if k in fields and k in routed}
            if given:
                start = nested.get(name, getattr(defaults, name))
                nested[name] = dataclasses.replace(start, **given)
        return nested

    @classmethod
    def preset(cls: type[S], name: str = "default", **changes: Any) -> S:
        """Settings of the preset ``name`` ("default" or "quick"), with ``changes`` on top
        (fields of the settings, or of its ``map`` and ``collect`` by name)."""
        if name not in PRESETS:
            raise UserInputError(f"unknown preset {name!r}; choose from {PRESETS}")
        base = cls.QUICK if name == "quick" else {}
        return cls(**cls.nest({**base, **changes}))

    def with_changes(self: S, **changes: Any) -> S:
        """A copy with ``changes`` (fields of the settings, or of its ``map`` and ``collect`` by
        name: ``with_changes(n_components=16)``)."""
        return dataclasses.replace(self, **type(self).nest(changes, self))

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values: ``map`` and ``collect`` as objects (without
        ``progress``), tuples as lists."""
        data = dataclasses.asdict(self)
        data["collect"].pop("progress")
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in data.items()
        }

    @classmethod
    def from_json(cls: type[S], data: Mapping[str, Any]) -> S:
        """Settings from ``to_json`` output, or from an older record's flat map and collection
        fields; an unknown field raises, a missing one takes its default."""
        values = {**cls.OLDER_RECORDS, **data}
        for name, fields in LEGACY_FIELDS.items():
            flat = {key: values.pop(key) for key in fields if key in values}
            if flat:
                values[name] = {**dict(values.get(name, {})), **flat}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserInputError(f"unknown {cls.__name__} field(s) {unknown}")
        tuples = {f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type)}
        values = {k: tuple(v) if k in tuples else v for k, v in values.items()}
        for name, fields, default in (
            ("map", MAP_FIELDS, JOB_MAP),
            ("collect", COLLECT_FIELDS, JOB_COLLECT),
        ):
            if name in values:
                values[name] = _from_json(values[name], fields, default, name)
        return cls(**values)


def _from_json(data: Any, fields: tuple[str, ...], default: Any, name: str) -> Any:
    """A ``MapSpec`` / ``CollectOptions`` from its JSON object, on top of ``default``."""
    if not isinstance(data, Mapping):
        raise UserInputError(f"settings.{name} must be an object, got {data!r}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserInputError(f"unknown settings.{name} field(s) {unknown}")
    return dataclasses.replace(default, **data)
