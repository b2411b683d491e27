"""Issue 6: how open is the posterior gate on plain prose, and on held-out chat prompts?

The gated map scales each edit by P(harmful | z) under its own two Gaussians, fitted on the
post-instruction tokens of chat-formatted prompts. Prose is not chat-formatted, so its
activations may look like neither class; this measures the gate there. For the maps at the
middle layer (14) and at the layer ``compare`` chooses from the training statistics (23), fitted
on the package's 64 + 64 training prompts (default variant: k = 64, Ledoit-Wolf), it reports
the mean gate weight and the share of tokens with weight > 0.5 on:

- the post-instruction tokens of the 32 + 32 held-out harmful / harmless prompts;
- every token but the first of the 8 shipped prose paragraphs (where ``compare``'s prose
  perplexity applies the map).

Writes ``experiments/results/gate-on-prose.json``.

    .venv/bin/python experiments/gate_on_prose.py
"""

import dataclasses

import torch
from _results import write_results

import tl_ot_ablation as tlo
from tl_ot_ablation import CollectOptions
from tl_ot_ablation.lens.collect import collect_activations
from tl_ot_ablation.lens.prompts import plain_text

FIT = "validation"
"""The 64 + 64 prompts these results were recorded with (the fitting split before it grew to 256)."""

LAYERS = (14, 23)


def main() -> None:
    model = tlo.load_model()
    harmful, harmless = tlo.default_prompts("harmful", FIT), tlo.default_prompts("harmless", FIT)
    names = [f"blocks.{layer}.hook_resid_pre" for layer in LAYERS]
    fitted = tlo.fit_ot_ablation(
        model,
        harmful,
        harmless,
        layers=list(LAYERS),
        spec=dataclasses.replace(tlo.RECOMMENDED_MAP, estimator="ledoit_wolf", gate="posterior"),
        collect=tlo.CollectOptions(progress=False),
        placement=tlo.Placement(sequential=False),
    )
    sources = {
        "held-out harmful": collect_activations(
            model,
            tlo.default_prompts("harmful", "eval"),
            names,
            CollectOptions(progress=False),
        ),
        "held-out harmless": collect_activations(
            model,
            tlo.default_prompts("harmless", "eval"),
            names,
            CollectOptions(progress=False),
        ),
        "prose": collect_activations(
            model,
            plain_text(),
            names,
            CollectOptions(positions="all", chat=False, progress=False),
        ),
    }
    results = []
    for name, layer in zip(names, LAYERS, strict=True):
        transport = fitted[name].to("cpu")
        for what, rows in sources.items():
            weight = torch.sigmoid(transport.harmful_log_odds(rows[name].float()))
            row = {
                "layer": layer,
                "tokens": what,
                "n": len(weight),
                "mean_gate": float(weight.mean()),
                "share_open": float((weight > 0.5).float().mean()),
                "edit_norm_over_norm": float(
                    (transport(rows[name].float()) - rows[name].float()).norm(dim=-1).mean()
                    / rows[name].float().norm(dim=-1).mean()
                ),
            }
            results.append(row)
            print(
                f"layer {layer:2d}  {what:18s} n={row['n']:5d}  mean gate {row['mean_gate']:.3f}"
                f"  open {row['share_open']:.2f}  |edit|/|x| {row['edit_norm_over_norm']:.4f}"
            )
    write_results(
        "gate-on-prose.json",
        {"command": "python experiments/gate_on_prose.py", "results": results},
    )


if __name__ == "__main__":
    main()
