"""Issue 12: completions to label by reading, from many methods, strengths, layers and prompts.

Fits every intervention once on the package's training prompts (64 + 64), then generates 64
greedy tokens for held-out harmful and harmless prompts from the package's evaluation split and
from ../shared/data's validation split under each configuration below. The pool is written
unlabelled to ``experiments/results/judge-pool.jsonl``; people read and label it (refusal,
deflection, compliance, degenerate), and the labelled file is
``data/judge/labels-1.5b.jsonl``, where the compliance judge is trained and validated.

    .venv/bin/python experiments/judge_pool.py
"""

import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import tl_ot_ablation as tlo
from tl_ot_ablation.eval.common import at_strength
from tl_ot_ablation.lens.training import collect_every_layer

FIT = "validation"
"""The 64 + 64 prompts these results were recorded with (the fitting split before it grew to 256)."""

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT = Path(__file__).resolve().parent / "results" / "judge-pool.jsonl"
N_HARMFUL, N_HARMLESS, NEW_TOKENS = 20, 8, 64


def _shared(name: str, n: int) -> list[str]:
    return [row["instruction"] for row in json.loads((SHARED / name).read_text())][:n]


def main() -> None:
    warnings.filterwarnings("ignore", message="strength=")
    model = tlo.load_model()
    harmful, harmless = tlo.default_prompts("harmful", FIT), tlo.default_prompts("harmless", FIT)
    collect = tlo.CollectOptions(batch_size=32, progress=False)
    training = collect_every_layer(model, harmful, harmless, collect, estimator="ledoit_wolf")
    fit = {"training": training, "collect": collect}
    gated = dataclasses.replace(
        tlo.RECOMMENDED_MAP, estimator="ledoit_wolf", gate="posterior", n_components=64
    )
    naive_spec = dataclasses.replace(tlo.RECOMMENDED_MAP, n_components=32)
    direction = tlo.fit_direction_ablation(model, harmful, harmless, layer=14, **fit)
    at23 = tlo.fit_ot_ablation(model, harmful, harmless, layers=[23], spec=gated, **fit)
    at14 = tlo.fit_ot_ablation(model, harmful, harmless, layers=[14], spec=gated, **fit)
    naive = tlo.fit_ot_ablation(model, harmful, harmless, layers=[14], spec=naive_spec, **fit)
    every = tlo.fit_ot_ablation(
        model,
        harmful,
        harmless,
        layers=list(range(28)),
        spec=gated,
        placement=tlo.Placement(sequential=False),
        **fit,
    )
    shift = tlo.fit_ot_ablation(
        model,
        harmful,
        harmless,
        layers=[23],
        spec=dataclasses.replace(gated, kind="mean_shift"),
        **fit,
    )
    configs = {
        "none": None,
        "direction_ablation@14": direction,
        "ot_selective@23 s=1": at23,
        "ot_selective@23 s=2": at_strength(at23, 2.0),
        "ot_selective@14 s=2": at_strength(at14, 2.0),
        "ot_naive@14 s=1": naive,
        "ot_full s=1": every,
        "mean_shift@23 s=2": at_strength(shift, 2.0),
    }
    prompt_sets = {
        ("package_eval", "harmful"): tlo.default_prompts("harmful", "eval")[:N_HARMFUL],
        ("package_eval", "harmless"): tlo.default_prompts("harmless", "eval")[:N_HARMLESS],
        ("shared_val", "harmful"): _shared("harmful_val.json", N_HARMFUL),
        ("shared_val", "harmless"): _shared("harmless_val.json", N_HARMLESS),
    }
    prompts = [p for group in prompt_sets.values() for p in group]
    origin = [key for key, group in prompt_sets.items() for _ in group]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, interventions in configs.items():
        start = time.perf_counter()
        hooks = [] if interventions is None else interventions.fwd_hooks()
        completions = tlo.generate(
            model,
            prompts,
            fwd_hooks=hooks,
            max_new_tokens=NEW_TOKENS,
            options=tlo.GenerationOptions(batch_size=32, progress=False),
        )
        for prompt, completion, (source, kind) in zip(prompts, completions, origin, strict=True):
            rows.append(
                {
                    "config": name,
                    "source": source,
                    "kind": kind,
                    "prompt": prompt,
                    "completion": completion,
                }
            )
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    OUT.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
