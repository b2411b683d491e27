"""Issue 6: choose k and the covariance estimator by held-out Gaussian log-likelihood.

Collects the post-instruction rows of the 64 + 64 training prompts at layer 14 of the embedded
model, holds out the last quarter of each class (whole prompts), and scores every (k, estimator)
by the held-out log-density (``tl_ot_ablation.eval.selection``). Writes
``experiments/results/likelihood.json``.

    .venv/bin/python experiments/likelihood.py
"""

from _results import write_results

import tl_ot_ablation as tlo
from tl_ot_ablation import CollectOptions
from tl_ot_ablation.eval.selection import heldout_log_likelihood
from tl_ot_ablation.lens.collect import collect_activations

FIT = "validation"
"""The 64 + 64 prompts these results were recorded with (the fitting split before it grew to 256)."""

LAYER = 14


def main() -> None:
    model = tlo.load_model()
    name = f"blocks.{LAYER}.hook_resid_pre"
    rows = [
        collect_activations(
            model,
            tlo.default_prompts(kind, FIT),
            name,
            CollectOptions(progress=False),
        )[name]
        for kind in ("harmful", "harmless")
    ]
    scores = heldout_log_likelihood(*rows, n_components=[4, 8, 16, 32, 64, 128, 256])
    for score in scores:
        print(f"k={score.n_components:4d} {score.estimator:12s} {score.log_likelihood:12.1f}")
    write_results(
        "likelihood.json",
        {
            "command": "python experiments/likelihood.py",
            "layer": LAYER,
            "rows": [len(r) for r in rows],
            "scores": [vars(s) for s in scores],
        },
    )


if __name__ == "__main__":
    main()
