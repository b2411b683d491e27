"""What stopping a candidate once the count decides saves in ``compare``'s layer search.

Run:  .venv/bin/python benchmarks/bench_early_stop.py            (~22 min on 2 cores)
      .venv/bin/python benchmarks/bench_early_stop.py --both     (+ judging every prompt,
                                                                  side by side: ~27 min)

The embedded model, the default settings and the package's prompts: the training activations
are collected once, then the judged layer search (``choices.judge_layers``) runs with
``early_stop=16`` (and with ``early_stop=None`` under ``--both``) on a fresh validation memo
each, so neither reuses the other's passes. Recorded: each run's seconds, the validation
prompts it decoded, its trials and its chosen layer; and the judged-layer run recorded in
``experiments/results/compare-judged-layers/`` (every prompt judged, batch 32) for the trials
and the layer that the early-stopping search must reproduce (decoding 16 prompts at a time
instead of 32 changes the padding and so may change a completion by rounding).
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from _bench import RESULTS, ROOT, machine, write_report

import tl_ot_ablation as tlo
from tl_ot_ablation.eval import choices, validation
from tl_ot_ablation.eval.fitting import collect_training_activations
from tl_ot_ablation.eval.prompt_sets import JobPrompts
from tl_ot_ablation.eval.settings import CompareSettings

RECORDED = ROOT / "experiments" / "results" / "compare-judged-layers" / "results.json"


def layer_search(model: Any, settings: CompareSettings, prompts: JobPrompts, training: Any,
                 reference: Any) -> dict[str, Any]:  # fmt: skip
    """One judged layer search on a fresh memo: seconds, prompts decoded, trials, layer."""
    decoded: list[int] = []
    judged = validation.judged_completions

    def counting(model: Any, interventions: Any, harmful: Any, settings: Any) -> Any:
        decoded.append(len(harmful))
        return judged(model, interventions, harmful, settings)

    validation.judged_completions = counting
    fresh = dataclasses.replace(reference, measured={}, reused=0)
    try:
        start = time.perf_counter()
        _, choice, _ = choices.judge_layers(
            model, prompts.train_harmful, prompts.train_harmless, settings, training, fresh,
            progress=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    finally:
        validation.judged_completions = judged
    return {
        "early_stop": settings.early_stop,
        "seconds": round(seconds, 1),
        "prompts_decoded": sum(decoded),
        "layer": choice.layers,
        "trials": choice.trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--both", action="store_true", help="also judge every prompt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "early-stop.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = tlo.load_model()
    settings = CompareSettings().resolve(model.cfg.n_layers)
    prompts = JobPrompts.shipped(settings)
    assert prompts.validation is not None
    start = time.perf_counter()
    training = collect_training_activations(
        model, prompts.train_harmful, prompts.train_harmless, settings, settings.methods
    )
    reference = validation.validation_reference(model, prompts.validation, settings)
    prepared = time.perf_counter() - start
    runs = [layer_search(model, settings, prompts, training, reference)]
    if args.both:
        every = dataclasses.replace(settings, early_stop=None)
        runs.append(layer_search(model, every, prompts, training, reference))
    recorded = json.loads(RECORDED.read_text())
    write_report(
        args.out,
        {
            "machine": machine(),
            "command": "benchmarks/bench_early_stop.py" + (" --both" if args.both else ""),
            "n_validation_harmful": len(prompts.validation.harmful),
            "seconds_collecting_and_reference": round(prepared, 1),
            "runs": runs,
            "recorded": {
                "source": RECORDED.relative_to(ROOT).as_posix(),
                "layer": recorded["settings"]["layers"],
                "trials": recorded["layer_trials"],
            },
        },
    )


if __name__ == "__main__":
    main()
