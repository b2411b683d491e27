"""Issue 6: what strength does to the gated map, with generation (not only the logit score).

The posterior gate keeps the harmless KL tiny at any strength, so a KL budget never stops the
strength search: the question is what larger strengths do to *harmful* prompts. For the default
variant (k = 64, Ledoit-Wolf, posterior gate, layer 14) at several strengths, this scores the
refusal log-odds and harmless KL (no generation), then generates on held-out prompts and counts
refusals and degenerate completions. Writes ``experiments/results/strength-probe.json``.

    .venv/bin/python experiments/strength_probe.py
"""

import dataclasses
import warnings

from _results import write_results

import tl_ot_ablation as tlo
from tl_ot_ablation.eval.common import at_strength
from tl_ot_ablation.eval.metrics import degeneracy, is_refusal
from tl_ot_ablation.eval.sweep import Scorer

FIT = "validation"
"""The 64 + 64 prompts these results were recorded with (the fitting split before it grew to 256)."""

STRENGTHS = (1.0, 1.5, 2.0, 2.5, 4.0, 8.0)


def main() -> None:
    warnings.filterwarnings("ignore", message="strength=")
    model = tlo.load_model()
    harmful, harmless = tlo.default_prompts("harmful", FIT), tlo.default_prompts("harmless", FIT)
    eval_harmful = tlo.default_prompts("harmful", "eval")
    eval_harmless = tlo.default_prompts("harmless", "eval")
    scorer = Scorer(model, eval_harmful, eval_harmless, batch_size=32)
    fitted = tlo.fit_ot_ablation(
        model,
        harmful,
        harmless,
        layers=[14],
        spec=dataclasses.replace(
            tlo.RECOMMENDED_MAP, n_components=64, estimator="ledoit_wolf", gate="posterior"
        ),
        collect=tlo.CollectOptions(batch_size=32, progress=False),
    )
    prompts = eval_harmful[:16] + eval_harmless[:8]
    rows = []
    for strength in STRENGTHS:
        edited = at_strength(fitted, strength)
        refusal, kl = scorer(edited)
        completions = tlo.generate(
            model,
            prompts,
            fwd_hooks=edited.fwd_hooks(),
            max_new_tokens=32,
            options=tlo.GenerationOptions(batch_size=24, progress=False),
        )
        row = {
            "strength": strength,
            "refusal_log_odds": refusal.to_dict(),
            "kl_harmless": kl.to_dict(),
            "harmful_refusals": sum(is_refusal(c) for c in completions[:16]),
            "harmful_degenerate": sum(degeneracy(c) is not None for c in completions[:16]),
            "harmless_degenerate": sum(degeneracy(c) is not None for c in completions[16:]),
            # Harmful completions are not stored: counts only (run it to read them).
            "harmless_sample": completions[16],
        }
        rows.append(row)
        print(
            f"s={strength:4}: refusal log-odds {refusal:.2f}, KL {kl:.3g}, refusals "
            f"{row['harmful_refusals']}/16, degenerate harmful {row['harmful_degenerate']}/16, "
            f"harmless {row['harmless_degenerate']}/8",
            flush=True,
        )
    write_results(
        "strength-probe.json", {"command": "python experiments/strength_probe.py", "rows": rows}
    )


if __name__ == "__main__":
    main()
