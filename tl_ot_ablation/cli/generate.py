"""``tl-ot-ablation generate``: completions under a saved ``InterventionSet`` (and, if asked,
the unmodified model's), printed for a person to read.

Not a job: it writes nothing, so it has no settings, output folder or report.
"""

import argparse
from pathlib import Path
from typing import Any

from ..lens.generation import GenerationOptions, generate
from ..lens.intervention_set import InterventionSet
from ..lens.prompts import load_prompts
from .printers import print_completions


def run_generate(args: argparse.Namespace, model: Any) -> Path:
    """``generate``: completions under a saved set (and the unmodified model's), printed with
    control characters escaped when stdout is a terminal (unchanged into a file or pipe)."""
    prompts = list(args.prompt) + (load_prompts(args.prompts) if args.prompts else [])
    interventions = InterventionSet.load(args.map, model=model)
    if args.strength is not None:
        interventions = interventions.with_strength(args.strength)
    options = GenerationOptions(
        batch_size=args.batch_size,
        system=args.system,
        progress=not args.no_progress,
        allow_control_tokens=args.allow_control_tokens,
    )
    n_tokens = args.max_new_tokens
    hooks = interventions.fwd_hooks()
    edited = generate(model, prompts, fwd_hooks=hooks, max_new_tokens=n_tokens, options=options)
    original = (
        generate(model, prompts, max_new_tokens=n_tokens, options=options)
        if args.with_unmodified
        else None
    )
    method = str(interventions.metadata.get("method", "edited"))
    print_completions(prompts, edited, original, method)
    return args.map
