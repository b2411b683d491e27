"""The jobs behind the CLI commands, callable from Python: one function per command.

Each takes a model, the prompts (``JobPrompts``), the job's settings and where to write
(``JobOutput``), runs its pipeline (``compare.run_comparison``, ``sweep.run_sweep``,
``fitting.fit_one_method``, ``monitor_pipeline.run_monitor``) and writes its output folder; the
CLI only parses arguments, loads the model and prints. ``JobPrompts.shipped`` picks the
package's own splits cut to the settings' sizes (or reads the user's files, ``PromptFiles``),
and refuses overlapping training and evaluation prompts unless allowed. Every job checks its
output folder and its prompts before the first pass (``job_guards``).
"""

import dataclasses
from pathlib import Path
from typing import Any

from ..core.errors import UserInputError
from ..lens.collect import collect_activations, hook_name
from ..lens.intervention_set import InterventionSet
from .compare import Comparison, comparison_record, run_comparison
from .fitting import fit_one_method
from .job_guards import JobOutput, check_output, checks_prompts, claims_output
from .monitor_pipeline import check_monitor_prompts, run_monitor
from .prompt_sets import EvalPrompts, JobPrompts, PromptFiles
from .record import CompareRecord, MonitorRecord, SweepRecord
from .report import write_compare_report, write_monitor_report, write_sweep_report
from .selection import LayerChoice
from .settings import CompareSettings, FitSettings, MonitorSettings, SweepSettings
from .sweep import SweepResult, run_sweep


def clouds(
    model: Any, comparison: Comparison, held_out: EvalPrompts, settings: CompareSettings
) -> tuple[Any, Any, Any, str] | None:
    """Held-out activations at the first selective layer's last prompt token, before and after
    ``ot_selective``, for ``plots.plot_clouds`` (``None`` without that method)."""
    selective = comparison.interventions.get("ot_selective")
    layers = comparison.settings.layers
    if selective is None or isinstance(layers, str):
        return None
    name = hook_name("resid_pre", layers[0])
    collect = dataclasses.replace(settings.collecting(progress=False), positions="last")
    rows = {
        kind: collect_activations(model, prompts, name, collect)[name]
        for kind, prompts in (("harmful", held_out.harmful), ("harmless", held_out.harmless))
    }
    transport = selective.to("cpu")[name]
    title = f"Layer {layers[0]}, last prompt token (held-out prompts)"
    return rows["harmful"], rows["harmless"], transport(rows["harmful"]), title


@claims_output
@checks_prompts
def compare_job(
    model: Any,
    prompts: JobPrompts,
    settings: CompareSettings,
    out: JobOutput,
    *,
    model_name: str,
    command: str | None = None,
    preset: str | None = None,
    progress: bool = True,
) -> tuple[CompareRecord, Path | None]:
    """``tl-ot-ablation compare``: run the comparison and write its report folder (none when
    ``out.folder`` is ``None``: the record only)."""
    comparison = run_comparison(
        model,
        prompts.train_harmful,
        prompts.train_harmless,
        prompts.held_out,
        settings,
        validation=prompts.validation,
        progress=progress,
        cache=out.cache,
    )
    record = comparison_record(
        comparison,
        model_name=model_name,
        train=prompts.train,
        held_out=prompts.held_out,
        validation=prompts.validation,
        command=command,
        preset=preset,
    )
    if out.folder is None:
        return record, None
    folder = write_compare_report(
        out.folder,
        record,
        {name: result.completions for name, result in comparison.results.items()},
        prompts.held_out.sets(),
        clouds=clouds(model, comparison, prompts.held_out, settings) if out.plots else None,
        plots_enabled=out.plots,
        overwrite=out.overwrite,
    )
    return record, folder


@claims_output
@checks_prompts
def sweep_job(
    model: Any,
    prompts: JobPrompts,
    settings: SweepSettings,
    out: JobOutput,
    *,
    model_name: str,
    command: str | None = None,
    progress: bool = True,
) -> tuple[SweepResult, SweepRecord, Path | None]:
    """``tl-ot-ablation sweep``: run the sweep and write its report folder (none when
    ``out.folder`` is ``None``)."""
    result = run_sweep(
        model,
        prompts.train_harmful,
        prompts.train_harmless,
        prompts.held_out.harmful,
        prompts.held_out.harmless,
        settings,
        progress=progress,
    )
    record = result.to_record(model=model_name, command=command)
    if out.folder is None:
        return result, record, None
    folder = write_sweep_report(
        out.folder,
        record,
        plots_enabled=out.plots,
        overwrite=out.overwrite,
        completions=result.completions_json() if settings.judged else None,
    )
    return result, record, folder


@claims_output
@checks_prompts
def fit_job(
    model: Any,
    prompts: JobPrompts,
    settings: FitSettings,
    out: JobOutput,
    *,
    progress: bool = True,
) -> tuple[InterventionSet, LayerChoice, Path]:
    """``tl-ot-ablation fit``: fit one registered method (``fitting.fit_one_method``) and save
    it as an InterventionSet in ``out.folder``."""
    if out.folder is None:
        raise UserInputError("fit_job saves the fitted set: give out=JobOutput(folder)")
    fitted, choice = fit_one_method(
        model, prompts.train_harmful, prompts.train_harmless, settings, progress=progress
    )
    return fitted, choice, fitted.save(out.folder, overwrite=out.overwrite)


@claims_output
@checks_prompts
def monitor_job(
    model: Any,
    prompts: JobPrompts,
    settings: MonitorSettings,
    out: JobOutput,
    *,
    model_name: str,
    command: str | None = None,
    strengths_source: str | None = None,
    progress: bool = True,
) -> tuple[MonitorRecord, Path | None]:
    """``tl-ot-ablation monitor``: how well an activation monitor detects each method
    (``monitor_pipeline.run_monitor``). Writes ``detect.json``, ``report.md`` and
    ``detection.png`` atomically (nothing when ``out.folder`` is ``None``)."""
    record = run_monitor(
        model,
        prompts,
        settings,
        model_name=model_name,
        command=command,
        strengths_source=strengths_source,
        progress=progress,
    )
    if out.folder is None:
        return record, None
    folder = write_monitor_report(
        out.folder, record, plots_enabled=out.plots, overwrite=out.overwrite
    )
    return record, folder


__all__ = [
    "JobOutput",
    "JobPrompts",
    "PromptFiles",
    "check_monitor_prompts",
    "check_output",
    "compare_job",
    "fit_job",
    "monitor_job",
    "sweep_job",
]
