"""Everything a command can check before the model loads: settings, device, prompt files, the
map to generate with, the output folder.

A mistake in the input should cost a second, not a model load and an activation pass: the
checks here run first, and what they produce (``Job``) is all a job command needs.
"""

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.devices import resolve_device
from ..core.errors import UserInputError
from ..eval.jobs import JobPrompts, PromptFiles, check_monitor_prompts, check_output
from ..eval.record import compare_strengths
from ..eval.settings import FitSettings, JobSettings
from ..io.result_cache import ResultCache
from ..lens.intervention_set import InterventionSet
from .to_settings import settings_from_args


@dataclass(frozen=True)
class Job:
    """What a job command runs on, all checked before the model loads."""

    settings: Any
    prompts: JobPrompts
    out: Path
    strengths_source: str | None = None


def _job_prompts(args: argparse.Namespace, settings: JobSettings) -> JobPrompts:
    files = PromptFiles(
        harmful=args.harmful,
        harmless=args.harmless,
        eval_harmful=args.eval_harmful,
        eval_harmless=args.eval_harmless,
        texts=args.texts,
        questions=args.questions,
        validation_harmful=getattr(args, "validation_harmful", None),
        validation_harmless=getattr(args, "validation_harmless", None),
        xstest=getattr(args, "xstest", None),
    )
    allow_overlap = args.allow_overlap or args.command == "fit"
    return JobPrompts.shipped(settings, files, allow_overlap=allow_overlap)


def _check_generate_strength(strength: float | None) -> None:
    """``generate --strength``: finite and >= 0, as every intervention requires."""
    if strength is not None and not (math.isfinite(strength) and strength >= 0):
        raise UserInputError(
            f"--strength must be a finite number >= 0 (0: no edit, 1: the fitted edit), got "
            f"{strength}"
        )


def check_before_loading(args: argparse.Namespace) -> Job | None:
    """Everything that can be checked without the model: settings, device, files, the output
    folder. Returns the ``Job`` of a job command, ``None`` for ``generate``.

    Raises:
        UserInputError, FileNotFoundError, FileExistsError: bad input (``entry``: exit 2).
    """
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    resolve_device(args.device, option="--device")
    if getattr(args, "clear_cache", False):
        cache = ResultCache()
        print(f"cleared {cache.clear()} entries from the result cache {cache.root}")
    if args.command == "generate":
        if not args.prompt and not args.prompts:
            raise UserInputError("give --prompt TEXT (repeatable) or --prompts FILE")
        if args.max_new_tokens < 1:
            raise UserInputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
        _check_generate_strength(args.strength)
        InterventionSet.load(args.map)  # a broken map fails before the model loads
        return None
    compared = None
    if args.command == "monitor" and args.strengths_from is not None:
        compared = compare_strengths(args.strengths_from, args.methods)
    settings = settings_from_args(args, compared)
    default = Path("maps") / settings.method if isinstance(settings, FitSettings) else None
    out = args.out or default or Path(f"reports/{args.command}")
    check_output(out, overwrite=args.force)
    prompts = _job_prompts(args, settings)
    if args.command == "monitor":
        check_monitor_prompts(prompts)
    return Job(settings, prompts, out, None if compared is None else str(compared[2]))
