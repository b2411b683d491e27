"""Matplotlib figures of comparisons and monitor runs, drawn from their records, and the style
every figure shares (``plots_sweep`` draws the sweep's).

Every function takes a typed record (``record.CompareRecord`` / ``MonitorRecord``) or the
dictionary read back from ``results.json`` / ``detect.json`` (validated against the record's
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
from .metrics import Estimate
from .record import CompareRecord, MethodRecord, MonitorRecord
from .verdict import DEGENERATE_SHARE

METHOD_COLORS = {
    "none": "#7f7f7f",
    "direction_ablation": "#d62728",
    "actadd": "#9467bd",
    "mean_shift": "#8c564b",
    "per_neuron_ot": "#e377c2",
    "ot_full": "#ff7f0e",
    "ot_selective": "#1f77b4",
}


def finish(fig: Figure, path: str | Path | None) -> Figure:
    """Lay ``fig`` out and save it to ``path`` (PNG, 120 dpi) unless ``None``."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def error_bars(estimates: Sequence[Estimate]) -> np.ndarray:
    """``yerr`` / ``xerr`` of ``estimates``: distances to the CI ends, ``[2, n]``."""
    values = np.array([e.value for e in estimates])
    return np.stack(
        [
            values - np.array([e.ci_low for e in estimates]),
            np.array([e.ci_high for e in estimates]) - values,
        ]
    ).clip(min=0)


def _judged_bars(axis: Any, x: np.ndarray, rows: Sequence[Mapping[str, Estimate]]) -> None:
    """What the judge says of harmful completions, stacked (compliance with its CI at the
    bottom), and harmless compliance beside it."""
    bottom = np.zeros(len(rows))
    for key, label, color in (
        ("compliance_rate_harmful", "harmful: complies", "#2ca02c"),
        ("deflection_rate_harmful", "harmful: deflects", "#bcbd22"),
        ("degenerate_rate_harmful", "harmful: degenerate", "#d62728"),
    ):
        values = np.array([row[key].value for row in rows])
        errors = error_bars([row[key] for row in rows]) if key.startswith("compliance") else None
        axis.bar(x - 0.2, values, 0.4, bottom=bottom, yerr=errors, capsize=3, label=label,
                 color=color)  # fmt: skip
        bottom += values
    harmless = [row["compliance_rate_harmless"] for row in rows]
    axis.bar(x + 0.2, [e.value for e in harmless], 0.4, yerr=error_bars(harmless), capsize=3,
             label="harmless: complies", color="#1f77b4")  # fmt: skip
    axis.set(ylabel="share of prompts (judge)", ylim=(0, 1.05), title="Judged answers (95 % CI)")


def plot_comparison(record: Any, path: str | Path | None = None) -> Figure:
    """Judged compliance (or marker refusal, for records without a judge) on harmful and
    harmless prompts, and harmless KL per method, with 95 % CIs."""
    record = CompareRecord.coerce(record)
    methods = list(record.methods)
    rows = [record.methods[m].metrics for m in methods]
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
            left.bar(x + offset, [e.value for e in estimates], 0.4, yerr=error_bars(estimates),
                     capsize=3, label=label)  # fmt: skip
        left.set(ylabel="refusal rate (markers)", ylim=(0, 1.05), title="Refusal (95 % CI)")
    left.set_xticks(x, methods, rotation=30, ha="right")
    left.legend(fontsize=7)
    kls = [row["kl_harmless"] for row in rows]
    right.bar(
        x,
        [e.value if e.value > 0 else np.nan for e in kls],  # none: 0, no bar on a log axis
        yerr=error_bars(kls),
        capsize=3,
        color=[METHOD_COLORS.get(m, "C0") for m in methods],
    )
    right.set(yscale="log", ylabel="KL (nats)", title="First-token KL on harmless prompts")
    right.set_xticks(x, methods, rotation=30, ha="right")
    for i, row in enumerate(rows):
        degenerate = row.get("degenerate_rate_harmful")
        if degenerate is not None and degenerate.value > DEGENERATE_SHARE:
            left.annotate("degenerate", (i, 1.0), ha="center", fontsize=7, color="red")
    return finish(fig, path)


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
    record = CompareRecord.coerce(record)
    measure = record.settings.match_measure
    changed = any("identical_rate_harmless" in m.metrics for m in record.methods.values())
    fig = Figure(figsize=(12 if changed else 7, 4.5))
    axes = fig.subplots(1, 2 if changed else 1, squeeze=False)[0]
    axis = axes[0]
    for name, method in record.methods.items():
        color = METHOD_COLORS.get(name, "C0")
        if changed:
            _changed_point(axes[1], name, method, color)
        if method.selection is not None:
            _frontier_method(axis, name, method, color, measure)
    share = measure in SHARE_MEASURES
    label = measure_text(measure, record.settings.kl_threshold)
    axis.set(
        xscale="linear" if share else "log",
        xlabel=label if share else f"{label} (nats)",
        ylabel="judged compliance on harmful prompts",
        ylim=(-0.02, 1.02),
        title="Compliance vs damage (small: validation, x: stopped early; square: held out; "
        "triangle: median)",
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
    return finish(fig, path)


def _frontier_method(axis: Any, name: str, method: MethodRecord, color: str, measure: str) -> None:
    """One method on the left frontier panel: its validation strengths and held-out result."""
    choice = method.choice()
    assert choice is not None  # only methods with a selection are drawn
    points = [p for p in choice.points if p.compliance is not None]
    if name == "none":
        if points:
            axis.axhline(points[0].compliance, color=color, ls="--", lw=1,
                         label="none (validation)")  # fmt: skip
        return
    linear = measure in SHARE_MEASURES  # a share of 0 is a point; a KL of 0 has no log
    points = [p for p in points if p.kl > 0 or linear]
    stopped = [p for p in points if not p.complete]  # judged on a prefix only: a mark, no line
    points = [p for p in points if p.complete]
    if stopped:
        axis.plot([p.kl for p in stopped], [p.compliance for p in stopped], "x",
                  color=color, ms=5, alpha=0.6)  # fmt: skip
    if points:
        axis.plot([p.kl for p in points], [p.compliance for p in points], "o-",
                  color=color, ms=4, lw=1, alpha=0.6)  # fmt: skip
        for p in points:
            if p.strength == choice.strength:
                axis.plot(p.kl, p.compliance, "o", mfc="none", mec=color, ms=10)
    damage = method.metrics.get(MEASURE_METRIC.get(measure, "kl_harmless"))
    comply = method.metrics.get("compliance_rate_harmful")
    if comply is None or damage is None or (damage.value <= 0 and not linear):
        return
    axis.errorbar(damage.value, comply.value, xerr=error_bars([damage]),
                  yerr=error_bars([comply]), fmt="s", color=color, ms=8, capsize=3,
                  label=f"{name} (s={method.strength:.3g})")  # fmt: skip
    median = method.metrics.get("kl_harmless_median")
    if measure == "mean" and median is not None and median.value > 0:
        axis.plot(median.value, comply.value, "^", mfc="none", mec=color, ms=9)


def _changed_point(axis: Any, name: str, method: MethodRecord, color: str) -> None:
    """One method's held-out compliance against the share of harmless answers it changed."""
    identical = method.metrics.get("identical_rate_harmless")
    comply = method.metrics.get("compliance_rate_harmful")
    if identical is None or comply is None:
        return
    changed = Estimate(1 - identical.value, 1 - identical.ci_high, 1 - identical.ci_low)
    axis.errorbar(changed.value, comply.value, xerr=error_bars([changed]),
                  yerr=error_bars([comply]), fmt="s", color=color, ms=8, capsize=3,
                  label=name)  # fmt: skip


def plot_gate(record: Any, path: str | Path | None = None) -> Figure:
    """Histograms of each gated method's posterior P(harmful | z) at its layer's last prompt
    token, one panel per method, one outline per prompt set (held-out harmful and harmless,
    XSTest-style safe and unsafe when run); the dotted line is where the gate counts as open."""
    record = CompareRecord.coerce(record)
    gated = {name: method.gate for name, method in record.methods.items() if method.gate}
    fig = Figure(figsize=(5.5 * max(len(gated), 1), 4))
    axes = fig.subplots(1, max(len(gated), 1), squeeze=False)[0]
    colors = {"harmful": "#d62728", "harmless": "#2ca02c", "xstest_safe": "#1f77b4",
              "xstest_unsafe": "#ff7f0e"}  # fmt: skip
    bins = np.linspace(0, 1, 21)
    for axis, (name, gate) in zip(axes, gated.items(), strict=False):
        for kind, values in gate["posterior"].items():
            if not values:
                continue
            weights = np.full(len(values), 1 / len(values))
            axis.hist(values, bins=bins, histtype="step", lw=1.5, label=f"{kind} (n={len(values)})",
                      color=colors.get(kind), weights=weights)  # fmt: skip
        axis.axvline(0.5, ls=":", color="k")
        axis.set(xlabel="gate posterior P(harmful | z), last prompt token",
                 ylabel="share of prompts", title=f"{name}, layer {gate['layer']}")  # fmt: skip
        axis.legend(fontsize=7)
    return finish(fig, path)


def plot_w2(rows: Sequence[Mapping[str, int | float]], path: str | Path | None = None) -> Figure:
    """Squared W2 between harmful and harmless activations per layer: mean + covariance part
    (``rows``: a record's ``w2_by_layer``)."""
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
    return finish(fig, path)


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
    return finish(fig, path)


def plot_detection(record: Any, path: str | Path | None = None) -> Figure:
    """AUROC (95 % CI) of detecting each method against monitored layer, one panel per score,
    with the chance line at 0.5."""
    record = MonitorRecord.coerce(record)
    results = record.results
    scores = list(dict.fromkeys(r.score for r in results))
    methods = list(dict.fromkeys(r.method for r in results))
    fig = Figure(figsize=(4.5 * max(len(scores), 1), 4))
    axes = fig.subplots(1, max(len(scores), 1), sharey=True, squeeze=False)[0]
    for axis, score in zip(axes, scores, strict=False):
        for i, method in enumerate(methods):
            rows = sorted(
                (r for r in results if r.score == score and r.method == method),
                key=lambda r: r.layer,
            )
            estimates = [r.auroc for r in rows]
            dodge = 0.08 * (i - (len(methods) - 1) / 2)  # methods side by side at each layer
            axis.errorbar([r.layer + dodge for r in rows], [e.value for e in estimates],
                          yerr=error_bars(estimates), marker="o", capsize=2,
                          color=METHOD_COLORS.get(method), label=method)  # fmt: skip
        axis.axhline(0.5, ls=":", color="k", label="chance")
        axis.set(xlabel=f"monitored layer ({record.hook})", title=f"score: {score}",
                 ylim=(0, 1.05))  # fmt: skip
        layers = record.monitor_layers
        axis.set_xticks(layers)
        axis.set_xlim(min(layers) - 0.6, max(layers) + 0.6)
    axes[0].set_ylabel("AUROC (intervened vs clean, 95 % CI)")
    axes[0].legend(fontsize=7)
    return finish(fig, path)
