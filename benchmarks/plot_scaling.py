"""PNG plots of the scaling curves from the benchmarks' JSON results (issue 5, target 4).

Run after the benchmarks:  .venv/bin/python benchmarks/plot_scaling.py

Reads ``results/scaling.json`` (fit time vs d and vs k), ``results/collect-memory.json`` (memory vs
rows) and ``results/hooks.json`` (prefill time vs hooked layers); writes one PNG per curve
next to them. A missing JSON skips its plots with a message.
"""

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

RESULTS = Path(__file__).parent / "results"


def _read(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    if not path.is_file():
        print(f"skipped: {path} not found (run the benchmark that writes it)")
        return None
    return json.loads(path.read_text())


def _save(figure: Figure, name: str) -> None:
    figure.tight_layout()
    figure.savefig(RESULTS / name, dpi=120)
    print(f"wrote {RESULTS / name}")


def plot_fit_scaling(report: dict[str, Any]) -> None:
    config = report["config"]
    where = f"L={config['layers']}, n={config['n_per_side']} per side, 1 thread"
    labels = {
        "stats": "statistics alone",
        "fit_from_stats": "fit from statistics (excluding them)",
        "rows_route": "rows route",
        "pot": "POT per layer",
    }
    for axis, rows, fixed in (("d", report["by_d"], "k"), ("k", report["by_k"], "d")):
        figure = Figure(figsize=(5.5, 4))
        ax = figure.subplots()
        for key, label in labels.items():
            if key in rows[0]:
                ax.loglog([r[axis] for r in rows], [r[key] for r in rows], "o-", label=label)
        values = [r[axis] for r in rows]
        ax.set_xticks(values, [str(v) for v in values])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(axis if axis == "k" else "d_model")
        ax.set_ylabel("seconds (best of repeats)")
        ax.set_title(f"Fit time vs {axis} ({fixed}={rows[0][fixed]}; {where})", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        _save(figure, f"fit_vs_{axis}.png")


def plot_memory(report: dict[str, Any]) -> None:
    memory = report
    results = memory["results"]
    figure = Figure(figsize=(5.5, 4))
    ax = figure.subplots()
    for kind, label in (("stats", "GaussianStats (streaming)"), ("rows", "rows kept")):
        points = sorted(
            (value["rows"], value["peak_extra_mib"])
            for key, value in results.items()
            if key.startswith(kind + "_")
        )
        ax.loglog([p[0] for p in points], [max(p[1], 1.0) for p in points], "o-", label=label)
    config = memory["config"]
    ax.axhline(memory["summary"]["L·d² float64 scatter, MiB"], color="grey", ls="--", lw=1,
               label="L·d² float64")  # fmt: skip
    ax.set_xlabel("rows per layer")
    ax.set_ylabel("peak extra memory, MiB")
    ax.set_title(f"Collection memory vs rows (L={config['layers']}, d={config['d']})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    _save(figure, "memory_vs_rows.png")


def plot_overhead(report: dict[str, Any]) -> None:
    prefill = report["prefill_seconds"]
    counts = sorted(int(key.split("_")[0]) for key in prefill)
    base = prefill["0_layers"]
    figure = Figure(figsize=(5.5, 4))
    ax = figure.subplots()
    ax.plot(counts, [prefill[f"{c}_layers"] / base for c in counts], "o-")
    ax.axhline(1.0, color="grey", lw=1)
    config = report["config"]
    ax.set_xlabel("layers with the gated OT hook")
    ax.set_ylabel("prefill time / unhooked")
    ax.set_title(
        f"Hook overhead ({config['model']}, batch {config['batch']} x "
        f"{config['prompt_tokens']} tokens, {report['machine']['device']})",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    _save(figure, "overhead_vs_layers.png")


def main() -> None:
    scaling = _read("scaling.json")
    if scaling:
        plot_fit_scaling(scaling)
    memory = _read("collect-memory.json")
    if memory:
        plot_memory(memory)
    hooks = _read("hooks.json")
    if hooks:
        plot_overhead(hooks)


if __name__ == "__main__":
    main()
