"""Report folders: ``results.json`` / ``sweep.json`` / ``detect.json``, ``report.md`` and PNG
plots.

The JSON records are the stable interface (``record``; documented in the README's
"results.json" section); ``report.md`` is for people and is rebuilt from the records alone.
A folder is written atomically (``io.atomic``), records first: a plot that fails leaves a
warning in the report, never a lost run; an interrupted write leaves the old folder as it was.
"""

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic
from . import plots
from .damage import KL_THRESHOLD, SHARE_MEASURES, damage_lines, measure_text
from .gate_report import gate_lines
from .metrics import Estimate, with_ci
from .record import CompareRecord, MethodRecord, MonitorRecord, SweepRecord
from .settings import CompareSettings
from .xstest import over_refusal_lines

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


def _estimate(value: Mapping[str, float], spec: str) -> str:
    return f"{value['value']:{spec}} [{value['ci_low']:{spec}}, {value['ci_high']:{spec}}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table of string cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_table(record: Any) -> str:
    """The methods table of a comparison record, in markdown (95 % CIs in brackets)."""
    record = plots.compare_json(record)
    header = ["method", "strength", *(label for _, label, _ in COMPARE_COLUMNS)]
    rows = []
    for name, result in record["methods"].items():
        strength = result["strength"]
        rows.append(
            [
                name,
                "-" if strength is None else f"{strength:.3g}",
                *(
                    _estimate(result[key], spec) if key in result else "-"
                    for key, _, spec in COMPARE_COLUMNS
                ),
            ]
        )
    return markdown_table(header, rows)


def paired_difference(
    a: Mapping[str, Any], b: Mapping[str, Any], key: str = "refused_harmful"
) -> Estimate | None:
    """Mean per-prompt difference of a 0/1 outcome (``a − b``, same prompts) with its bootstrap
    CI: ``key`` "refused_harmful" (marker refusals) or "judged_harmful" (judged compliance);
    ``None`` for records without per-prompt values."""
    first, second = a.get(key), b.get(key)
    if not first or not second or len(first) != len(second):
        return None
    if key == "judged_harmful":
        first = [int(label == "compliance") for label in first]
        second = [int(label == "compliance") for label in second]
    return with_ci([float(x - y) for x, y in zip(first, second, strict=True)])


def _fluency(method: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
    """A warning when ``method``'s harmful completions read worse than ``reference``'s (the
    unmodified model's perplexity of them above the reference's 95 % interval): damage that a
    gated map shows on harmful prompts only, where the harmless KL cannot see it."""
    ours, theirs = method.get("ppl_harmful_base"), reference.get("ppl_harmful_base")
    if not ours or not theirs or ours["value"] <= theirs["ci_high"]:
        return ""
    return (
        f" Its harmful completions are less fluent: the unmodified model's perplexity of them is "
        f"{ours['value']:.3g} [{ours['ci_low']:.3g}, {ours['ci_high']:.3g}] vs "
        f"{theirs['value']:.3g} [{theirs['ci_low']:.3g}, {theirs['ci_high']:.3g}]; read them in "
        "completions.json, or lower --max-strength."
    )


JUDGE_CAVEAT = (
    "- Judged rates come from a small text classifier (`tlo.judge`) that reads most answers "
    "as a reader would but calls many deflections compliance (step lists whose steps are "
    "harmless, answers to a safer question): read a sample of each method's harmful answers "
    "in completions.json before quoting a rate."
)
"""Why a judged verdict is not the last word (README, "The compliance judge")."""


def verdict(record: Any) -> str:
    """One honest line per transport method: does it beat direction ablation at (at most) its
    damage? A judged verdict ends with ``JUDGE_CAVEAT``.

    ``record``: a ``CompareRecord`` or a mapping whose ``methods`` follow ``MethodRecord``."""
    if isinstance(record, CompareRecord):
        record = record.to_json()
    methods = {
        name: MethodRecord.from_json(method, f"methods.{name}").to_json()
        for name, method in record["methods"].items()
    }
    if "direction_ablation" not in methods:
        return "Direction ablation was not run, so there is no reference to compare against."
    da = methods["direction_ablation"]
    judged = all("compliance_rate_harmful" in m for m in methods.values())
    if methods["none"]["refusal_rate_harmful"]["value"] == 0 and not judged:
        return "The unmodified model refuses none of the harmful prompts: nothing to remove."
    lines = []
    for name in ("ot_selective", "ot_full"):
        if name in methods:
            lines.append(_verdict_line(name, methods[name], da, judged))
    if judged and lines:
        lines.append(JUDGE_CAVEAT)
    return "\n".join(lines)


def _draw(figures: list[tuple[str, str]], title: str, name: str, draw: Callable[[], Any]) -> None:
    """Draw one figure; a failure becomes a warning and a line in the report, not a lost run."""
    try:
        draw()
        figures.append((title, name))
    except Exception as error:
        warnings.warn(f"plot {name} failed ({error!r}); the records are saved", stacklevel=3)
        figures.append((f"{title} (FAILED: {error!r})", ""))


def _figure_lines(figures: Sequence[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    for title, name in figures:
        lines += [f"## {title}", "", f"![{title}]({name})" if name else "", ""]
    return lines


def _verdict_line(name: str, ot: Mapping[str, Any], da: Mapping[str, Any], judged: bool) -> str:
    """One method against direction ablation: judged compliance (higher is better) when the
    record has it, else marker refusal (lower is better), at the KL each one cost."""
    key, measure = (
        ("compliance_rate_harmful", "judged compliance")
        if judged
        else ("refusal_rate_harmful", "harmful refusal")
    )
    ours, theirs = ot[key], da[key]
    sign = 1 if judged else -1  # +: more is better
    ot_kl, da_kl = ot["kl_harmless"]["value"], da["kl_harmless"]["value"]
    cheaper = ot_kl <= da_kl * 1.1
    better = sign * (ours["value"] - theirs["value"]) >= 0
    difference = paired_difference(ot, da, "judged_harmful" if judged else "refused_harmful")
    # The paired difference's interval, oriented so that positive means "ahead".
    ahead = (
        None
        if difference is None
        else sorted(sign * x for x in (difference.ci_low, difference.ci_high))
    )
    significant = ahead is not None and ahead[0] > 0
    tied = not better and ahead is not None and ahead[0] <= 0 <= ahead[1]
    degenerate = ot["degenerate_rate_harmful"]["value"] > 0.25
    if degenerate and (better or tied):
        outcome = "removes refusal, but through degenerate output"
    elif better and cheaper and (significant or ahead is None):
        outcome = (
            "beats direction ablation" if significant else "matches or beats direction ablation"
        )
    elif better and cheaper:
        outcome = (
            "matches direction ablation (ahead or level, but the 95 % interval of the paired "
            "difference contains 0)"
        )
    elif tied and cheaper:
        outcome = (
            "does worse than direction ablation, but not significantly (the 95 % interval of "
            "the paired difference contains 0)"
        )
    elif better or tied:
        outcome = "does about as well, but at a higher KL"
    else:
        outcome = "does NOT beat direction ablation"
    ratio = f" ({da_kl / ot_kl:.0f}x lower)" if cheaper and ot_kl > 0 else ""
    paired = "" if difference is None else f"; paired difference {difference:+.2f}"
    deflects = ""
    if judged:
        deflects = (
            f" It deflects on {ot['deflection_rate_harmful']['value']:.2f} of harmful prompts "
            f"(direction ablation {da['deflection_rate_harmful']['value']:.2f})."
        )
    return (
        f"- `{name}` {outcome}: {measure} {_estimate(ours, '.2f')} vs "
        f"{_estimate(theirs, '.2f')}{paired}, harmless KL {ot_kl:.3g} vs {da_kl:.3g}{ratio}."
        f"{_spread(ot, da)}{deflects}{_fluency(ot, da)}"
    )


def _spread(ot: Mapping[str, Any], da: Mapping[str, Any]) -> str:
    """How the harmless damage is spread (the median KL and the share of answers left
    identical), when the record has it: a mean can hide a few large values."""
    keys = ("kl_harmless_median", "identical_rate_harmless")
    if not all(key in row for key in keys for row in (ot, da)):
        return ""
    return (
        f" Median harmless KL {ot['kl_harmless_median']['value']:.3g} vs "
        f"{da['kl_harmless_median']['value']:.3g}; harmless answers identical to the unmodified "
        f"model's {ot['identical_rate_harmless']['value']:.2f} vs "
        f"{da['identical_rate_harmless']['value']:.2f}."
    )


def write_compare_report(
    folder: str | Path,
    record: CompareRecord,
    completions: Mapping[str, Mapping[str, Sequence[str]]],
    prompts: Mapping[str, Sequence[str]],
    *,
    clouds: Any = None,
    plots_enabled: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``results.json``, ``completions.json``, ``report.md`` and the plots; returns the
    folder. ``clouds`` is ``(harmful, harmless, transported, title)`` for ``plot_clouds``. A
    report folder of ours is replaced whole; another non-empty folder needs ``overwrite``."""
    data = record.to_json()
    with atomic.folder(folder, overwrite=overwrite) as temp:
        record.write(temp / "results.json")
        (temp / "completions.json").write_text(
            json.dumps({"prompts": prompts, "completions": completions}, indent=1) + "\n"
        )
        figures: list[tuple[str, str]] = []
        if plots_enabled:
            _draw(
                figures,
                "Refusal and damage per method",
                "comparison.png",
                lambda: plots.plot_comparison(data, temp / "comparison.png"),
            )
            if any(row.get("selection") for row in data["methods"].values()):
                _draw(
                    figures,
                    "Compliance vs damage: the frontier",
                    "frontier.png",
                    lambda: plots.plot_frontier(data, temp / "frontier.png"),
                )
            if clouds is not None:
                harmful, harmless, transported, title = clouds
                _draw(
                    figures,
                    "Activation clouds before and after transport",
                    "clouds.png",
                    lambda: plots.plot_clouds(
                        harmful, harmless, transported, temp / "clouds.png", title=title
                    ),
                )
            if record.w2_by_layer:
                w2 = record.w2_by_layer
                _draw(
                    figures,
                    "W2 per layer",
                    "w2_by_layer.png",
                    lambda: plots.plot_w2(w2, temp / "w2_by_layer.png"),
                )
            if any(row.get("gate") for row in data["methods"].values()):
                _draw(
                    figures,
                    "The gate's posterior on held-out prompts",
                    "gate.png",
                    lambda: plots.plot_gate(data, temp / "gate.png"),
                )
        (temp / "report.md").write_text(
            "\n".join(_compare_markdown(data, completions, prompts, figures))
        )
    return Path(folder)


def _layer_trial_lines(record: Mapping[str, Any]) -> list[str]:
    """Under ``layers="judged"``: what each candidate layer did on the validation prompts."""
    trials = record.get("layer_trials")
    if not trials:
        return []
    method = CompareSettings.from_json(dict(record["settings"])).judged_method

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = [
        [
            str(t["layer"]),
            f"{t['strength']:.3g}",
            f"{t['kl']:.3g}",
            *(share(t[key]) for key in ("compliance", "deflection", "degenerate")),
        ]
        for t in trials
    ]
    header = ["layer", "strength (KL ceiling)", "validation KL", "complies", "deflects", "degen."]
    return [
        f"Layer: each candidate with `{method}` alone at its KL ceiling, judged on the "
        "validation harmful prompts; the most compliant wins (ties: the lower KL).",
        "",
        markdown_table(header, rows),
        "",
    ]


def _compare_markdown(
    record: Mapping[str, Any],
    completions: Mapping[str, Mapping[str, Sequence[str]]],
    prompts: Mapping[str, Sequence[str]],
    figures: Sequence[tuple[str, str]],
) -> list[str]:
    settings = record["settings"]
    command = record.get("command")
    chosen_by = {
        "w2_relative": " (chosen from the training statistics: largest W2² / variance)",
        "judged": " (chosen by judged compliance on the validation prompts, below)",
    }.get(record.get("layer_choice", "given"), "")
    lines = [
        f"# Refusal interventions compared on `{record['model']}`",
        "",
        f"Command: `{command}`" if command else "",
        "",
        f"Fitted on {record['prompts']['n_train_harmful']} harmful + "
        f"{record['prompts']['n_train_harmless']} harmless prompts; evaluated on "
        f"{record['prompts']['n_eval_harmful']} + {record['prompts']['n_eval_harmless']} "
        f"held-out ones (greedy, {settings['max_new_tokens']} new tokens) and "
        f"{record['prompts']['n_texts']} prose paragraphs. Selective layers "
        f"{settings['layers']}{chosen_by}, direction from layer "
        f"{settings['direction_layer']}, k = {settings['n_components']}. Values are means with "
        "95 % bootstrap CIs.",
        "",
    ]
    if record["prompts"]["train_eval_overlap"]:
        lines += [
            f"**WARNING: {record['prompts']['train_eval_overlap']} evaluation prompts also appear "
            "in the training prompts; these results overstate generalisation.**",
            "",
        ]
    match = settings["match_kl"]
    n_validation = record["prompts"].get("n_validation_harmful", 0)
    if match is not None:
        measure = measure_text(settings.get("match_measure", "mean"), settings)
        budget = match if not isinstance(match, str) else "direction ablation's own"
        lines += [
            f"Matched damage: each method's strength ceiling is the largest strength whose "
            f"{measure} on {record['prompts'].get('n_validation_harmless', 0)} validation "
            f"prompts (disjoint from the evaluation ones) stays within {budget} (`matched` in "
            f"results.json; `reached: false` means even the largest strength tried, "
            f"{settings['max_strength']}, costs less).",
            "",
        ]
    if settings.get("select") == "compliance" and n_validation:
        fractions = ", ".join(f"{f:g}" for f in settings["strength_fractions"])
        lines += [
            f"Strength: of {fractions} × the ceiling, the one whose greedy completions of "
            f"{n_validation} validation harmful prompts the judge finds most compliant "
            "(`selection` in results.json; the frontier plot shows every strength tried).",
            "",
        ]
    lines += _layer_trial_lines(record)
    if record["prompts"].get("validation_overlap"):
        lines += [
            f"**WARNING: {record['prompts']['validation_overlap']} validation prompts also "
            "appear in the training or evaluation prompts.**",
            "",
        ]
    lines += [comparison_table(record), "", verdict(record), ""]
    lines += [*damage_lines(record), *over_refusal_lines(record), *gate_lines(record)]
    lines += _figure_lines(figures)
    lines += ["## Sample completions", ""]
    for method, groups in completions.items():
        lines.append(f"### {method}")
        for kind in ("harmful", "harmless"):
            for prompt, text in list(zip(prompts[kind], groups[kind], strict=True))[:2]:
                lines.append(f"- *{prompt}* → {text.strip()[:160]!r}")
        lines.append("")
    return lines


def write_sweep_report(
    folder: str | Path,
    record: SweepRecord,
    *,
    plots_enabled: bool = True,
    overwrite: bool = False,
    completions: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``sweep.json``, ``report.md``, the sweep plots and, for a judged sweep,
    ``completions.json`` (``SweepResult.completions_json``), atomically; returns the folder."""
    data = record.to_json()
    with atomic.folder(folder, overwrite=overwrite) as temp:
        record.write(temp / "sweep.json")
        if completions is not None:
            (temp / "completions.json").write_text(json.dumps(completions, indent=1) + "\n")
        figures: list[tuple[str, str]] = []
        if plots_enabled:
            _draw(
                figures,
                "Refusal and KL vs layer",
                "layer_sweep.png",
                lambda: plots.plot_layer_sweep(data, temp / "layer_sweep.png"),
            )
            _draw(
                figures,
                "Strength curves and frontier",
                "strength.png",
                lambda: plots.plot_strength(data, temp / "strength.png"),
            )
            _draw(
                figures,
                "W2 per layer",
                "w2_by_layer.png",
                lambda: plots.plot_w2(data["w2_by_layer"], temp / "w2_by_layer.png"),
            )
        (temp / "report.md").write_text("\n".join(_sweep_markdown(data, figures)))
    return Path(folder)


def _sweep_budget(record: Mapping[str, Any]) -> str:
    """The sweep's budget line: what it bounds (``match_measure``) and the share threshold."""
    settings = record["settings"]
    measure = settings.get("match_measure", "mean")
    unit = "" if measure in SHARE_MEASURES else " nats"
    threshold = settings.get("kl_threshold", KL_THRESHOLD)
    return (
        f"Budget: {measure_text(measure, settings)} at most {record['kl_budget']:.4g}{unit}; "
        f"t = {threshold:g} nats in the share-above column. "
    )


def _sweep_markdown(record: Mapping[str, Any], figures: Sequence[tuple[str, str]]) -> list[str]:
    best = record["best"]
    command = record.get("command")
    lines = [
        "# Layer, k and strength sweep",
        "",
        f"Command: `{command}`" if command else "",
        "",
        _sweep_budget(record),
    ]
    judged = any(p.get("compliance") is not None for p in record["points"])
    if best is None:
        lines.append("No single layer or pair stayed within the KL budget.")
    else:
        judged_best = best.get("compliance") is not None  # what sweep.best_placement used
        compliance = (
            f"judged compliance {_estimate(best['compliance'], '.2f')}, " if judged_best else ""
        )
        rule = "most judged compliance" if judged_best else "lowest refusal log-odds"
        lines.append(
            f"Best placement within the budget ({rule}): layers {best['layers']} ({compliance}"
            "refusal log-odds "
            f"{_estimate(best['refusal_score'], '.2f')}, KL {_estimate(best['kl_harmless'], '.3g')}"
            f"), at {record['sweet_spot_depth_fraction']:.0%} of depth."
        )
    if judged:
        lines += [
            "",
            "Judged shares are of the held-out harmful prompts' greedy completions "
            "(`completions.json`); read some before trusting them. The best placement was "
            "chosen on these same prompts, so its share is optimistic. `-` marks a point not "
            "judged (k and strength points are scored without generation).",
        ]
    header = ["kind", "method", "layers", "k", "strength", "refusal log-odds", "KL"]
    shares = ("compliance", "deflection", "degenerate") if judged else ()
    spread = tuple(
        (key, label, spec)
        for key, label, spec in (
            ("kl_harmless_median", "median KL", ".3g"),
            ("kl_harmless_p90", "p90 KL", ".3g"),
            ("kl_harmless_share_above", "share KL > t", ".2f"),
        )
        if any(p.get(key) is not None for p in record["points"])
    )
    header += [label for _, label, _ in spread]
    rows = [
        [
            p["kind"],
            p["method"],
            ",".join(map(str, p["layers"])),
            str(p["n_components"]),
            f"{p['strength']:.3g}",
            _estimate(p["refusal_score"], ".2f"),
            _estimate(p["kl_harmless"], ".3g"),
            *("-" if p.get(key) is None else _estimate(p[key], spec) for key, _, spec in spread),
            *("-" if p.get(name) is None else _estimate(p[name], ".2f") for name in shares),
        ]
        for p in record["points"]
    ]
    ranking = sorted(record["w2_by_layer"], key=lambda r: -r["w2_relative"])
    lines += [
        "",
        "## Points",
        "",
        markdown_table([*header, *shares], rows),
        "",
        "## Layers ranked by W2² / total variance (harmful vs harmless, k-dim PCA subspace)",
        "",
        markdown_table(
            ["layer", "W2² / variance", "W2²", "mean part", "covariance part"],
            [
                [
                    str(r["layer"]),
                    f"{r['w2_relative']:.3g}",
                    f"{r['w2']:.4g}",
                    f"{r['w2_mean']:.4g}",
                    f"{r['w2_bures']:.4g}",
                ]
                for r in ranking
            ],
        ),
        "",
    ]
    return lines + _figure_lines(figures)


SCORE_TEXT = {
    "likelihood": "likelihood (unsupervised)",
    "disagreement": "disagreement (unsupervised)",
    "probe": "probe (supervised)",
}


def detection_table(record: Any) -> str:
    """The detection table of a monitor record in markdown: one row per method, monitored
    layer and score, AUROC and TPR at 1 % FPR with their 95 % CIs."""
    record = plots.monitor_json(record)
    rows = [
        [
            r["method"],
            f"{record['strengths'][r['method']]:.3g}",
            str(r["layer"]),
            SCORE_TEXT.get(r["score"], r["score"]),
            _estimate(r["auroc"], ".2f"),
            _estimate(r["tpr_at_1pct_fpr"], ".2f"),
        ]
        for r in record["results"]
    ]
    header = ["method", "strength", "monitor layer", "score", "AUROC", "TPR @ 1 % FPR"]
    return markdown_table(header, rows)


def write_monitor_report(
    folder: str | Path,
    record: MonitorRecord,
    *,
    plots_enabled: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``detect.json``, ``report.md`` and ``detection.png``, atomically; returns the
    folder. A report folder of ours is replaced whole; another non-empty folder needs
    ``overwrite``."""
    data = record.to_json()
    with atomic.folder(folder, overwrite=overwrite) as temp:
        record.write(temp / "detect.json")
        figures: list[tuple[str, str]] = []
        if plots_enabled:
            _draw(
                figures,
                "AUROC per monitored layer",
                "detection.png",
                lambda: plots.plot_detection(data, temp / "detection.png"),
            )
        (temp / "report.md").write_text("\n".join(_monitor_markdown(data, figures)))
    return Path(folder)


def _monitor_markdown(record: Mapping[str, Any], figures: Sequence[tuple[str, str]]) -> list[str]:
    settings, prompts = record["settings"], record["prompts"]
    command = record.get("command")
    n_pos = prompts["n_eval_harmful"]
    n_neg = prompts["n_eval_harmful"] + prompts["n_eval_harmless"]
    chosen_by = (
        " (chosen from the training statistics: largest W2² / variance)"
        if record.get("layer_choice") == "w2_relative"
        else ""
    )
    sources = sorted(set(record["strength_sources"].values()))
    lines = [
        f"# Detecting refusal interventions with an activation monitor on `{record['model']}`",
        "",
        f"A monitor fitted on the clean activations of {prompts['n_train_harmful']} harmful + "
        f"{prompts['n_train_harmless']} harmless training prompts scored `{record['hook']}` at "
        f"layers {record['monitor_layers']} ({record['positions']} positions) on "
        f"{n_pos} held-out harmful prompts run under each intervention (positives) and the "
        f"{n_neg} held-out harmful and harmless prompts run clean (negatives). The table gives "
        "the AUROC of each score (0.5 = chance, 1 = perfect) and the share of intervened runs "
        "flagged when at most 1 % of clean runs are (TPR @ 1 % FPR), with 95 % bootstrap CIs.",
        "",
        f"Methods fitted as in `compare`: selective layers {record['layers']}{chosen_by}, "
        f"direction from layer {record['direction_layer']}, k = {settings['n_components']}; "
        f"strengths from {', '.join(sources)}. The `probe` score is a logistic regression "
        "trained on each method's training-prompt activations (it knows the attack); "
        "`likelihood` and `disagreement` need no attack examples."
        + (
            f" With {n_neg} clean runs the 1 % threshold is the largest clean score (a "
            "conservative TPR)."
            if n_neg <= 100
            else ""
        ),
        "",
    ]
    if prompts["train_eval_overlap"]:
        lines += [
            f"**WARNING: {prompts['train_eval_overlap']} held-out prompts also appear in the "
            "training prompts; these results overstate generalisation.**",
            "",
        ]
    lines += [detection_table(record), "", *_figure_lines(figures)]
    lines += [
        "## Settings",
        "",
        markdown_table(
            ["setting", "value"],
            [[key, f"`{value!r}`".replace("|", "\\|")] for key, value in settings.items()],
        ),
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    return lines
