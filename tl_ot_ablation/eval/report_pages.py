"""Whole ``report.md`` pages of a comparison, a sweep and a monitor run, from their typed records.

Rendering only: each page is a list of markdown lines built from the record alone (plus, for a
comparison, a few sample completions), so a saved run's page can be rebuilt from its JSON.
``report`` writes the pages into report folders.
"""

from collections.abc import Mapping, Sequence

from .damage import SHARE_MEASURES, measure_text
from .record import CompareRecord, MonitorRecord, SweepRecord
from .report_markdown import (
    comparison_table,
    detection_table,
    estimate_cell,
    figure_lines,
    markdown_table,
    settings_table,
    verdict,
)
from .report_sections import (
    damage_lines,
    gate_lines,
    harm_score_lines,
    layer_trial_lines,
    over_refusal_lines,
)

Figures = Sequence[tuple[str, str]]
"""``(title, file)`` of each figure drawn (an empty file: it failed)."""

LAYER_CHOICE_TEXT = {
    "w2_relative": " (chosen from the training statistics: largest W2² / variance)",
    "judged": " (chosen by judged compliance on the validation prompts, below)",
}


def compare_markdown(
    record: CompareRecord,
    completions: Mapping[str, Mapping[str, Sequence[str]]],
    prompts: Mapping[str, Sequence[str]],
    figures: Figures,
) -> list[str]:
    """The lines of a comparison's ``report.md``."""
    settings, counts = record.settings, record.prompts
    chosen_by = LAYER_CHOICE_TEXT.get(record.layer_choice, "")
    lines = [
        f"# Refusal interventions compared on `{record.model}`",
        "",
        f"Command: `{record.command}`" if record.command else "",
        "",
        f"Fitted on {counts.n_train_harmful} harmful + {counts.n_train_harmless} harmless "
        f"prompts; evaluated on {counts.n_eval_harmful} + {counts.n_eval_harmless} held-out "
        f"ones (greedy, {settings.max_new_tokens} new tokens) and {counts.n_texts} prose "
        # the layers as recorded (a list, as in results.json)
        f"paragraphs. Selective layers {settings.to_json()['layers']}{chosen_by}, direction "
        f"from layer {settings.direction_layer}, k = {settings.map.n_components}. Values are means "
        "with 95 % bootstrap CIs.",
        "",
    ]
    if counts.train_eval_overlap:
        lines += [
            f"**WARNING: {counts.train_eval_overlap} evaluation prompts also appear "
            "in the training prompts; these results overstate generalisation.**",
            "",
        ]
    match = settings.match_kl
    if match is not None:
        measure = measure_text(settings.match_measure, settings.kl_threshold)
        budget = match if not isinstance(match, str) else "direction ablation's own"
        lines += [
            f"Matched damage: each method's strength ceiling is the largest strength whose "
            f"{measure} on {counts.n_validation_harmless} validation "
            f"prompts (disjoint from the evaluation ones) stays within {budget} (`matched` in "
            f"results.json; `reached: false` means even the largest strength tried, "
            f"{settings.max_strength}, costs less).",
            "",
        ]
    if settings.select == "compliance" and counts.n_validation_harmful:
        fractions = ", ".join(f"{f:g}" for f in settings.strength_fractions)
        lines += [
            f"Strength: of {fractions} × the ceiling, the one whose greedy completions of "
            f"{counts.n_validation_harmful} validation harmful prompts the judge finds most "
            "compliant (`selection` in results.json; the frontier plot shows every strength "
            "tried).",
            "",
        ]
    lines += layer_trial_lines(record)
    if counts.validation_overlap:
        lines += [
            f"**WARNING: {counts.validation_overlap} validation prompts also "
            "appear in the training or evaluation prompts.**",
            "",
        ]
    lines += [comparison_table(record), "", verdict(record), ""]
    lines += [*harm_score_lines(record), *damage_lines(record)]
    lines += [*over_refusal_lines(record), *gate_lines(record)]
    lines += figure_lines(figures)
    lines += ["## Sample completions", ""]
    for method, groups in completions.items():
        lines.append(f"### {method}")
        for kind in ("harmful", "harmless"):
            for prompt, text in list(zip(prompts[kind], groups[kind], strict=True))[:2]:
                lines.append(f"- *{prompt}* → {text.strip()[:160]!r}")
        lines.append("")
    return lines


SPREAD_COLUMNS = (
    ("kl_harmless_median", "median KL", ".3g"),
    ("kl_harmless_p90", "p90 KL", ".3g"),
    ("kl_harmless_share_above", "share KL > t", ".2f"),
)
"""The sweep table's KL-distribution columns, shown when some point has them."""
SHARE_COLUMNS = ("compliance", "deflection", "degenerate")
"""The sweep table's judged-share columns, shown for a judged sweep."""


def sweep_budget(record: SweepRecord) -> str:
    """The sweep's budget line: what it bounds (``match_measure``) and the share threshold."""
    settings = record.settings
    measure = settings.match_measure
    unit = "" if measure in SHARE_MEASURES else " nats"
    return (
        f"Budget: {measure_text(measure, settings.kl_threshold)} at most "
        f"{record.kl_budget:.4g}{unit}; t = {settings.kl_threshold:g} nats in the share-above "
        "column. "
    )


def sweep_markdown(record: SweepRecord, figures: Figures) -> list[str]:
    """The lines of a sweep's ``report.md``."""
    best = record.best
    lines = [
        "# Layer, k and strength sweep",
        "",
        f"Command: `{record.command}`" if record.command else "",
        "",
        sweep_budget(record),
    ]
    judged = any(p.compliance is not None for p in record.points)
    if best is None:
        lines.append("No single layer or pair stayed within the KL budget.")
    else:
        judged_best = best.compliance is not None  # what sweep.best_placement used
        compliance = (
            f"judged compliance {estimate_cell(best.compliance, '.2f')}, " if judged_best else ""
        )
        rule = "most judged compliance" if judged_best else "lowest refusal log-odds"
        lines.append(
            f"Best placement within the budget ({rule}): layers {list(best.layers)} ({compliance}"
            f"refusal log-odds {best.refusal_score:.2f}, KL {best.kl_harmless:.3g}), at "
            f"{record.sweet_spot_depth_fraction:.0%} of depth."
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
    shares = SHARE_COLUMNS if judged else ()
    spread = [
        column
        for column in SPREAD_COLUMNS
        if any(getattr(p, column[0]) is not None for p in record.points)
    ]
    header += [label for _, label, _ in spread]
    rows = [
        [
            p.kind,
            p.method,
            ",".join(map(str, p.layers)),
            str(p.n_components),
            f"{p.strength:.3g}",
            estimate_cell(p.refusal_score, ".2f"),
            estimate_cell(p.kl_harmless, ".3g"),
            *(estimate_cell(getattr(p, key), spec) for key, _, spec in spread),
            *(estimate_cell(getattr(p, name), ".2f") for name in shares),
        ]
        for p in record.points
    ]
    ranking = sorted(record.w2_by_layer, key=lambda r: -r["w2_relative"])
    w2_rows = [
        [
            str(r["layer"]),
            f"{r['w2_relative']:.3g}",
            f"{r['w2']:.4g}",
            f"{r['w2_mean']:.4g}",
            f"{r['w2_bures']:.4g}",
        ]
        for r in ranking
    ]
    lines += [
        "",
        "## Points",
        "",
        markdown_table([*header, *shares], rows),
        "",
        "## Layers ranked by W2² / total variance (harmful vs harmless, k-dim PCA subspace)",
        "",
        markdown_table(["layer", "W2² / variance", "W2²", "mean part", "covariance part"], w2_rows),
        "",
    ]
    return lines + figure_lines(figures)


def monitor_markdown(record: MonitorRecord, figures: Figures) -> list[str]:
    """The lines of a monitor run's ``report.md``."""
    prompts = record.prompts
    n_pos = prompts.n_eval_harmful
    n_neg = prompts.n_eval_harmful + prompts.n_eval_harmless
    chosen_by = LAYER_CHOICE_TEXT["w2_relative"] if record.layer_choice == "w2_relative" else ""
    sources = sorted(set(record.strength_sources.values()))
    lines = [
        f"# Detecting refusal interventions with an activation monitor on `{record.model}`",
        "",
        f"A monitor fitted on the clean activations of {prompts.n_train_harmful} harmful + "
        f"{prompts.n_train_harmless} harmless training prompts scored `{record.hook}` at "
        f"layers {record.monitor_layers} ({record.positions} positions) on "
        f"{n_pos} held-out harmful prompts run under each intervention (positives) and the "
        f"{n_neg} held-out harmful and harmless prompts run clean (negatives). The table gives "
        "the AUROC of each score (0.5 = chance, 1 = perfect) and the share of intervened runs "
        "flagged when at most 1 % of clean runs are (TPR @ 1 % FPR), with 95 % bootstrap CIs.",
        "",
        f"Methods fitted as in `compare`: selective layers {record.layers}{chosen_by}, "
        f"direction from layer {record.direction_layer}, k = {record.settings.map.n_components}; "
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
    if prompts.train_eval_overlap:
        lines += [
            f"**WARNING: {prompts.train_eval_overlap} held-out prompts also appear in the "
            "training prompts; these results overstate generalisation.**",
            "",
        ]
    lines += [detection_table(record), "", *figure_lines(figures)]
    # the settings as recorded in detect.json (lists, not tuples)
    lines += ["## Settings", "", settings_table(record.settings.to_json()), ""]
    if record.command:
        lines += [f"Command: `{record.command}`", ""]
    return lines
