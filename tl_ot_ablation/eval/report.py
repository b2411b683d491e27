"""Report folders: ``results.json`` / ``sweep.json`` / ``detect.json``, ``report.md`` and PNG
plots, written together.

The JSON records are the stable interface (``record``; documented in ``docs/cli.md``,
"results.json and sweep.json"); ``report.md`` is for people and is rebuilt from the records alone
(``report_pages``). A folder is written atomically (``io.atomic``), records first: a plot that
fails leaves a warning in the report, never a lost run; an interrupted write leaves the old folder
as it was. This module only decides what goes into a folder and writes it.
"""

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ..io import atomic
from .plots import plot_clouds, plot_comparison, plot_detection, plot_frontier, plot_gate, plot_w2
from .plots_sweep import plot_layer_sweep, plot_strength
from .record import CompareRecord, MonitorRecord, SweepRecord
from .record_codec import Record
from .report_pages import compare_markdown, monitor_markdown, sweep_markdown

Plot = tuple[str, str, Callable[[Path], Any]]
"""A figure to draw: ``(title in report.md, file name, draw(path))``."""


def draw_figures(folder: Path, plots: Sequence[Plot]) -> list[tuple[str, str]]:
    """Draw each plot into ``folder``; returns ``(title, file)`` per plot for ``report.md``. A
    failure becomes a warning and a "FAILED" title (empty file), not a lost run."""
    figures: list[tuple[str, str]] = []
    for title, name, draw in plots:
        try:
            draw(folder / name)
            figures.append((title, name))
        except Exception as error:
            warnings.warn(f"plot {name} failed ({error!r}); the records are saved", stacklevel=3)
            figures.append((f"{title} (FAILED: {error!r})", ""))
    return figures


def compare_plots(record: CompareRecord, clouds: Any = None) -> list[Plot]:
    """The figures of a comparison: each one the record has data for."""
    plots: list[Plot] = [
        ("Refusal and damage per method", "comparison.png", partial(plot_comparison, record))
    ]
    if any(method.selection for method in record.methods.values()):
        title = "Compliance vs damage: the frontier"
        plots.append((title, "frontier.png", partial(plot_frontier, record)))
    if clouds is not None:
        harmful, harmless, transported, name = clouds
        draw = partial(plot_clouds, harmful, harmless, transported, title=name)
        plots.append(("Activation clouds before and after transport", "clouds.png", draw))
    if record.w2_by_layer:
        plots.append(("W2 per layer", "w2_by_layer.png", partial(plot_w2, record.w2_by_layer)))
    if any(method.gate for method in record.methods.values()):
        title = "The gate's posterior on held-out prompts"
        plots.append((title, "gate.png", partial(plot_gate, record)))
    return plots


def write_folder(
    folder: str | Path,
    record: Record,
    name: str,
    page: Callable[[list[tuple[str, str]]], list[str]],
    plots: Sequence[Plot],
    *,
    files: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a report folder atomically, in this order: ``record`` as ``name``, the other
    ``files`` (``{name: text}``), the ``plots``, then ``report.md`` (``page(figures)``); returns
    the folder. A report folder of ours is replaced whole; another non-empty folder needs
    ``overwrite``."""
    with atomic.folder(folder, overwrite=overwrite) as temp:
        record.write(temp / name)
        for file, text in (files or {}).items():
            (temp / file).write_text(text)
        figures = draw_figures(temp, plots)
        (temp / "report.md").write_text("\n".join(page(figures)))
    return Path(folder)


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
    text = json.dumps({"prompts": prompts, "completions": completions}, indent=1) + "\n"
    return write_folder(
        folder,
        record,
        "results.json",
        partial(compare_markdown, record, completions, prompts),
        compare_plots(record, clouds) if plots_enabled else [],
        files={"completions.json": text},
        overwrite=overwrite,
    )


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
    plots: list[Plot] = [
        ("Refusal and KL vs layer", "layer_sweep.png", partial(plot_layer_sweep, record)),
        ("Strength curves and frontier", "strength.png", partial(plot_strength, record)),
        ("W2 per layer", "w2_by_layer.png", partial(plot_w2, record.w2_by_layer)),
    ]
    files = {}
    if completions is not None:
        files["completions.json"] = json.dumps(completions, indent=1) + "\n"
    return write_folder(
        folder,
        record,
        "sweep.json",
        partial(sweep_markdown, record),
        plots if plots_enabled else [],
        files=files,
        overwrite=overwrite,
    )


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
    plot = ("AUROC per monitored layer", "detection.png", partial(plot_detection, record))
    return write_folder(
        folder,
        record,
        "detect.json",
        partial(monitor_markdown, record),
        [plot] if plots_enabled else [],
        overwrite=overwrite,
    )
