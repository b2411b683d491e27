"""Which matched damage? How the damage measure that strengths are matched against changes them.

``compare`` chooses each method's strength within a damage budget: direction ablation's own
validation harmless damage at strength 1 (``choices.damage_budget``), measured by
``CompareSettings.match_measure`` over the per-prompt first-token KL (``damage.MATCH_MEASURES``:
mean, median, p90, share above ``kl_threshold``). Then, among fractions of that ceiling, the judge
picks the most compliant strength (``choices.chosen_strength``). This script runs exactly that
choice for every measure, on two validation splits:

- ``package``: the package's validation split (32 harmful, 32 harmless), what ``compare`` uses;
- ``shared``: real prompts from ``../shared/data``'s *training* split (the first 32 harmful
  requests and the first ``--n-harmless`` everyday instructions), so the validation split there
  stays untouched for held-out runs.

Both methods are fitted as ``compare`` fits them, on the package's 256 + 256 training prompts:
direction ablation at the middle layer, the gated map (the job default, ``JOB_MAP``) at
layer 17, the layer ``compare --layers judged`` picks on the embedded model. Each strength's
per-prompt KL is measured once and summarised by every measure (so the measures differ only in
the number they bound); the judge's labels at a strength are decoded once and shared too.

Writes ``experiments/results/matched-measure.json``: per split and measure, the budget, each
method's KL ceiling and chosen strength with the judged validation counts behind it, and the
per-prompt KL distribution of each method at its chosen strength.

Usage: .venv/bin/python experiments/matched_measure.py [--n-harmless 64]
"""

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from gate_real_traffic import SHARED, _instructions  # experiments/ is on the path

import tl_ot_ablation as tlo
from tl_ot_ablation.eval.choices import chosen_strength
from tl_ot_ablation.eval.common import at_strength
from tl_ot_ablation.eval.damage import MATCH_MEASURES, summarise
from tl_ot_ablation.eval.fitting import compare_context
from tl_ot_ablation.eval.methods import fit_method
from tl_ot_ablation.eval.prompt_sets import ValidationPrompts
from tl_ot_ablation.eval.settings import CompareSettings
from tl_ot_ablation.eval.validation import (
    Validation,
    harmless_kl_per_prompt,
    validation_reference,
)
from tl_ot_ablation.io import atomic

ROOT = Path(__file__).resolve().parents[1]
LAYER = 17
METHODS = ("direction_ablation", "ot_selective")


@dataclass
class PerPromptValidation(Validation):
    """``Validation`` whose ``kl`` measures each edit's per-prompt KL once and summarises it by
    the settings' measure, so the four measures share their forward passes."""

    per_prompt: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def kl_per_prompt(self, model: Any, interventions: Any, settings: CompareSettings) -> Any:
        key = interventions.fingerprint()
        if key not in self.per_prompt:
            self.per_prompt[key] = harmless_kl_per_prompt(
                model, interventions, self.prompts.harmless, self.harmless_logprobs, settings
            )
        return self.per_prompt[key]

    def kl(self, model: Any, interventions: Any, settings: CompareSettings) -> float:
        kl = self.kl_per_prompt(model, interventions, settings)
        return summarise(kl, settings.match_measure, settings.kl_threshold)


def _distribution(kl: torch.Tensor, threshold: float) -> dict[str, float]:
    return {
        measure: float(f"{summarise(kl, measure, threshold):.6g}")
        for measure in ("mean", "median", "p90", "share_above")
    } | {"max": float(f"{float(kl.max()):.6g}")}


def _choose(model, fitted, validation, measure: str) -> dict[str, Any]:
    """``compare``'s strength choice for both methods under ``measure``."""
    settings = CompareSettings(layers=[LAYER], match_measure=measure).resolve(model.cfg.n_layers)
    direction = at_strength(fitted["direction_ablation"], 1.0)
    budget = validation.kl(model, direction, settings)
    out: dict[str, Any] = {"budget": float(f"{budget:.6g}")}
    if not budget > 0:  # compare raises here (choices.damage_budget): nothing to match
        return out | {"error": "direction ablation's damage is 0 under this measure"}
    for name in METHODS:
        sets_budget = name == "direction_ablation"
        chosen, choice = chosen_strength(
            model,
            fitted[name],
            None if sets_budget else budget,
            validation,
            settings,
            ceiling=1.0 if sets_budget else None,
            known_kl={1.0: budget} if sets_budget else None,
        )
        kl = validation.kl_per_prompt(model, chosen, settings)
        out[name] = {
            "ceiling": round(choice.ceiling, 4),
            "strength": round(choice.strength, 4),
            "judged": [
                {"strength": round(p.strength, 4), "compliance": p.compliance}
                for p in choice.points
                if p.compliance is not None
            ],
            "kl_at_chosen": _distribution(kl, settings.kl_threshold),
        }
        print(
            f"  {measure:11s} {name:18s} budget {budget:.4g} ceiling {choice.ceiling:.3f} "
            f"strength {choice.strength:.3f}",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-harmless", type=int, default=64)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "experiments/results/matched-measure.json"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    model = tlo.load_model()
    settings = CompareSettings(layers=[LAYER]).resolve(model.cfg.n_layers)
    train = tlo.default_prompts("harmful"), tlo.default_prompts("harmless")
    context = compare_context(model, *train, settings, None, layers=[LAYER], progress=False)
    fitted = {name: fit_method(name, context) for name in METHODS}
    splits = {
        "package": ValidationPrompts(
            tlo.default_prompts("harmful", "validation")[: settings.n_validation],
            tlo.default_prompts("harmless", "validation")[: settings.n_validation],
        ),
        "shared": ValidationPrompts(
            _instructions(SHARED / "harmful_train.json")[:32],
            _instructions(SHARED / "harmless_train.json")[: args.n_harmless],
        ),
    }
    record: dict[str, Any] = {
        "what": "compare's strength choice under each match_measure (budget: direction "
        "ablation's validation damage at strength 1)",
        "command": "python experiments/matched_measure.py"
        + (f" --n-harmless {args.n_harmless}" if args.n_harmless != 64 else ""),
        "model": model.cfg.model_name,
        "layer": LAYER,
        "direction_layer": settings.direction_layer,
        "kl_threshold": settings.kl_threshold,
        "judge": settings.judge,
        "max_new_tokens": settings.max_new_tokens,
        "splits": {},
    }
    for split, prompts in splits.items():
        print(
            f"{split}: {len(prompts.harmful)} harmful, {len(prompts.harmless)} harmless", flush=True
        )
        base = validation_reference(model, prompts, settings)
        validation = PerPromptValidation(base.prompts, base.harmless_logprobs)
        record["splits"][split] = {
            "n_harmful": len(prompts.harmful),
            "n_harmless": len(prompts.harmless),
            "measures": {m: _choose(model, fitted, validation, m) for m in MATCH_MEASURES},
        }
    record["seconds"] = round(time.perf_counter() - start, 1)
    atomic.write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out} in {record['seconds']} s")


if __name__ == "__main__":
    main()
