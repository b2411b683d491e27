"""Matplotlib figures of comparisons, sweeps and monitor runs, drawn from their records.

Every function takes a typed record (``record.CompareRecord`` / ``SweepRecord`` /
``MonitorRecord``) or the dictionary read back from ``results.json`` / ``sweep.json`` /
``detect.json`` (validated against the record's
schema first, so a saved run can be re-plotted in a notebook and a renamed key fails at once),
draws on a new figure and returns it; pass ``path`` to also save it as a PNG. Figures are
built without ``pyplot``, so nothing opens a window or leaks global state; in Jupyter a
returned figure renders inline.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from matplotlib.figure import Figure
from torch import Tensor

from .damage import MEASURE_METRIC, SHARE_MEASURES, measure_text
from .record import CompareRecord, MonitorRecord, SweepRecord


def compare_json(record: Any) -> dict[str, Any]:
    """The JSON form of a comparison record, validated (``CompareRecord`` or its dict)."""
    if isinstance(record, CompareRecord):
        return record.to_json()
    return CompareRecord.from_json(record).to_json()


def sweep_json(record: Any) -> dict[str, Any]:
    """The JSON form of a sweep record, validated (``SweepRecord``, ``SweepResult`` or a dict)."""
    if hasattr(record, "to_record"):
        record = record.to_record()
    if isinstance(record, SweepRecord):
        return record.to_json()
    return SweepRecord.from_json(record).to_json()


def monitor_json(record: Any) -> dict[str, Any]:
    """The JSON form of a monitor record, validated (``MonitorRecord`` or its dict)."""
    if isinstance(record, MonitorRecord):
        return record.to_json()
    return MonitorRecord.from_json(record).to_json()


METHOD_COLORS = {
    "none": "#7f7f7f",
    "direction_ablation": "#d62728",
    "actadd": "#9467bd",
    "mean_shift": "#8c564b",
    "per_neuron_ot": "#e377c2",
    "ot_full": "#ff7f0e",
    "ot_selective": "#1f77b4",
}


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def _errors(estimates: Sequence[Mapping[str, float]]) -> np.ndarray:
    values = np.array([e["value"] for e in estimates])
    return np.stack(
        [
            values - np.array([e["ci_low"] for e in estimates]),
            np.array([e["ci_high"] for e in estimates]) - values,
        ]
    ).clip(min=0)


def _judged_bars(axis: Any, x: np.ndarray, rows: Sequence[Mapping[str, Any]]) -> None:
    """What the judge says of harmful completions, stacked (compliance with its CI at the
    bottom), and harmless compliance beside it."""
    bottom = np.zeros(len(rows))
    for key, label, color in (
        ("compliance_rate_harmful", "harmful: complies", "#2ca02c"),
        ("deflection_rate_harmful", "harmful: deflects", "#bcbd22"),
        ("degenerate_rate_harmful", "harmful: degenerate", "#d62728"),
    ):
        values = np.array([row[key]["value"] for row in rows])
        errors = _errors([row[key] for row in rows]) if key.startswith("compliance") else None
        axis.bar(x - 0.2, values, 0.4, bottom=bottom, yerr=errors, capsize=3, label=label,
                 color=color)  # fmt: skip
        bottom += values
    harmless = [row["compliance_rate_harmless"] for row in rows]
    axis.bar(x + 0.2, [e["value"] for e in harmless], 0.4, yerr=_errors(harmless), capsize=3,
             label="harmless: complies", color="#1f77b4")  # fmt: skip
    axis.set(ylabel="share of prompts (judge)", ylim=(0, 1.05), title="Judged answers (95 % CI)")


def plot_comparison(record: Any, path: str | Path | None = None) -> Figure:
    """Judged compliance (or marker refusal, for records without a judge) on harmful and
    harmless prompts, and harmless KL per method, with 95 % CIs."""
    record = compare_json(record)
    methods = list(record["methods"])
    rows = [record["methods"][m] for m in methods]
    x = np.arange(len(methods))
    fig = Figure(figsize=(12, 4))
    left, right = fig.subplots(1, 2)
    if all("compliance_rate_harmful" in row for row in rows):
        _judged_bars(left, x, rows)
    else:
        for offset, key, label in (
            (-0.2, "refusal_rate_harmful", "harmful prompts"),
            (0.2, "refusal_rate_harmless", "harmless prompts"),
        ):
            estimates = [row[key] for row in rows]
            left.bar(
                x + offset,
                [e["value"] for e in estimates],
                0.4,
                yerr=_errors(estimates),
                capsize=3,
                label=label,
            )
        left.set(ylabel="refusal rate (markers)", ylim=(0, 1.05), title="Refusal (95 % CI)")
    left.set_xticks(x, methods, rotation=30, ha="right")
    left.legend(fontsize=7)
    kls = [row["kl_harmless"] for row in rows]
    right.bar(
        x,
        [e["value"] if e["value"] > 0 else np.nan for e in kls],  # none: 0, no bar on a log axis
        yerr=_errors(kls),
        capsize=3,
        color=[METHOD_COLORS.get(m, "C0") for m in methods],
    )
    right.set(yscale="log", ylabel="KL (nats)", title="First-token KL on harmless prompts")
    right.set_xticks(x, methods, rotation=30, ha="right")
    for i, row in enumerate(rows):
        if row.get("degenerate_rate_harmful", {}).get("value", 0) > 0.25:
            left.annotate("degenerate", (i, 1.0), ha="center", fontsize=7, color="red")
    return _finish(fig, path)


def plot_frontier(record: Any, path: str | Path | None = None) -> Figure:
    """Judged compliance against harmless damage for every method.

    Left: each strength tried on the validation prompts (small markers, joined, the chosen one
    ringed; x is the damage the strengths were matched on, ``settings.match_measure``, the mean
    KL by default) and the held-out result at the chosen strength in the same measure (large
    square, 95 % CIs on both axes), with the held-out *median* KL beside the mean (triangle).
    Right, for records that have it: held-out compliance against the share of harmless answers
    the method changed (not byte-identical to the unmodified model's). Up and to the left is
    better: more compliance for less damage. The unmodified model's validation compliance is the
    dashed line."""
    record = compare_json(record)
    measure = record["settings"].get("match_measure", "mean")
    changed = any("identical_rate_harmless" in row for row in record["methods"].values())
    fig = Figure(figsize=(12 if changed else 7, 4.5))
    axes = fig.subplots(1, 2 if changed else 1, squeeze=False)[0]
    axis = axes[0]
    for name, row in record["methods"].items():
        color = METHOD_COLORS.get(name, "C0")
        if changed:
            _changed_point(axes[1], name, row, color)
        selection = row.get("selection")
        if selection is None:
            continue
        _frontier_method(axis, name, row, selection, color, measure)
    share = measure in SHARE_MEASURES
    label = measure_text(measure, record["settings"])
    axis.set(
        xscale="linear" if share else "log",
        xlabel=label if share else f"{label} (nats)",
        ylabel="judged compliance on harmful prompts",
        ylim=(-0.02, 1.02),
        title="Compliance vs damage (small: validation; square: held out; triangle: median)",
    )
    axis.legend(fontsize=7, loc="best")
    if changed:
        axes[1].set(
            xlabel="share of harmless answers changed (held out)",
            ylabel="judged compliance on harmful prompts",
            xlim=(-0.02, 1.02),
            ylim=(-0.02, 1.02),
            title="Compliance vs harmless answers changed",
        )
        axes[1].legend(fontsize=7, loc="best")
    return _finish(fig, path)


def _frontier_method(
    axis: Any,
    name: str,
    row: Mapping[str, Any],
    selection: Mapping[str, Any],
    color: str,
    measure: str,
) -> None:
    """One method on the left frontier panel: its validation strengths and held-out result."""
    points = [p for p in selection["points"] if p["compliance"] is not None]
    if name == "none":
        if points:
            axis.axhline(points[0]["compliance"], color=color, ls="--", lw=1,
                         label="none (validation)")  # fmt: skip
        return
    linear = measure in SHARE_MEASURES  # a share of 0 is a point; a KL of 0 has no log
    points = [p for p in points if p["kl"] > 0 or linear]
    if points:
        axis.plot([p["kl"] for p in points], [p["compliance"] for p in points], "o-",
                  color=color, ms=4, lw=1, alpha=0.6)  # fmt: skip
        for p in points:
            if p["strength"] == selection["strength"]:
                axis.plot(p["kl"], p["compliance"], "o", mfc="none", mec=color, ms=10)
    damage = row.get(MEASURE_METRIC.get(measure, "kl_harmless"))
    comply = row.get("compliance_rate_harmful")
    if comply is None or damage is None or (damage["value"] <= 0 and not linear):
        return
    axis.errorbar(damage["value"], comply["value"], xerr=_errors([damage]),
                  yerr=_errors([comply]), fmt="s", color=color, ms=8, capsize=3,
                  label=f"{name} (s={row['strength']:.3g})")  # fmt: skip
    median = row.get("kl_harmless_median")
    if measure == "mean" and median is not None and median["value"] > 0:
        axis.plot(median["value"], comply["value"], "^", mfc="none", mec=color, ms=9)


def _changed_point(axis: Any, name: str, row: Mapping[str, Any], color: str) -> None:
    """One method's held-out compliance against the share of harmless answers it changed."""
    identical, comply = row.get("identical_rate_harmless"), row.get("compliance_rate_harmful")
    if identical is None or comply is None:
        return
    changed = {
        "value": 1 - identical["value"],
        "ci_low": 1 - identical["ci_high"],
        "ci_high": 1 - identical["ci_low"],
    }
    axis.errorbar(changed["value"], comply["value"], xerr=_errors([changed]),
                  yerr=_errors([comply]), fmt="s", color=color, ms=8, capsize=3,
                  label=name)  # fmt: skip


def plot_gate(record: Any, path: str | Path | None = None) -> Figure:
    """Histograms of each gated method's posterior P(harmful | z) at its layer's last prompt
    token, one panel per method, one outline per prompt set (held-out harmful and harmless,
    XSTest-style safe and unsafe when run); the dotted line is where the gate counts as open."""
    record = compare_json(record)
    gated = {n: row["gate"] for n, row in record["methods"].items() if row.get("gate")}
    fig = Figure(figsize=(5.5 * max(len(gated), 1), 4))
    axes = fig.subplots(1, max(len(gated), 1), squeeze=False)[0]
    colors = {"harmful": "#d62728", "harmless": "#2ca02c", "xstest_safe": "#1f77b4",
              "xstest_unsafe": "#ff7f0e"}  # fmt: skip
    bins = np.linspace(0, 1, 21)
    for axis, (name, gate) in zip(axes, gated.items(), strict=False):
        for kind, values in gate["posterior"].items():
            if not values:
                continue
            axis.hist(
                values,
                bins=bins,
                histtype="step",
                lw=1.5,
                label=f"{kind} (n={len(values)})",
                color=colors.get(kind),
                weights=np.full(len(values), 1 / len(values)),
            )
        axis.axvline(0.5, ls=":", color="k")
        axis.set(xlabel="gate posterior P(harmful | z), last prompt token",
                 ylabel="share of prompts", title=f"{name}, layer {gate['layer']}")  # fmt: skip
        axis.legend(fontsize=7)
    return _finish(fig, path)


def plot_layer_sweep(sweep: Any, path: str | Path | None = None) -> Figure:
    """Refusal score and harmless KL of single layers and adjacent pairs, against depth; a
    judged sweep adds a panel of judged compliance on the harmful prompts."""
    sweep = sweep_json(sweep)
    judged = any(p.get("compliance") is not None for p in sweep["points"])
    fig = Figure(figsize=(9, 9 if judged else 6))
    axes = fig.subplots(3 if judged else 2, 1, sharex=True)
    top, bottom = axes[0], axes[-1]
    panels = [(top, "refusal_score"), (bottom, "kl_harmless")]
    if judged:
        panels.insert(1, (axes[1], "compliance"))
        axes[1].set(ylabel="judged compliance (harmful)", ylim=(-0.05, 1.05))
    references = {p["method"]: p for p in sweep["points"] if p["kind"] == "reference"}
    for kind, marker in (("layer", "o"), ("pair", "s")):
        points = [p for p in sweep["points"] if p["kind"] == kind]
        if not points:
            continue
        for axis, key in panels:
            scored = [p for p in points if p.get(key) is not None]
            if not scored:
                continue
            depth = np.array([np.mean(p["layers"]) for p in scored])
            estimates = [p[key] for p in scored]
            axis.errorbar(
                depth,
                [e["value"] for e in estimates],
                yerr=_errors(estimates),
                marker=marker,
                capsize=2,
                label=f"OT, {'single layers' if kind == 'layer' else 'adjacent pairs'}",
            )
    for method, point in references.items():
        for axis, key in panels:
            if point.get(key) is None or (key == "kl_harmless" and method == "none"):
                continue
            axis.axhline(
                point[key]["value"],
                ls="--",
                color=METHOD_COLORS.get(method, "k"),
                label=method.replace("_", " "),
            )
    if sweep["settings"].get("match_measure", "mean") == "mean":  # else not on this axis
        bottom.axhline(sweep["kl_budget"], ls=":", color="k", label="KL budget")
    top.set(ylabel="refusal log-odds (harmful)", title="Where transport removes refusal")
    bottom.set(ylabel="KL on harmless (nats)", xlabel="layer", yscale="log")
    for axis in axes:
        axis.legend(fontsize=7)
    return _finish(fig, path)


def plot_w2(rows: Sequence[Mapping[str, int | float]], path: str | Path | None = None) -> Figure:
    """Squared W2 between harmful and harmless activations per layer: mean + covariance part."""
    layers = [row["layer"] for row in rows]
    mean_part = [row["w2_mean"] for row in rows]
    bures_part = [row["w2_bures"] for row in rows]
    fig = Figure(figsize=(9, 6))
    axis, relative = fig.subplots(2, 1, sharex=True)
    axis.bar(layers, mean_part, label="mean part ‖m_s − m_t‖²")
    axis.bar(layers, bures_part, bottom=mean_part, label="covariance (Bures) part")
    axis.set(ylabel="W2²", title="Harmful vs harmless: W2² per layer")
    axis.legend()
    if all("w2_relative" in row for row in rows):
        relative.plot(layers, [row["w2_relative"] for row in rows], marker="o")
    relative.set(xlabel="layer", ylabel="W2² / total variance", title="Scale-free distance")
    return _finish(fig, path)


def plot_strength(sweep: Any, path: str | Path | None = None) -> Figure:
    """Refusal score, logit-judged refusal rate and KL against strength per method, and the
    refusal-vs-KL frontier."""
    sweep = sweep_json(sweep)
    points = [p for p in sweep["points"] if p["kind"] == "strength"]
    fig = Figure(figsize=(18, 4))
    axes = fig.subplots(1, 4)
    for method in dict.fromkeys(p["method"] for p in points):
        curve = sorted((p for p in points if p["method"] == method), key=lambda p: p["strength"])
        strengths = [p["strength"] for p in curve]
        refusal = [p["refusal_score"]["value"] for p in curve]
        kl = [max(p["kl_harmless"]["value"], 1e-7) for p in curve]
        style = {"marker": "o", "color": METHOD_COLORS.get(method), "label": method}
        share = [(p.get("refusal_share") or {}).get("value", float("nan")) for p in curve]
        axes[0].plot(strengths, refusal, **style)
        axes[1].plot(strengths, share, **style)
        axes[2].plot(strengths, kl, **style)
        axes[3].plot(kl, refusal, **style)
    axes[0].set(xlabel="strength", ylabel="refusal log-odds (harmful)", title="Refusal vs strength")
    axes[1].set(
        xlabel="strength",
        ylabel="share with log-odds > 0",
        ylim=(-0.05, 1.05),
        title="Refusal rate (logit judge) vs strength",
    )
    axes[2].set(xlabel="strength", ylabel="KL on harmless", yscale="log", title="Damage")
    if sweep["settings"].get("match_measure", "mean") == "mean":
        axes[3].axvline(sweep["kl_budget"], ls=":", color="k", label="KL budget")
    axes[3].set(
        xlabel="KL on harmless (nats)",
        ylabel="refusal log-odds",
        xscale="log",
        title="Frontier: lower-left is better",
    )
    for axis in axes:
        axis.legend(fontsize=7)
    return _finish(fig, path)


def plot_clouds(
    harmful: Float[Tensor, "n d"],
    harmless: Float[Tensor, "m d"],
    transported: Float[Tensor, "n d"],
    path: str | Path | None = None,
    *,
    title: str = "",
) -> Figure:
    """Harmful, harmless and transported-harmful activations in the top-2 PCA plane of the
    untransported ones."""
    pooled = torch.cat([harmful, harmless]).double()
    centre = pooled.mean(0)
    _, _, vh = torch.linalg.svd(pooled - centre, full_matrices=False)
    plane = vh[:2]

    def project(rows: Tensor) -> np.ndarray:
        return ((rows.double() - centre) @ plane.T).numpy()

    fig = Figure(figsize=(5.5, 5))
    axis = fig.subplots()
    for rows, label, color in (
        (harmful, "harmful", "#d62728"),
        (harmless, "harmless", "#2ca02c"),
        (transported, "harmful, transported", "#1f77b4"),
    ):
        xy = project(rows)
        axis.scatter(xy[:, 0], xy[:, 1], s=14, alpha=0.7, label=label, color=color)
    axis.set(xlabel="PC 1", ylabel="PC 2", title=title or "Activations before and after transport")
    axis.legend()
    return _finish(fig, path)


def plot_detection(record: Any, path: str | Path | None = None) -> Figure:
    """AUROC (95 % CI) of detecting each method against monitored layer, one panel per score,
    with the chance line at 0.5."""
    record = monitor_json(record)
    results = record["results"]
    scores = list(dict.fromkeys(r["score"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    fig = Figure(figsize=(4.5 * max(len(scores), 1), 4))
    axes = fig.subplots(1, max(len(scores), 1), sharey=True, squeeze=False)[0]
    for axis, score in zip(axes, scores, strict=False):
        for i, method in enumerate(methods):
            rows = sorted(
                (r for r in results if r["score"] == score and r["method"] == method),
                key=lambda r: r["layer"],
            )
            estimates = [r["auroc"] for r in rows]
            dodge = 0.08 * (i - (len(methods) - 1) / 2)  # methods side by side at each layer
            axis.errorbar(
                [r["layer"] + dodge for r in rows],
                [e["value"] for e in estimates],
                yerr=_errors(estimates),
                marker="o",
                capsize=2,
                color=METHOD_COLORS.get(method),
                label=method,
            )
        axis.axhline(0.5, ls=":", color="k", label="chance")
        axis.set(xlabel=f"monitored layer ({record['hook']})", title=f"score: {score}",
                 ylim=(0, 1.05))  # fmt: skip
        layers = record["monitor_layers"]
        axis.set_xticks(layers)
        axis.set_xlim(min(layers) - 0.6, max(layers) + 0.6)
    axes[0].set_ylabel("AUROC (intervened vs clean, 95 % CI)")
    axes[0].legend(fontsize=7)
    return _finish(fig, path)
