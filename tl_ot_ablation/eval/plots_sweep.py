"""Matplotlib figures of a layer / k / strength sweep, drawn from its record.

Each function takes a ``record.SweepRecord``, a ``sweep.SweepResult`` or the dictionary read
back from ``sweep.json`` (validated first), draws on a new figure and returns it; pass ``path``
to also save it as a PNG. The style (colours, error bars, saving) is ``plots``'s, so a sweep's
figures read like a comparison's. The W2 table of a sweep is drawn by ``plots.plot_w2``.
"""

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .plots import METHOD_COLORS, error_bars, finish
from .record import SweepRecord


def plot_layer_sweep(sweep: Any, path: str | Path | None = None) -> Figure:
    """Refusal score and harmless KL of single layers and adjacent pairs, against depth; a
    judged sweep adds a panel of judged compliance on the harmful prompts."""
    sweep = SweepRecord.coerce(sweep)
    judged = any(p.compliance is not None for p in sweep.points)
    fig = Figure(figsize=(9, 9 if judged else 6))
    axes = fig.subplots(3 if judged else 2, 1, sharex=True)
    top, bottom = axes[0], axes[-1]
    panels = [(top, "refusal_score"), (bottom, "kl_harmless")]
    if judged:
        panels.insert(1, (axes[1], "compliance"))
        axes[1].set(ylabel="judged compliance (harmful)", ylim=(-0.05, 1.05))
    references = {p.method: p for p in sweep.points if p.kind == "reference"}
    for kind, marker in (("layer", "o"), ("pair", "s")):
        points = [p for p in sweep.points if p.kind == kind]
        if not points:
            continue
        for axis, key in panels:
            scored = [p for p in points if getattr(p, key) is not None]
            if not scored:
                continue
            depth = np.array([np.mean(p.layers) for p in scored])
            estimates = [getattr(p, key) for p in scored]
            axis.errorbar(
                depth,
                [e.value for e in estimates],
                yerr=error_bars(estimates),
                marker=marker,
                capsize=2,
                label=f"OT, {'single layers' if kind == 'layer' else 'adjacent pairs'}",
            )
    for method, point in references.items():
        for axis, key in panels:
            estimate = getattr(point, key)
            if estimate is None or (key == "kl_harmless" and method == "none"):
                continue
            axis.axhline(
                estimate.value,
                ls="--",
                color=METHOD_COLORS.get(method, "k"),
                label=method.replace("_", " "),
            )
    if sweep.settings.match_measure == "mean":  # else not on this axis
        bottom.axhline(sweep.kl_budget, ls=":", color="k", label="KL budget")
    top.set(ylabel="refusal log-odds (harmful)", title="Where transport removes refusal")
    bottom.set(ylabel="KL on harmless (nats)", xlabel="layer", yscale="log")
    for axis in axes:
        axis.legend(fontsize=7)
    return finish(fig, path)


def plot_strength(sweep: Any, path: str | Path | None = None) -> Figure:
    """Refusal score, logit-judged refusal rate and KL against strength per method, and the
    refusal-vs-KL frontier."""
    sweep = SweepRecord.coerce(sweep)
    points = [p for p in sweep.points if p.kind == "strength"]
    fig = Figure(figsize=(18, 4))
    axes = fig.subplots(1, 4)
    for method in dict.fromkeys(p.method for p in points):
        curve = sorted((p for p in points if p.method == method), key=lambda p: p.strength)
        strengths = [p.strength for p in curve]
        refusal = [p.refusal_score.value for p in curve]
        kl = [max(p.kl_harmless.value, 1e-7) for p in curve]
        style = {"marker": "o", "color": METHOD_COLORS.get(method), "label": method}
        share = [float("nan") if p.refusal_share is None else p.refusal_share.value for p in curve]
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
    if sweep.settings.match_measure == "mean":
        axes[3].axvline(sweep.kl_budget, ls=":", color="k", label="KL budget")
    axes[3].set(
        xlabel="KL on harmless (nats)",
        ylabel="refusal log-odds",
        xscale="log",
        title="Frontier: lower-left is better",
    )
    for axis in axes:
        axis.legend(fontsize=7)
    return finish(fig, path)
