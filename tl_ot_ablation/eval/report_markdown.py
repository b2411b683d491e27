"""Markdown of a record: the tables and the verdict that the report and the CLI both print.

Rendering only, from typed records (``record``): the verdict's decisions come from
``verdict``, its wording from here, so a changed threshold never needs a changed sentence and a
changed sentence never moves a threshold. ``report_pages`` assembles whole ``report.md`` pages
from these pieces.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from .metrics import Estimate
from .record import CompareRecord, MethodRecord, MonitorRecord
from .verdict import NO_REFERENCE, NOTHING_TO_REMOVE, MethodVerdict, Outcome, compare_verdict

COMPARE_COLUMNS = (
    ("compliance_rate_harmful", "harmful: complies", ".2f"),
    ("deflection_rate_harmful", "deflects", ".2f"),
    ("degenerate_rate_harmful", "degenerate", ".2f"),
    ("refusal_rate_harmful", "refusal markers", ".2f"),
    ("compliance_rate_harmless", "harmless: complies", ".2f"),
    ("kl_harmless", "KL harmless", ".3g"),
    ("ppl_harmless", "PPL harmless", ".3g"),
    ("ppl_text", "PPL prose", ".3g"),
    ("capability_accuracy", "capability (MC)", ".2f"),
    ("detect_auroc_disagreement", "detectability (AUROC)", ".2f"),
    ("ppl_harmful_base", "PPL harmful (base)", ".3g"),
    ("refusal_score_harmful", "refusal log-odds", ".2f"),
)
"""The methods table's columns: ``(metric, header, format)``."""

SCORE_TEXT = {
    "likelihood": "likelihood (unsupervised)",
    "disagreement": "disagreement (unsupervised)",
    "probe": "probe (supervised)",
}

JUDGE_CAVEAT = (
    "- Judged rates come from a judge that agrees with blind readers on some 0.6-0.8 of edited "
    "models' harmful answers (the default classifier calls too few of them compliance, most "
    "for the gated map; `--judge reader` lands on the read rates, docs/judge.md): read the "
    "answers in completions.json, blind (`tl-ot-ablation read`), before quoting a rate."
)
"""Why a judged verdict is not the last word (README, "The compliance judge")."""

OUTCOME_TEXT = {
    Outcome.DEGENERATE: "removes refusal, but through degenerate output",
    Outcome.BEATS: "beats direction ablation",
    Outcome.MATCHES_OR_BEATS: "matches or beats direction ablation",
    Outcome.MATCHES: (
        "matches direction ablation (ahead or level, but the 95 % interval of the paired "
        "difference contains 0)"
    ),
    Outcome.WORSE_NOT_SIGNIFICANT: (
        "does worse than direction ablation, but not significantly (the 95 % interval of "
        "the paired difference contains 0)"
    ),
    Outcome.HIGHER_KL: "does about as well, but at a higher KL",
    Outcome.WORSE: "does NOT beat direction ablation",
}
"""How the report words each ``verdict.Outcome``."""


def estimate_cell(value: Estimate | None, spec: str) -> str:
    """``value [ci_low, ci_high]``, each in format ``spec`` ("-" for a missing value)."""
    return "-" if value is None else format(value, spec)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table of string cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def figure_lines(figures: Sequence[tuple[str, str]]) -> list[str]:
    """A section per ``(title, file)`` figure (an empty file: the figure failed)."""
    lines: list[str] = []
    for title, name in figures:
        lines += [f"## {title}", "", f"![{title}]({name})" if name else "", ""]
    return lines


def comparison_table(record: Any) -> str:
    """The methods table of a comparison record (``CompareRecord`` or its JSON), in markdown
    (95 % CIs in brackets)."""
    record = CompareRecord.coerce(record)
    header = ["method", "strength", *(label for _, label, _ in COMPARE_COLUMNS)]
    rows = [
        [
            name,
            "-" if method.strength is None else f"{method.strength:.3g}",
            *(estimate_cell(method.metrics.get(key), spec) for key, _, spec in COMPARE_COLUMNS),
        ]
        for name, method in record.methods.items()
    ]
    return markdown_table(header, rows)


def detection_table(record: Any) -> str:
    """The detection table of a monitor record (``MonitorRecord`` or its JSON) in markdown: one
    row per method, monitored layer and score, AUROC and TPR at 1 % FPR with their 95 % CIs."""
    record = MonitorRecord.coerce(record)
    rows = [
        [
            r.method,
            f"{record.strengths[r.method]:.3g}",
            str(r.layer),
            SCORE_TEXT.get(r.score, r.score),
            estimate_cell(r.auroc, ".2f"),
            estimate_cell(r.tpr_at_1pct_fpr, ".2f"),
        ]
        for r in record.results
    ]
    header = ["method", "strength", "monitor layer", "score", "AUROC", "TPR @ 1 % FPR"]
    return markdown_table(header, rows)


def verdict(record: Any) -> str:
    """One honest line per transport method: does it beat direction ablation at (at most) its
    damage (``verdict.compare_verdict``)? A judged verdict ends with ``JUDGE_CAVEAT``.

    ``record``: a ``CompareRecord`` or a mapping whose ``methods`` follow ``MethodRecord``."""
    if isinstance(record, CompareRecord):
        methods = record.methods
    else:
        methods = {
            name: MethodRecord.from_json(method, f"methods.{name}")
            for name, method in record["methods"].items()
        }
    found = compare_verdict(methods)
    if found.skipped == NO_REFERENCE:
        return "Direction ablation was not run, so there is no reference to compare against."
    if found.skipped == NOTHING_TO_REMOVE:
        return "The unmodified model refuses none of the harmful prompts: nothing to remove."
    reference = methods["direction_ablation"]
    lines = [_verdict_line(v, methods[v.method], reference, found.judged) for v in found.methods]
    if found.judged and lines:
        lines.append(JUDGE_CAVEAT)
    return "\n".join(lines)


def _verdict_line(
    found: MethodVerdict, method: MethodRecord, reference: MethodRecord, judged: bool
) -> str:
    """One method's verdict in words, with the numbers it rests on."""
    measure = "judged compliance" if judged else "harmful refusal"
    ours, theirs = method.metrics[found.metric], reference.metrics[found.metric]
    kl, reference_kl = method.metrics["kl_harmless"].value, reference.metrics["kl_harmless"].value
    ratio = "" if found.kl_ratio is None else f" ({found.kl_ratio:.0f}x lower)"
    paired = "" if found.difference is None else f"; paired difference {found.difference:+.2f}"
    deflects = ""
    if judged:
        ours_deflect = method.metrics["deflection_rate_harmful"].value
        theirs_deflect = reference.metrics["deflection_rate_harmful"].value
        deflects = (
            f" It deflects on {ours_deflect:.2f} of harmful prompts "
            f"(direction ablation {theirs_deflect:.2f})."
        )
    fluency = _fluency(method, reference) if found.less_fluent else ""
    return (
        f"- `{found.method}` {OUTCOME_TEXT[found.outcome]}: {measure} {ours:.2f} vs "
        f"{theirs:.2f}{paired}, harmless KL {kl:.3g} vs {reference_kl:.3g}{ratio}."
        f"{_spread(method, reference)}{deflects}{fluency}"
    )


def _fluency(method: MethodRecord, reference: MethodRecord) -> str:
    """The warning of ``verdict.less_fluent``, with both perplexities."""
    ours, theirs = method.metrics["ppl_harmful_base"], reference.metrics["ppl_harmful_base"]
    return (
        f" Its harmful completions are less fluent: the unmodified model's perplexity of them is "
        f"{ours:.3g} vs {theirs:.3g}; read them in completions.json, or lower --max-strength."
    )


def _spread(method: MethodRecord, reference: MethodRecord) -> str:
    """How the harmless damage is spread (the median KL and the share of answers left
    identical), when the record has it: a mean can hide a few large values."""
    keys = ("kl_harmless_median", "identical_rate_harmless")
    if not all(key in row.metrics for key in keys for row in (method, reference)):
        return ""
    ours, theirs = method.metrics, reference.metrics
    return (
        f" Median harmless KL {ours['kl_harmless_median'].value:.3g} vs "
        f"{theirs['kl_harmless_median'].value:.3g}; harmless answers identical to the "
        f"unmodified model's {ours['identical_rate_harmless'].value:.2f} vs "
        f"{theirs['identical_rate_harmless'].value:.2f}."
    )


NESTED_SETTINGS = ("map", "collect")
"""The settings fields that hold an options object (``MapSpec``, ``CollectOptions``), shown a
row per field of their own."""


def settings_table(settings: Mapping[str, Any]) -> str:
    """A two-column table of settings as recorded (values as Python literals), one row per
    field: ``map`` and ``collect`` give a row per field of their own (``n_components``, ...,
    ``batch_size``), named ``map.reg`` only where the bare name is taken."""
    rows = []
    for key, value in settings.items():
        nested = key in NESTED_SETTINGS and isinstance(value, Mapping)
        for field, item in value.items() if nested else [(key, value)]:
            name = f"{key}.{field}" if nested and field in settings else field
            rows.append([name, f"`{item!r}`".replace("|", "\\|")])
    return markdown_table(["setting", "value"], rows)
