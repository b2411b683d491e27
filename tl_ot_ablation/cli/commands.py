"""The four job commands (compare, sweep, fit, monitor): one ``eval.jobs`` call each, then its
printer.

The jobs do the work and write the files; this module only passes the command line's output
options to them, so a command here has no logic of its own.
"""

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..eval.jobs import JobOutput, compare_job, fit_job, monitor_job, sweep_job
from ..io.result_cache import ResultCache
from .prepare import Job
from .printers import print_comparison, print_detection, print_fit, print_sweep


def _output(args: argparse.Namespace, job: Job) -> JobOutput:
    """Where and how a job writes its folder: ``--out``, ``--no-plots`` and ``--force``."""
    cache = ResultCache(enabled=not getattr(args, "no_cache", False))
    return JobOutput(job.out, plots=not args.no_plots, overwrite=args.force, cache=cache)


def _reported(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """What a report job records: the model's name and the command line; and
    ``--no-progress``."""
    return {"model_name": args.model, "command": command, "progress": not args.no_progress}


def run_compare(args: argparse.Namespace, job: Job, model: Any, command: str) -> Path:
    """``compare``: the job, then the table and the verdict."""
    preset = "quick" if args.quick else "default"
    record, _ = compare_job(
        model,
        job.prompts,
        job.settings,
        _output(args, job),
        preset=preset,
        **_reported(args, command),
    )
    print_comparison(record, job.out)
    return job.out


def run_sweep(args: argparse.Namespace, job: Job, model: Any, command: str) -> Path:
    """``sweep``: the job, then the best placement."""
    result, record, _ = sweep_job(
        model, job.prompts, job.settings, _output(args, job), **_reported(args, command)
    )
    print_sweep(result, record, job.out)
    return job.out


def run_fit(args: argparse.Namespace, job: Job, model: Any, command: str) -> Path:
    """``fit``: the job, then what was fitted and where it was saved."""
    out = _output(args, job)
    fitted, choice, folder = fit_job(
        model, job.prompts, job.settings, out, progress=not args.no_progress
    )
    print_fit(fitted, choice, folder)
    return folder


def run_monitor(args: argparse.Namespace, job: Job, model: Any, command: str) -> Path:
    """``monitor``: the job, then the detection table."""
    record, _ = monitor_job(
        model,
        job.prompts,
        job.settings,
        _output(args, job),
        strengths_source=job.strengths_source,
        **_reported(args, command),
    )
    print_detection(record, job.out)
    return job.out


JOBS: dict[str, Callable[[argparse.Namespace, Job, Any, str], Path]] = {
    "compare": run_compare,
    "sweep": run_sweep,
    "fit": run_fit,
    "monitor": run_monitor,
}
"""The job commands by name (``generate`` and ``read`` are not jobs: no settings, no report)."""
