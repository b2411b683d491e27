"""The typed ``results.json`` / ``sweep.json`` / ``detect.json`` records.

Each record is a dataclass; ``record_codec`` writes and reads all of them the same way (fields
in order, every key validated on reading, so an unknown or renamed key raises at once, naming
it), and the report, the plots and a notebook that re-reads a saved run all see the same
schema. The JSON layout is documented in ``docs/cli.md`` ("results.json and sweep.json").
"""

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..core.monitor import SCORES
from .damage import DAMAGE_METRICS
from .detect import DetectionResult, find_result
from .harm_score import HARM_METRICS
from .matched import StrengthMatch
from .methods import check_method
from .metrics import Estimate
from .record_codec import CHECK, FLATTEN, Record, RecordError, check_keys, decode, read_json
from .settings import CompareSettings, MonitorSettings, SweepSettings
from .strength import StrengthChoice, StrengthPoint
from .xstest import XSTEST_METRICS

__all__ = [
    "COMPARE_FORMAT",
    "GATE_KEYS",
    "METRICS",
    "MONITOR_FORMAT",
    "SWEEP_FORMAT",
    "CompareRecord",
    "MethodRecord",
    "MonitorPromptsRecord",
    "MonitorRecord",
    "PromptsRecord",
    "RecordError",
    "SweepPoint",
    "SweepRecord",
    "compare_strengths",
]

COMPARE_FORMAT = "tl_ot_ablation.compare/1"
SWEEP_FORMAT = "tl_ot_ablation.sweep/1"
MONITOR_FORMAT = "tl_ot_ablation.monitor/1"

METRICS = (
    "compliance_rate_harmful",
    "deflection_rate_harmful",
    "degenerate_rate_harmful",
    *HARM_METRICS,  # the graded harm score of the harmful answers
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
    *DAMAGE_METRICS,  # harmless damage as a distribution
    *XSTEST_METRICS,  # over-refusal on XSTest-style prompts
)
"""Every per-method metric a comparison can report (each an ``Estimate``), in the order
``results.json`` lists them; a record written before a metric existed simply lacks it."""
GATE_KEYS = frozenset(
    {"hook", "layer", "position", "prior", "posterior", "posterior_max", "open", "top"}
)
"""The keys of a method's ``gate`` entry (``gate_report.GateRecorder.summary``)."""


def _check_selection(data: dict[str, Any] | None, where: str) -> None:
    """A ``StrengthChoice.to_dict`` (its points ``StrengthPoint``s), or ``None``."""
    if data is None:
        return
    check_keys(data, {"strength", "rule", "ceiling", "points"}, where)
    for number, point in enumerate(data.get("points", [])):
        decode(StrengthPoint, point, f"{where}.points[{number}]")
    try:
        StrengthChoice.from_dict(dict(data))
    except (KeyError, TypeError, ValueError) as err:
        raise RecordError(f"{where}: {err!r}") from err


def _check_gate(data: dict[str, Any] | None, where: str) -> None:
    if data is not None:
        check_keys(data, GATE_KEYS, where)


@dataclass
class MethodRecord(Record):
    """One method's evaluation: its strength, metrics with CIs and what it was fitted with."""

    FILE = "method"

    strength: float | None = None
    metrics: dict[str, Estimate] = field(default_factory=dict, metadata={FLATTEN: METRICS})
    """Written as top-level keys of the method, in ``METRICS`` order."""
    refused_harmful: list[int] = field(default_factory=list)
    matched: StrengthMatch | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    judged_harmful: list[str] = field(default_factory=list)
    selection: dict[str, Any] | None = field(default=None, metadata={CHECK: _check_selection})
    """How the strength was chosen on the validation prompts (``StrengthChoice.to_dict``)."""
    kl_harmless_per_prompt: list[float] = field(default_factory=list)
    """First-token KL of each held-out harmless prompt (the distribution behind the KL
    columns; empty in records written before it was kept)."""
    judged_harmless: list[str] = field(default_factory=list)
    """The judge's label of each held-out harmless completion."""
    judged_xstest: dict[str, list[str]] = field(default_factory=dict)
    """``{"safe" | "unsafe": labels}`` of the XSTest-style completions, when run."""
    gate: dict[str, Any] | None = field(default=None, metadata={CHECK: _check_gate})
    """A gated map's posterior per prompt and the prompts that open it most
    (``gate_report``; ``None``: no gate)."""
    harm_score_harmful_per_prompt: list[float] = field(default_factory=list)
    """The graded harm score of each held-out harmful completion (``harm_score``; empty when
    not scored: the marker judge, no embedding model, or a record written before it)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise RecordError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")

    def choice(self) -> StrengthChoice | None:
        """The strength choice as a ``StrengthChoice`` (its KL search is ``matched``)."""
        if self.selection is None:
            return None
        return dataclasses.replace(StrengthChoice.from_dict(self.selection), match=self.matched)

    def value(self, metric: str) -> float | None:
        """The point value of ``metric`` (``None`` when not recorded)."""
        estimate = self.metrics.get(metric)
        return None if estimate is None else estimate.value


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
class CompareRecord(Record):
    """``results.json``: every method's result, the settings and the prompts used."""

    FORMAT = COMPARE_FORMAT
    FILE = "results.json"
    DERIVED: ClassVar[Mapping[str, str]] = {"seed": "model"}

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


@dataclass(frozen=True)
class SweepPoint(Record):
    """One scored configuration of a sweep."""

    FILE = "point"

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

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``to_json``)."""
        return self.to_json()


@dataclass
class SweepRecord(Record):
    """``sweep.json``: every point, the W2 ranking, the budget and the best placement."""

    FORMAT = SWEEP_FORMAT
    FILE = "sweep.json"
    DERIVED: ClassVar[Mapping[str, str]] = {"sweet_spot_depth_fraction": "best"}

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
    data = read_json(file)
    kind = data.get("format") if isinstance(data, dict) else None
    if kind != COMPARE_FORMAT:
        raise RecordError(
            f"{file} is not a compare results.json (format {kind!r}, expected {COMPARE_FORMAT!r})"
        )
    try:
        record = CompareRecord.from_json(data)
    except RecordError as err:
        raise RecordError(f"{file} is not a compare results.json ({err})") from None
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


def _check_scores(results: list[DetectionResult], where: str) -> None:
    for number, result in enumerate(results):
        if result.score not in SCORES:
            raise RecordError(
                f"{where}[{number}].score is {result.score!r}; expected one of {SCORES}"
            )


@dataclass
class MonitorRecord(Record):
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

    FORMAT = MONITOR_FORMAT
    FILE = "detect.json"
    DERIVED: ClassVar[Mapping[str, str]] = {"seed": "model"}

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
    results: list[DetectionResult] = field(metadata={CHECK: _check_scores})
    w2_by_layer: list[dict[str, int | float]] | None = None
    command: str | None = None

    @property
    def seed(self) -> int:
        """The settings' seed (recorded at the top level too)."""
        return self.settings.seed

    def get(self, method: str, layer: int, score: str) -> DetectionResult:
        """The result of ``score`` at monitor ``layer`` against ``method``."""
        return find_result(self.results, method, layer, score)

    @property
    def scores(self) -> list[str]:
        """The scores reported, in ``core.monitor.SCORES`` order."""
        present = {r.score for r in self.results}
        return [s for s in SCORES if s in present]
