"""The typed ``results.json`` / ``sweep.json`` / ``detect.json`` records: one module writes and
reads them.

A record is built from dataclasses and converted to JSON here only; reading validates every
key (an unknown or renamed key raises at once, naming it), so the report, the plots and a
notebook that re-reads a saved run all see the same schema. The JSON layout is documented in
the README's "results.json" section.
"""

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..core.errors import UserInputError
from ..core.monitor import SCORES
from ..io import atomic
from .detect import DetectionResult, find_result
from .matched import StrengthMatch
from .methods import check_method
from .metrics import Estimate
from .settings import CompareSettings, MonitorSettings, SweepSettings
from .strength import StrengthChoice, StrengthPoint

COMPARE_FORMAT = "tl_ot_ablation.compare/1"
SWEEP_FORMAT = "tl_ot_ablation.sweep/1"
MONITOR_FORMAT = "tl_ot_ablation.monitor/1"

METRICS = (
    "compliance_rate_harmful",
    "deflection_rate_harmful",
    "degenerate_rate_harmful",
    "compliance_rate_harmless",
    "refusal_rate_harmful",
    "refusal_rate_harmless",
    "kl_harmless",
    "ppl_harmless",
    "ppl_text",
    "refusal_score_harmful",
    "degenerate_rate_harmless",
    "degenerate_flag_rate_harmful",
    "degenerate_flag_rate_harmless",
    "ppl_harmful_base",
    "capability_accuracy",
    "detect_auroc_disagreement",
    "detect_auroc_likelihood",
    # Harmless damage as a distribution (``damage.DAMAGE_METRICS``).
    "kl_harmless_median",
    "kl_harmless_p90",
    "kl_harmless_max",
    "kl_harmless_share_above",
    "identical_rate_harmless",
    "label_changed_rate_harmless",
    # Over-refusal on XSTest-style prompts (``xstest.XSTEST_METRICS``).
    "xstest_compliance_safe",
    "xstest_compliance_unsafe",
    "xstest_over_refusal_removed",
    "xstest_over_refusal_added",
)
"""Every per-method metric a comparison can report (each an ``Estimate``); a record written
before a metric existed simply lacks it."""
GATE_KEYS = frozenset(
    {"hook", "layer", "position", "prior", "posterior", "posterior_max", "open", "top"}
)
"""The keys of a method's ``gate`` entry (``gate_report.GateRecorder.summary``)."""


class RecordError(UserInputError):
    """A results file that does not follow the record schema."""


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise RecordError(f"{where} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RecordError(
            f"{where} has unknown key(s) {unknown}; expected some of {sorted(allowed)}"
        )


def _estimate(data: Any, where: str) -> Estimate:
    _check_keys(data, {"value", "ci_low", "ci_high"}, where)
    try:
        return Estimate(float(data["value"]), float(data["ci_low"]), float(data["ci_high"]))
    except (KeyError, TypeError, ValueError) as err:
        raise RecordError(f"{where} needs numbers value, ci_low, ci_high ({err})") from err


def _match(data: Any, where: str) -> StrengthMatch | None:
    if data is None:
        return None
    _check_keys(data, {"strength", "damage", "budget", "reached", "path"}, where)
    return StrengthMatch(
        data["strength"],
        data["damage"],
        data["budget"],
        data["reached"],
        [(float(s), float(d)) for s, d in data.get("path", [])],
    )


def _selection(data: Any, where: str) -> dict[str, Any] | None:
    if data is None:
        return None
    _check_keys(data, {"strength", "rule", "ceiling", "points"}, where)
    point_keys = {f.name for f in dataclasses.fields(StrengthPoint)}
    for number, point in enumerate(data.get("points", [])):
        _check_keys(point, point_keys, f"{where}.points[{number}]")
    try:
        StrengthChoice.from_dict(dict(data))
    except (KeyError, TypeError, ValueError) as err:
        raise RecordError(f"{where}: {err!r}") from err
    return dict(data)


def _gate(data: Any, where: str) -> dict[str, Any] | None:
    if data is None:
        return None
    _check_keys(data, set(GATE_KEYS), where)
    return dict(data)


@dataclass
class MethodRecord:
    """One method's evaluation: its strength, metrics with CIs and what it was fitted with."""

    strength: float | None = None
    metrics: dict[str, Estimate] = field(default_factory=dict)
    refused_harmful: list[int] = field(default_factory=list)
    matched: StrengthMatch | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    judged_harmful: list[str] = field(default_factory=list)
    selection: dict[str, Any] | None = None
    """How the strength was chosen on the validation prompts (``StrengthChoice.to_dict``)."""
    kl_harmless_per_prompt: list[float] = field(default_factory=list)
    """First-token KL of each held-out harmless prompt (the distribution behind the KL
    columns; empty in records written before it was kept)."""
    judged_harmless: list[str] = field(default_factory=list)
    """The judge's label of each held-out harmless completion."""
    judged_xstest: dict[str, list[str]] = field(default_factory=dict)
    """``{"safe" | "unsafe": labels}`` of the XSTest-style completions, when run."""
    gate: dict[str, Any] | None = None
    """A gated map's posterior per prompt and the prompts that open it most
    (``gate_report``; ``None``: no gate)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise RecordError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "strength": self.strength,
            **{key: self.metrics[key].to_dict() for key in METRICS if key in self.metrics},
            "refused_harmful": self.refused_harmful,
            "matched": None if self.matched is None else self.matched.to_dict(),
            "fit": self.fit,
            "seconds": self.seconds,
            "judged_harmful": self.judged_harmful,
            "selection": self.selection,
            "kl_harmless_per_prompt": self.kl_harmless_per_prompt,
            "judged_harmless": self.judged_harmless,
            "judged_xstest": self.judged_xstest,
            "gate": self.gate,
        }

    def choice(self) -> StrengthChoice | None:
        """The strength choice as a ``StrengthChoice`` (its KL search is ``matched``)."""
        if self.selection is None:
            return None
        return dataclasses.replace(StrengthChoice.from_dict(self.selection), match=self.matched)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "method") -> "MethodRecord":
        plain = {f.name for f in dataclasses.fields(cls)} - {"metrics"}
        _check_keys(data, plain | set(METRICS), where)
        return cls(
            strength=data.get("strength"),
            metrics={k: _estimate(data[k], f"{where}.{k}") for k in METRICS if k in data},
            refused_harmful=list(data.get("refused_harmful", [])),
            matched=_match(data.get("matched"), f"{where}.matched"),
            fit=dict(data.get("fit", {})),
            seconds=dict(data.get("seconds", {})),
            judged_harmful=list(data.get("judged_harmful", [])),
            selection=_selection(data.get("selection"), f"{where}.selection"),
            kl_harmless_per_prompt=[float(v) for v in data.get("kl_harmless_per_prompt", [])],
            judged_harmless=list(data.get("judged_harmless", [])),
            judged_xstest={k: list(v) for k, v in (data.get("judged_xstest") or {}).items()},
            gate=_gate(data.get("gate"), f"{where}.gate"),
        )


@dataclass
class PromptsRecord:
    """Which prompts a comparison used: hashes and counts (no prompt text)."""

    train_sha256: str
    eval_sha256: str
    text_sha256: str
    n_train_harmful: int
    n_train_harmless: int
    n_eval_harmful: int
    n_eval_harmless: int
    n_texts: int
    train_eval_overlap: int
    validation_sha256: str | None = None
    n_validation_harmful: int = 0
    n_validation_harmless: int = 0
    validation_overlap: int = 0
    """Validation prompts also found among the training or evaluation prompts."""
    xstest_source: str | None = None
    """The over-refusal set: "shipped", or the file's name (``None``: not run)."""
    xstest_sha256: str | None = None
    n_xstest_safe: int = 0
    n_xstest_unsafe: int = 0
    n_questions: int | None = None
    """Capability questions asked (fewer than ``settings.n_questions`` when a file holds fewer;
    ``None`` in records written before this field)."""


@dataclass
class CompareRecord:
    """``results.json``: every method's result, the settings and the prompts used."""

    model: str
    settings: CompareSettings
    prompts: PromptsRecord
    methods: dict[str, MethodRecord]
    layer_choice: str = "given"
    w2_by_layer: list[dict[str, int | float]] | None = None
    layer_trials: list[dict[str, Any]] | None = None
    """Under ``layers="judged"``: each candidate layer's KL ceiling and judged shares."""
    command: str | None = None
    preset: str | None = None

    @property
    def seed(self) -> int:
        """The settings' seed (recorded at the top level too)."""
        return self.settings.seed

    def to_json(self) -> dict[str, Any]:
        return {
            "format": COMPARE_FORMAT,
            "model": self.model,
            "seed": self.seed,
            "settings": self.settings.to_json(),
            "prompts": dataclasses.asdict(self.prompts),
            "methods": {name: method.to_json() for name, method in self.methods.items()},
            "layer_choice": self.layer_choice,
            "w2_by_layer": self.w2_by_layer,
            "layer_trials": self.layer_trials,
            "command": self.command,
            "preset": self.preset,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "CompareRecord":
        allowed = {f.name for f in dataclasses.fields(cls)} | {"format", "seed"}
        _check_keys(data, allowed, "results.json")
        if data.get("format") != COMPARE_FORMAT:
            raise RecordError(f"format is {data.get('format')!r}, expected {COMPARE_FORMAT!r}")
        prompt_fields = {f.name for f in dataclasses.fields(PromptsRecord)}
        _check_keys(data["prompts"], prompt_fields, "results.json prompts")
        try:
            settings = CompareSettings.from_json(dict(data["settings"]))
            prompts = PromptsRecord(**data["prompts"])
        except (TypeError, ValueError) as err:
            raise RecordError(f"results.json: {err}") from err
        return cls(
            model=data["model"],
            settings=settings,
            prompts=prompts,
            methods={
                name: MethodRecord.from_json(method, f"methods.{name}")
                for name, method in data["methods"].items()
            },
            layer_choice=data.get("layer_choice", "given"),
            w2_by_layer=data.get("w2_by_layer"),
            layer_trials=data.get("layer_trials"),
            command=data.get("command"),
            preset=data.get("preset"),
        )

    def write(self, path: str | Path) -> Path:
        """Write as JSON, atomically."""
        return atomic.write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> "CompareRecord":
        """Read and validate a ``results.json``."""
        return cls.from_json(_read_json(path))


@dataclass(frozen=True)
class SweepPoint:
    """One scored configuration of a sweep."""

    kind: str  # "layer", "pair", "k", "strength" or "reference"
    method: str
    layers: tuple[int, ...]
    n_components: int | None
    strength: float
    refusal_score: Estimate
    kl_harmless: Estimate
    refusal_share: Estimate | None = None
    # Shares of the judge's labels of the harmful completions (judged sweeps only).
    compliance: Estimate | None = None
    deflection: Estimate | None = None
    degenerate: Estimate | None = None
    # The per-prompt KL's distribution (``damage.kl_distribution``; absent in older sweeps).
    kl_harmless_median: Estimate | None = None
    kl_harmless_p90: Estimate | None = None
    kl_harmless_share_above: Estimate | None = None

    OPTIONAL: ClassVar[tuple[str, ...]] = (
        "refusal_share",
        "compliance",
        "deflection",
        "degenerate",
        "kl_harmless_median",
        "kl_harmless_p90",
        "kl_harmless_share_above",
    )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "method": self.method,
            "layers": list(self.layers),
            "n_components": self.n_components,
            "strength": self.strength,
            "refusal_score": self.refusal_score.to_dict(),
            "kl_harmless": self.kl_harmless.to_dict(),
        }
        for name in self.OPTIONAL:
            estimate = getattr(self, name)
            data[name] = None if estimate is None else estimate.to_dict()
        return data

    to_dict = to_json

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "point") -> "SweepPoint":
        _check_keys(data, {f.name for f in dataclasses.fields(cls)}, where)
        optional = {
            name: None if data.get(name) is None else _estimate(data[name], f"{where}.{name}")
            for name in cls.OPTIONAL
        }
        return cls(
            data["kind"],
            data["method"],
            tuple(data["layers"]),
            data["n_components"],
            float(data["strength"]),
            _estimate(data["refusal_score"], f"{where}.refusal_score"),
            _estimate(data["kl_harmless"], f"{where}.kl_harmless"),
            **optional,
        )


@dataclass
class SweepRecord:
    """``sweep.json``: every point, the W2 ranking, the budget and the best placement."""

    settings: SweepSettings
    n_layers: int
    kl_budget: float
    best: SweepPoint | None
    w2_by_layer: list[dict[str, int | float]]
    points: list[SweepPoint]
    model: str | None = None
    command: str | None = None

    @property
    def sweet_spot_depth_fraction(self) -> float | None:
        """Depth of the best placement as a fraction of the layers (its mean layer / n_layers)."""
        if self.best is None:
            return None
        return sum(self.best.layers) / len(self.best.layers) / self.n_layers

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SWEEP_FORMAT,
            "settings": self.settings.to_json(),
            "n_layers": self.n_layers,
            "kl_budget": self.kl_budget,
            "best": None if self.best is None else self.best.to_json(),
            "sweet_spot_depth_fraction": self.sweet_spot_depth_fraction,
            "w2_by_layer": self.w2_by_layer,
            "points": [p.to_json() for p in self.points],
            "model": self.model,
            "command": self.command,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SweepRecord":
        allowed = {f.name for f in dataclasses.fields(cls)}
        _check_keys(data, allowed | {"format", "sweet_spot_depth_fraction"}, "sweep.json")
        if data.get("format") != SWEEP_FORMAT:
            raise RecordError(f"format is {data.get('format')!r}, expected {SWEEP_FORMAT!r}")
        try:
            settings = SweepSettings.from_json(dict(data["settings"]))
        except (TypeError, ValueError) as err:
            raise RecordError(f"sweep.json: {err}") from err
        best = data.get("best")
        return cls(
            settings=settings,
            n_layers=int(data["n_layers"]),
            kl_budget=float(data["kl_budget"]),
            best=None if best is None else SweepPoint.from_json(best, "best"),
            w2_by_layer=list(data["w2_by_layer"]),
            points=[SweepPoint.from_json(p, f"points[{i}]") for i, p in enumerate(data["points"])],
            model=data.get("model"),
            command=data.get("command"),
        )

    def write(self, path: str | Path) -> Path:
        """Write as JSON, atomically."""
        return atomic.write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> "SweepRecord":
        """Read and validate a ``sweep.json``."""
        return cls.from_json(_read_json(path))


def compare_strengths(
    path: str | Path, methods: Sequence[str]
) -> tuple[CompareRecord, dict[str, float], Path]:
    """The strength ``compare`` recorded for each of ``methods``, read from its
    ``results.json`` (``path``: the file or its report folder); returns the record, the
    strengths and the file read.

    Raises:
        ValueError: a name in ``methods`` is not a registered method (or is "none").
        FileNotFoundError: no such file.
        RecordError: the file is not a compare record, or lacks one of ``methods``.
    """
    for method in methods:
        check_method(method, allow_none=False)
    file = Path(path)
    if file.is_dir():
        file = file / "results.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file; give a compare results.json or its folder")
    data = _read_json(file)
    kind = data.get("format") if isinstance(data, dict) else None
    if kind != COMPARE_FORMAT:
        raise RecordError(
            f"{file} is not a compare results.json (format {kind!r}, expected {COMPARE_FORMAT!r})"
        )
    try:
        record = CompareRecord.from_json(data)
    except (RecordError, KeyError, TypeError, AttributeError) as err:
        why = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise RecordError(f"{file} is not a compare results.json ({why})") from None
    missing = [m for m in methods if m not in record.methods or record.methods[m].strength is None]
    if missing:
        recorded = [m for m, r in record.methods.items() if r.strength is not None]
        raise RecordError(
            f"{file} records no strength for {missing} (it has {recorded}); run compare with "
            "those methods, or leave them out of the methods"
        )
    strengths = {}
    for method in methods:
        strength = record.methods[method].strength
        assert strength is not None  # checked above
        strengths[method] = float(strength)
    return record, strengths, file


@dataclass
class MonitorPromptsRecord:
    """Which prompts a monitor run used: hashes and counts (no prompt text)."""

    train_sha256: str
    eval_sha256: str
    n_train_harmful: int
    n_train_harmless: int
    n_eval_harmful: int
    n_eval_harmless: int
    train_eval_overlap: int


def _detection(data: Any, where: str) -> DetectionResult:
    fields = {f.name for f in dataclasses.fields(DetectionResult)}
    _check_keys(data, fields, where)
    missing = sorted(fields - set(data))
    if missing:
        raise RecordError(f"{where} lacks {missing}")
    if data["score"] not in SCORES:
        raise RecordError(f"{where}.score is {data['score']!r}; expected one of {SCORES}")
    try:
        return DetectionResult(
            method=str(data["method"]),
            layer=int(data["layer"]),
            score=data["score"],
            auroc=_estimate(data["auroc"], f"{where}.auroc"),
            tpr_at_1pct_fpr=_estimate(data["tpr_at_1pct_fpr"], f"{where}.tpr_at_1pct_fpr"),
            threshold=float(data["threshold"]),
            n_positive=int(data["n_positive"]),
            n_negative=int(data["n_negative"]),
        )
    except (TypeError, ValueError) as err:
        raise RecordError(f"{where}: {err}") from err


@dataclass
class MonitorRecord:
    """``detect.json``: how well a monitor detects each method, per monitored layer and score.

    Attributes:
        model: The model's name as given.
        settings: The ``MonitorSettings`` the run was given (``layers`` may be ``"auto"``).
        prompts: Hashes and counts of the training and held-out prompts.
        strengths: The strength each method ran at.
        strength_sources: Where each strength came from ("default", "settings", or the
            compare ``results.json`` it was read from).
        layers: The selective layers used (resolved).
        layer_choice: How they were chosen ("w2_relative", "middle" or "given").
        direction_layer: Layer of the refusal direction.
        monitor_layers: The monitored blocks.
        hook: The monitored hook point at each of them ("resid_post", ...).
        positions: The positions the monitor reads.
        results: One ``DetectionResult`` per (method, monitor layer, score).
        w2_by_layer: The W2² table behind ``layers="auto"`` (``None`` if not computed).
        command: The command line, for the CLI.
    """

    model: str
    settings: MonitorSettings
    prompts: MonitorPromptsRecord
    strengths: dict[str, float]
    strength_sources: dict[str, str]
    layers: list[int]
    layer_choice: str
    direction_layer: int
    monitor_layers: list[int]
    hook: str
    positions: str
    results: list[DetectionResult]
    w2_by_layer: list[dict[str, int | float]] | None = None
    command: str | None = None

    def get(self, method: str, layer: int, score: str) -> DetectionResult:
        """The result of ``score`` at monitor ``layer`` against ``method``."""
        return find_result(self.results, method, layer, score)

    @property
    def scores(self) -> list[str]:
        """The scores reported, in ``core.monitor.SCORES`` order."""
        present = {r.score for r in self.results}
        return [s for s in SCORES if s in present]

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``format`` first)."""
        return {
            "format": MONITOR_FORMAT,
            "model": self.model,
            "seed": self.settings.seed,
            "settings": self.settings.to_json(),
            "prompts": dataclasses.asdict(self.prompts),
            "strengths": dict(self.strengths),
            "strength_sources": dict(self.strength_sources),
            "layers": list(self.layers),
            "layer_choice": self.layer_choice,
            "direction_layer": self.direction_layer,
            "monitor_layers": list(self.monitor_layers),
            "hook": self.hook,
            "positions": self.positions,
            "results": [r.to_dict() for r in self.results],
            "w2_by_layer": self.w2_by_layer,
            "command": self.command,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "MonitorRecord":
        """Validate and read ``to_json`` output (an unknown or missing key raises)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        _check_keys(data, fields | {"format", "seed"}, "detect.json")
        if data.get("format") != MONITOR_FORMAT:
            raise RecordError(f"format is {data.get('format')!r}, expected {MONITOR_FORMAT!r}")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise RecordError(f"detect.json lacks {missing}")
        prompt_fields = {f.name for f in dataclasses.fields(MonitorPromptsRecord)}
        _check_keys(data["prompts"], prompt_fields, "detect.json prompts")
        results = [_detection(r, f"results[{i}]") for i, r in enumerate(data["results"])]
        try:
            return cls(
                model=str(data["model"]),
                settings=MonitorSettings.from_json(dict(data["settings"])),
                prompts=MonitorPromptsRecord(**data["prompts"]),
                strengths={str(m): float(s) for m, s in data["strengths"].items()},
                strength_sources={str(m): str(s) for m, s in data["strength_sources"].items()},
                layers=[int(layer) for layer in data["layers"]],
                layer_choice=str(data["layer_choice"]),
                direction_layer=int(data["direction_layer"]),
                monitor_layers=[int(layer) for layer in data["monitor_layers"]],
                hook=str(data["hook"]),
                positions=str(data["positions"]),
                results=results,
                w2_by_layer=data.get("w2_by_layer"),
                command=data.get("command"),
            )
        except (TypeError, ValueError, AttributeError) as err:
            raise RecordError(f"detect.json: {err}") from err

    def write(self, path: str | Path) -> Path:
        """Write as JSON, atomically."""
        return atomic.write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> "MonitorRecord":
        """Read and validate a ``detect.json``."""
        return cls.from_json(_read_json(path))


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordError(f"{path} is not valid JSON ({err})") from err
