"""What every job checks before it runs: where it writes (``JobOutput``) and what it reads.

A job can run for hours; a folder it cannot write, a second run writing the same folder, or a
control token in a prompt should fail before the first pass, not after it. The jobs in
``eval.jobs`` are wrapped by these decorators, so each states its checks in one line.
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from ..io import atomic
from ..io.result_cache import ResultCache
from ..lens.control_tokens import control_tokens_allowed


@dataclass(frozen=True)
class JobOutput:
    """Where and how a job writes its folder.

    Attributes:
        folder: The output folder (``None``: nothing is written, the job returns its record;
            ``fit`` needs one).
        plots: Draw the report's figures (``fit`` draws none).
        overwrite: Replace a folder the package wrote before.
        cache: The result cache the job reads and fills (``None``: none; ``compare`` keeps
            its validation measurements and held-out evaluations there, ``eval.run_cache``).
    """

    folder: str | Path | None
    plots: bool = True
    overwrite: bool = False
    cache: ResultCache | None = None


def check_output(folder: str | Path, *, overwrite: bool) -> Path:
    """Fail before any work if ``folder`` cannot be written at the end: not writable, a file,
    or a non-empty folder holding files the package did not write, without ``overwrite``."""
    atomic.check_target(folder, overwrite=overwrite)
    return Path(folder)


P = ParamSpec("P")
R = TypeVar("R")


def claims_output(job: Callable[P, R]) -> Callable[P, R]:
    """Check a job's ``out`` (``JobOutput``) folder before it runs and hold it
    (``atomic.claim``) until the job has written it, so a concurrent run on the same folder is
    refused before it starts."""
    signature = inspect.signature(job)

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        out: JobOutput = signature.bind(*args, **kwargs).arguments["out"]
        if out.folder is None:  # nothing to write (a Python caller wants the record only)
            return job(*args, **kwargs)
        check_output(out.folder, overwrite=out.overwrite)
        with atomic.claim(out.folder):
            return job(*args, **kwargs)

    return run


def checks_prompts(job: Callable[P, R]) -> Callable[P, R]:
    """Refuse control tokens in a job's prompts or system prompt before it runs (one error
    before the first pass, not after hours of work), unless its settings'
    ``allow_control_tokens``; with it, run the job inside ``control_tokens_allowed()``, so the
    formatting deep inside accepts them too."""
    signature = inspect.signature(job)

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        bound = signature.bind(*args, **kwargs).arguments
        settings = bound["settings"]
        allow = bool(getattr(settings, "allow_control_tokens", False))
        if not allow:
            tokenizer, system = bound["model"].tokenizer, settings.collect.system
            bound["prompts"].check_control_tokens(tokenizer, system=system)
        with control_tokens_allowed(allow):
            return job(*args, **kwargs)

    return run
