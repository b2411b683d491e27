"""One typed, frozen settings object per job (fit, compare, sweep), with the defaults in one place.

Every job fits the same map by default: the fields shared by all three (``JobSettings``) take
their defaults from ``lens.fit.RECOMMENDED_MAP`` and ``lens.collect.CollectOptions``, so
``run_sweep()`` from Python and ``tl-ot-ablation sweep`` measure the same map. Presets are named
sets of changes (``"default"``: none; ``"quick"``: fewer prompts, tokens and search steps)
that Python and the CLI share: ``CompareSettings.preset("quick", seed=1)``.

Settings check their own values when built, so a bad value fails before any model loads;
``resolve(n_layers)`` then checks layer indices against the model.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..core.errors import UserInputError
from ..lens.collect import CollectOptions
from ..lens.fit import RECOMMENDED_MAP, MapSpec
from .damage import KL_THRESHOLD, SHARE_MEASURES, check_measure, check_threshold
from .judge import check_judge_name
from .methods import COMPARED, HEADLINE, METHODS, SWEPT, check_method
from .selection import LayerSpec, check_layer_spec, middle_layer
from .strength import check_fractions, check_rule

PRESETS = ("default", "quick")
S = TypeVar("S", bound="JobSettings")
_DEFAULT_COLLECT = CollectOptions()
MAX_BLOCKS = 10_000
"""No model has more blocks: a larger layer index is a typo, refused before a model loads."""


def _positive_int(value: object, name: str) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise UserInputError(f"{name} must be an integer >= 1, got {value!r}")


def _positive_number(value: object, name: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise UserInputError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class JobSettings:
    """What every job shares: the map (``MapSpec`` fields), how prompts are run
    (``CollectOptions`` fields but ``progress``, which is per call), the training set size and
    the seed.

    Attributes:
        n_components: PCA subspace size ``k`` of the transport maps.
        reg: Relative ridge on the covariances.
        estimator: Covariance estimator ("ridge", "oas", "ledoit_wolf").
        gate: Gate of the transport maps ("none", "posterior", "hard").
        gate_prior: Prior probability of harmful in the gate.
        preserve_norm: Norm-preserving maps.
        positions: Fitting positions ("post_instruction", "last" or "all").
        batch_size: Prompts per forward pass and per generation batch (32: on a 2-core CPU
            greedy generation of 32 prompts ran 1.7x faster in batches of 32 than of 8; the
            logits of 32 prompts take about 20 MB per token of prompt, e.g. 1.2 GB at 60).
        system: Optional system prompt.
        n_train: Training prompts per class: the first this many of the shipped split or file.
        seed: Seeds sampling and the bootstrap (through generators; no global seed is set).
        allow_control_tokens: Let prompts and ``system`` hold the tokenizer's control tokens
            (``<|im_end|>``, ...), which act as real chat-turn markers; refused by default
            (``prompts.check_control_tokens``). The jobs (``eval.jobs``) honour it.
    """

    n_components: int = RECOMMENDED_MAP.n_components or 64
    reg: float = RECOMMENDED_MAP.reg
    estimator: str = RECOMMENDED_MAP.estimator
    gate: str = RECOMMENDED_MAP.gate
    gate_prior: float = RECOMMENDED_MAP.gate_prior
    preserve_norm: bool = RECOMMENDED_MAP.preserve_norm
    positions: str = _DEFAULT_COLLECT.positions
    batch_size: int = 32
    system: str | None = _DEFAULT_COLLECT.system
    n_train: int = 256
    seed: int = 0
    allow_control_tokens: bool = False

    QUICK: ClassVar[dict[str, Any]] = {}
    """The ``"quick"`` preset's changes to the defaults."""

    def __post_init__(self) -> None:
        self.map_spec()  # validates the map fields
        self.collect()  # validates positions and batch size
        _positive_int(self.n_train, "n_train")
        _check_seed(self.seed)

    def check_layers(self, n_layers: int) -> None:
        """Raise if a layer index is not a block of a model with ``n_layers`` (the CLI calls
        it right after loading, before any activation pass)."""
        raise NotImplementedError(f"{type(self).__name__} names no layers to check")

    @classmethod
    def preset(cls: type[S], name: str = "default", **changes: Any) -> S:
        """Settings of the preset ``name`` ("default" or "quick"), with ``changes`` on top."""
        if name not in PRESETS:
            raise UserInputError(f"unknown preset {name!r}; choose from {PRESETS}")
        base = cls.QUICK if name == "quick" else {}
        return cls(**{**base, **changes})

    def map_spec(self) -> MapSpec:
        """The transport maps' ``MapSpec``."""
        return dataclasses.replace(
            RECOMMENDED_MAP,
            n_components=self.n_components,
            reg=self.reg,
            estimator=self.estimator,  # type: ignore[arg-type]
            gate=self.gate,  # type: ignore[arg-type]
            gate_prior=self.gate_prior,
            preserve_norm=self.preserve_norm,
        )

    def collect(self, *, progress: bool = True) -> CollectOptions:
        """How the prompts are run (``CollectOptions``)."""
        return CollectOptions(
            positions=self.positions,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            system=self.system,
            progress=progress,
        )

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_json(cls: type[S], data: dict[str, Any]) -> S:
        """Settings from ``to_json`` output; an unknown or missing field raises."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserInputError(f"unknown {cls.__name__} field(s) {unknown}")
        tuples = {f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type)}
        values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class FitSettings(JobSettings):
    """``fit``: one method from the registry, saved as an ``InterventionSet``.

    Attributes:
        method: A name of ``methods.METHODS`` (not "none").
        layers: Selective layers ("auto": the W2² / variance argmax, as in ``compare``).
        direction_layer: Layer of the refusal direction (default: the middle one).
        sequential: Fit later layers on transported activations.
    """

    method: str = "ot_selective"
    layers: LayerSpec = "auto"
    direction_layer: int | None = None
    sequential: bool = True

    QUICK: ClassVar[dict[str, Any]] = {"n_train": 64}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_method(self.method, allow_none=False)
        check_layer_spec(self.layers)
        _check_direction_layer(self.direction_layer)

    def check_layers(self, n_layers: int) -> None:
        layers = [] if isinstance(self.layers, str) else list(self.layers)
        _check_layer_indices(layers, n_layers)
        if self.direction_layer is not None:
            _check_layer_indices([self.direction_layer], n_layers, name="direction_layer")


@dataclass(frozen=True)
class CompareSettings(JobSettings):
    """``compare``: every method fitted on one split, evaluated on a disjoint one.

    Attributes:
        layers: Layers of the selective methods (ActAdd, mean shift, per-neuron OT,
            ``ot_selective``): ``"judged"`` (default; ``"auto"`` in the quick preset): of the
            layers at 40 / 50 / 60 % depth and the W2 pick, the one where the first selective
            method (``ot_selective`` when run), at its KL ceiling, gets the most judged
            compliance on the validation harmful prompts (one generation pass each; it ties
            direction ablation where ``"auto"`` loses, README); ``"auto"``: where harmful and
            harmless training activations are furthest apart by W2² / variance (no
            generation); ``"middle"``; or a list. With no selective method to judge,
            ``"judged"`` falls back to ``"auto"`` (the layers are then unused).
        direction_layer: Layer whose mean difference gives the refusal direction (default:
            the middle layer).
        strength: Strength of every method when ``match_kl`` is ``None``.
        sequential: Fit later selected layers on transported activations.
        max_new_tokens: Greedy completion length (64: what the judge needs to see the answer
            take shape; README, "The compliance judge").
        judge_tokens: Refusal markers are searched in the first this many tokens.
        judge: The compliance judge's name: "classifier", "markers", a hub judge
            "hf:[KIND:]MODEL" (``eval.hf_judges``) or a ``judge.register_judge`` name.
        match_kl: ``"direction_ablation"`` (its validation KL is the budget), a number (the
            budget in nats) or ``None`` (no KL search: every ceiling is ``strength``).
        select: How a strength is chosen below its KL ceiling on the validation prompts
            (``eval.strength``): ``"compliance"`` (the judged-most-compliant of
            ``strength_fractions`` of the ceiling) or ``"kl"`` (the ceiling itself).
        strength_fractions: Fractions of the ceiling judged under ``select="compliance"``.
        max_strength: Upper end of the strength search.
        bisection_steps: Search steps per method (after strength 1 and ``max_strength``).
        methods: Which methods to run, names of ``methods.COMPARED`` ("none" always runs;
            default ``methods.HEADLINE``: direction ablation and ``ot_selective``).
        n_eval: Held-out prompts per class: the first this many of the shipped split or file.
        n_validation: Validation prompts per class for choosing strengths (shipped split or
            user files: the first this many).
        n_texts: Prose paragraphs for the perplexity check.
        n_questions: Shipped multiple-choice questions for the capability check (0: skip it).
        detect: Report each method's detectability by an activation monitor fitted on the
            clean training activations (``eval.detect``; costs no extra pass).
        match_measure: What the damage budget bounds (``damage.MATCH_MEASURES``): the mean
            first-token KL on the validation harmless prompts (``"mean"``, the default),
            its ``"median"``, ``"p90"``, or the ``"share_above"`` ``kl_threshold``. A numeric
            ``match_kl`` is in that measure's units (a share in (0, 1] for ``share_above``).
        kl_threshold: Nats above which a harmless prompt counts as moved
            (``damage.KL_THRESHOLD``): the share-above column and measure.
        n_xstest: Over-refusal prompts per class (safe, unsafe) when an XSTest-style set is
            given (``eval.xstest``): that many spread over the prompt types (``None``: all).
        gate_neighbours: For a gated map, the nearest training prompts listed for each of the
            held-out prompts that open its gate most (``eval.gate_report``; 0, the default:
            none). Costs one partial pass over the training prompts, up to the map's layer
            (minutes for the embedded model on a CPU, so it is off unless asked for).
    """

    layers: LayerSpec = "judged"
    direction_layer: int | None = None
    strength: float = 1.0
    sequential: bool = True
    max_new_tokens: int = 64
    judge_tokens: int = 32
    judge: str = "classifier"
    match_kl: str | float | None = "direction_ablation"
    select: str = "compliance"
    strength_fractions: tuple[float, ...] = (0.5, 0.75, 1.0)
    max_strength: float = 2.0
    bisection_steps: int = 6
    methods: tuple[str, ...] = HEADLINE
    n_eval: int = 32
    n_validation: int = 32
    n_texts: int = 8
    n_questions: int = 80
    detect: bool = True
    match_measure: str = "mean"
    kl_threshold: float = KL_THRESHOLD
    n_xstest: int | None = None
    gate_neighbours: int = 0

    QUICK: ClassVar[dict[str, Any]] = {
        "layers": "auto",
        "n_train": 64,
        "n_eval": 16,
        "n_texts": 4,
        "max_new_tokens": 48,
        "bisection_steps": 4,
        "n_questions": 40,
        "n_validation": 16,
        "strength_fractions": (0.5, 1.0),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for method in self.methods:
            check_method(method, among=COMPARED)
        if isinstance(self.match_kl, str) and self.match_kl != "direction_ablation":
            raise UserInputError(
                f"match_kl must be 'direction_ablation', a KL budget in nats or None, got "
                f"{self.match_kl!r}"
            )
        if isinstance(self.match_kl, int | float):
            _positive_number(self.match_kl, "match_kl")
        if self.match_kl == "direction_ablation" and "direction_ablation" not in self.methods:
            raise UserInputError("match_kl='direction_ablation' needs that method in `methods`")
        check_layer_spec(self.layers, judged=True)
        _check_direction_layer(self.direction_layer)
        _finite_at_least(self.strength, 0, "strength")
        _finite_at_least(self.max_strength, 1, "max_strength")
        for name in ("max_new_tokens", "judge_tokens", "n_eval", "n_validation", "n_texts"):
            _positive_int(getattr(self, name), name)
        check_rule(self.select, "select")
        check_fractions(self.strength_fractions)
        if not (isinstance(self.n_questions, int) and self.n_questions >= 0):
            raise UserInputError(f"n_questions must be an integer >= 0, got {self.n_questions!r}")
        check_judge_name(self.judge)
        if not isinstance(self.detect, bool):
            raise UserInputError(f"detect must be True or False, got {self.detect!r}")
        _check_damage_measure(self.match_measure, self.kl_threshold, self.match_kl, "match_kl")
        if self.n_xstest is not None:
            _positive_int(self.n_xstest, "n_xstest")
        neighbours = self.gate_neighbours
        if not (isinstance(neighbours, int) and not isinstance(neighbours, bool)) or neighbours < 0:
            raise UserInputError(f"gate_neighbours must be an integer >= 0, got {neighbours!r}")
        if not (isinstance(self.bisection_steps, int) and self.bisection_steps >= 0):
            raise UserInputError(
                f"bisection_steps must be an integer >= 0, got {self.bisection_steps}"
            )

    def check_layers(self, n_layers: int) -> None:
        self.resolve(n_layers)

    @property
    def judged_method(self) -> str | None:
        """The method whose judged compliance picks the layer under ``layers="judged"``:
        ``ot_selective`` when run, else the first selective method (``None``: none runs)."""
        selective = [m for m in self.methods if METHODS[m].selective]
        if "ot_selective" in selective:
            return "ot_selective"
        return selective[0] if selective else None

    def resolve(self, n_layers: int) -> "CompareSettings":
        """A copy with "none" first, the methods in report order, ``"middle"`` and the
        direction layer filled in, and layer indices checked against ``n_layers``."""
        layers: LayerSpec = self.layers
        if layers == "judged" and self.judged_method is None:
            layers = "auto"  # nothing selective to judge; the layers go unused
        if layers == "middle":
            layers = [middle_layer(n_layers)]
        elif not isinstance(layers, str):
            layers = sorted(set(layers))
        _check_layer_indices([*([] if isinstance(layers, str) else layers)], n_layers)
        direction = self.direction_layer
        direction = middle_layer(n_layers) if direction is None else direction
        _check_layer_indices([direction], n_layers, name="direction_layer")
        methods = tuple(m for m in METHODS if m in self.methods or m == "none")
        return dataclasses.replace(self, layers=layers, direction_layer=direction, methods=methods)


@dataclass(frozen=True)
class SweepSettings(JobSettings):
    """``sweep``: single layers, adjacent pairs, ``k`` and strength, scored without generation
    (and, with ``judged``, by the judge's reading of greedy completions at each placement).

    Attributes:
        layers: Layers to scan singly (``None``: every ``layer_stride``-th layer).
        layer_stride: Step between scanned layers when ``layers`` is ``None``.
        pairs: Also scan adjacent pairs ``(l, l + 1)`` of those layers.
        sequential: Fit a pair's second map on activations transported by its first.
        k_grid: ``k`` values tried at the best placement.
        strengths: Strengths tried for each method at the best placement.
        method: The transport method scanned (``methods.SWEPT``).
        direction_layer: Layer of the direction-ablation baseline (default: the middle one).
        kl_budget: "direction_ablation" (its KL) or a number: the damage allowed when picking
            the best placement.
        n_eval: Held-out prompts per class: the first this many of the shipped split or file.
        judged: Also generate greedy completions of the held-out harmful prompts under the
            references and every placement, and label them with ``judge``: compliance,
            deflection and degenerate shares per point (a generation pass each; the ``k`` and
            strength points stay generation-free). The best placement is then the most
            compliant within the budget (ties: the lower log-odds, then the lower KL), not the
            lowest log-odds; it is chosen on the held-out prompts it is scored on.
        max_new_tokens: Completion length of a judged sweep.
        judge: The compliance judge of a judged sweep (names as ``CompareSettings.judge``).
        match_measure: What ``kl_budget`` bounds when picking the best placement
            (``damage.MATCH_MEASURES``; default the mean KL).
        kl_threshold: Nats above which a harmless prompt counts as moved (the points'
            share-above column).
    """

    layers: list[int] | None = None
    layer_stride: int = 1
    pairs: bool = True
    sequential: bool = False
    k_grid: tuple[int, ...] = (8, 16, 32, 64, 128)
    strengths: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    method: str = "ot_selective"
    direction_layer: int | None = None
    kl_budget: str | float = "direction_ablation"
    n_eval: int = 32
    judged: bool = False
    max_new_tokens: int = 64
    judge: str = "classifier"
    match_measure: str = "mean"
    kl_threshold: float = KL_THRESHOLD

    QUICK: ClassVar[dict[str, Any]] = {
        "n_train": 64,
        "n_eval": 16,
        "max_new_tokens": 48,
        "layer_stride": 2,
        "pairs": False,
        "k_grid": (16, 64),
        "strengths": (0.5, 1.0, 2.0),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_method(self.method, among=SWEPT)
        if self.layers is not None:
            check_layer_spec(self.layers)
        _check_direction_layer(self.direction_layer)
        _positive_int(self.layer_stride, "layer_stride")
        _positive_int(self.n_eval, "n_eval")
        _positive_int(self.max_new_tokens, "max_new_tokens")
        if not isinstance(self.judged, bool):
            raise UserInputError(f"judged must be True or False, got {self.judged!r}")
        check_judge_name(self.judge)
        if not self.k_grid:
            raise UserInputError("k_grid is empty; give at least one k")
        for k in self.k_grid:
            _positive_int(k, "every k in k_grid")
        if not self.strengths:
            raise UserInputError("strengths is empty; give at least one strength")
        for strength in self.strengths:
            _positive_number(strength, "every strength")
        if isinstance(self.kl_budget, str):
            if self.kl_budget != "direction_ablation":
                raise UserInputError(
                    f"kl_budget must be 'direction_ablation' or a number, got {self.kl_budget!r}"
                )
        else:
            _positive_number(self.kl_budget, "kl_budget")
        _check_damage_measure(self.match_measure, self.kl_threshold, self.kl_budget, "kl_budget")

    def check_layers(self, n_layers: int) -> None:
        self.scanned_layers(n_layers)
        self.direction(n_layers)

    def scanned_layers(self, n_layers: int) -> list[int]:
        """The layers scanned singly, checked against ``n_layers``."""
        layers = self.layers or list(range(0, n_layers, self.layer_stride))
        _check_layer_indices(layers, n_layers)
        return sorted(set(layers))

    def direction(self, n_layers: int) -> int:
        """The direction-ablation baseline's layer, checked against ``n_layers``."""
        layer = middle_layer(n_layers) if self.direction_layer is None else self.direction_layer
        _check_layer_indices([layer], n_layers, name="direction_layer")
        return layer


_NO_FIT = ("batch_size", "seed", "allow_control_tokens")
"""``JobSettings`` fields that do not change a fitted map."""
MONITOR_HOOKS = ("resid_pre", "resid_mid", "resid_post")
"""The residual hook points a monitor can read (``lens.monitor.MonitorHookKind``)."""
MONITORED = tuple(m for m in COMPARED if m != "none")
"""What ``monitor`` tests by default: every compared method but the unmodified model."""


@dataclass(frozen=True)
class MonitorSettings(JobSettings):
    """``monitor``: how well an activation monitor detects each method, per monitored layer.

    The methods are fitted as in ``compare`` (``compare_settings()``), each set to its strength;
    the monitor is fitted on the clean training prompts and scored on held-out ones.

    Attributes:
        layers: Selective layers, as in ``compare`` (``"auto"``: the W2² / variance argmax).
        direction_layer: Layer of the refusal direction (default: the middle one).
        methods: Methods to detect, names of ``methods.COMPARED`` but "none" (default: all).
        monitor_layers: Monitored blocks: a list, or ``"auto"`` = the last selective layer and
            every 2nd later block (23 of 28 layers: ``[23, 25, 27]``).
        hook: Residual hook point monitored at each layer ("resid_pre", "resid_mid" or
            "resid_post": after the block, where an edit at its input shows).
        n_eval: Held-out prompts per class: the first this many of the shipped split or file.
        probe: Also train the supervised ``probe`` score per method on the training prompts
            (it knows the attack: the reference the unsupervised scores are read against).
        strengths: ``{method: strength}``; a method not named runs at strength 1 (e.g. the
            strengths ``compare`` matched, ``record.compare_strengths``).
    """

    layers: LayerSpec = "auto"
    direction_layer: int | None = None
    methods: tuple[str, ...] = MONITORED
    monitor_layers: list[int] | str = "auto"
    hook: str = "resid_post"
    n_eval: int = 32
    probe: bool = True
    strengths: dict[str, float] = dataclasses.field(default_factory=dict)

    QUICK: ClassVar[dict[str, Any]] = {"n_train": 64, "n_eval": 16}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.positions not in ("post_instruction", "last"):
            raise UserInputError(
                f"the monitor reads positions 'post_instruction' or 'last', got "
                f"{self.positions!r} ('all' gives prompts different numbers of rows)"
            )
        check_layer_spec(self.layers)
        _check_direction_layer(self.direction_layer)
        if isinstance(self.methods, str) or not self.methods:
            raise UserInputError(
                f"methods must be a non-empty tuple of names, got {self.methods!r}"
            )
        for method in self.methods:
            check_method(method, among=COMPARED, allow_none=False)
        # Registry order, once each: the record, the report and the plot list them alike.
        object.__setattr__(self, "methods", tuple(m for m in MONITORED if m in self.methods))
        if isinstance(self.monitor_layers, str):
            if self.monitor_layers != "auto":
                raise UserInputError(
                    "monitor_layers must be a list of layers or 'auto', got "
                    f"{self.monitor_layers!r}"
                )
        else:
            if not isinstance(self.monitor_layers, list | tuple) or not self.monitor_layers:
                raise UserInputError(
                    "monitor_layers must be a non-empty list of block indices or 'auto', got "
                    f"{self.monitor_layers!r}"
                )
            bad = [i for i in self.monitor_layers if not _is_block_index(i)]
            if bad:
                raise UserInputError(
                    f"monitor_layers must be block indices in 0..{MAX_BLOCKS - 1} (no model has "
                    f"more than {MAX_BLOCKS} blocks), got {bad}"
                )
            object.__setattr__(self, "monitor_layers", list(self.monitor_layers))
        if self.hook not in MONITOR_HOOKS:
            raise UserInputError(f"hook must be one of {MONITOR_HOOKS}, got {self.hook!r}")
        if not (isinstance(self.n_eval, int) and not isinstance(self.n_eval, bool)) or (
            self.n_eval < 2
        ):
            raise UserInputError(
                f"n_eval must be an integer >= 2 (an AUROC needs two scores per side), got "
                f"{self.n_eval!r}"
            )
        if not isinstance(self.probe, bool):
            raise UserInputError(f"probe must be True or False, got {self.probe!r}")
        if not isinstance(self.strengths, Mapping):
            raise UserInputError(
                f"strengths must map method names to numbers, got {self.strengths!r}"
            )
        object.__setattr__(self, "strengths", dict(self.strengths))  # no alias to the caller's
        for method, strength in self.strengths.items():
            if method not in self.methods:
                raise UserInputError(
                    f"strengths names {method!r}, which is not among the methods run "
                    f"{list(self.methods)}"
                )
            if not (
                isinstance(strength, int | float)
                and not isinstance(strength, bool)
                and math.isfinite(strength)
                and strength >= 0
            ):
                raise UserInputError(
                    f"the strength of {method} must be a finite number >= 0, got {strength!r}"
                )

    def fit_differences(self, other: JobSettings) -> list[str]:
        """The fields that shape the fitted maps (map, positions, system prompt, training size
        and, where ``other`` has them, the layers) whose values differ from ``other``'s: a
        strength matched under ``other`` means something else under these."""
        names = [f.name for f in dataclasses.fields(JobSettings) if f.name not in _NO_FIT]
        names += [n for n in ("layers", "direction_layer") if hasattr(other, n)]
        return [n for n in names if getattr(self, n) != getattr(other, n)]

    def strength(self, method: str) -> float:
        """The strength ``method`` runs at (1.0 unless ``strengths`` names it)."""
        return float(self.strengths.get(method, 1.0))

    def compare_settings(self) -> CompareSettings:
        """The ``CompareSettings`` the methods are fitted with (``compare.fit_methods``): these
        map, collection and layer fields, the methods, and no strength matching."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(JobSettings)}
        return CompareSettings(
            **shared,
            layers=self.layers,
            direction_layer=self.direction_layer,
            methods=("none", *self.methods),
            match_kl=None,
            n_eval=self.n_eval,
            n_questions=0,
            detect=False,
        )

    def check_layers(self, n_layers: int) -> None:
        self.compare_settings().resolve(n_layers)
        if not isinstance(self.monitor_layers, str):
            _check_layer_indices(self.monitor_layers, n_layers, name="monitor layer")

    def resolve_monitor_layers(self, selective: Sequence[int], n_layers: int) -> list[int]:
        """The monitored layers, checked against ``n_layers``; ``"auto"`` starts at the last of
        the (resolved) ``selective`` layers and takes every 2nd block after it."""
        if isinstance(self.monitor_layers, str):
            if not selective:
                raise UserInputError("monitor_layers='auto' needs the resolved selective layers")
            layers = list(range(max(selective), n_layers, 2))
        else:
            layers = sorted(set(self.monitor_layers))
        _check_layer_indices(layers, n_layers, name="monitor layer")
        return layers


def _check_damage_measure(measure: object, threshold: object, budget: object, name: str) -> None:
    """Raise unless ``measure`` and ``threshold`` are valid and a numeric ``budget`` fits the
    measure (a share of prompts is at most 1)."""
    check_measure(measure)
    check_threshold(threshold)
    numeric = isinstance(budget, int | float) and not isinstance(budget, bool)
    if measure in SHARE_MEASURES and numeric and budget > 1:  # type: ignore[operator]
        raise UserInputError(
            f"{name}={budget!r} bounds a share of prompts under match_measure={measure!r}: "
            "give a number in (0, 1]"
        )


def _check_seed(seed: object) -> None:
    """Numpy and torch generators take unsigned 64-bit seeds: refuse others before any work."""
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**64):
        raise UserInputError(
            f"seed must be an integer >= 0 and < 2**64 (numpy and torch take unsigned 64-bit "
            f"seeds), got {seed!r}"
        )


def _finite_at_least(value: object, low: int, name: str) -> None:
    """Refuse a non-number, NaN, infinity or a value below ``low`` (a strength search or
    interpolation to infinity never ends well)."""
    if not (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= low
    ):
        raise UserInputError(f"{name} must be a finite number >= {low}, got {value!r}")


def _is_block_index(layer: object) -> bool:
    """Whether ``layer`` could index a block of some model (``0 <= layer < MAX_BLOCKS``)."""
    return isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < MAX_BLOCKS


def _check_direction_layer(layer: object) -> None:
    if layer is not None and not _is_block_index(layer):
        raise UserInputError(
            f"direction_layer must be a block index in 0..{MAX_BLOCKS - 1} (no model has more "
            f"than {MAX_BLOCKS} blocks) or None, got {layer!r}"
        )


def _check_layer_indices(layers: Sequence[int], n_layers: int, name: str = "layer") -> None:
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise UserInputError(
            f"{name}(s) {bad} out of range: this model has layers 0..{n_layers - 1}"
        )
