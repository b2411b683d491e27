"""Issue 6: which OT variant removes refusal at direction ablation's damage?

Every variant is fitted on the training prompts, its strength is searched so that its mean
first-token KL on held-out harmless prompts matches direction ablation's (``match_strength``),
and it is scored there by the refusal log-odds on held-out harmful prompts (lower: less
refusal; no generation). The table is written to ``experiments/results/variants-<data>.json``.

    .venv/bin/python experiments/variants.py              # the package's own prompts
    .venv/bin/python experiments/variants.py --shared     # ../shared/data (128 + 128 train)
"""

import argparse
import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any

from _results import write_results

import tl_ot_ablation as tlo
from tl_ot_ablation.eval.common import at_strength
from tl_ot_ablation.eval.matched import match_strength
from tl_ot_ablation.eval.sweep import Scorer

FIT = "validation"
"""The 64 + 64 prompts these results were recorded with (the fitting split before it grew to 256)."""

ROOT = Path(__file__).resolve().parents[1]


def prompts(shared: bool) -> tuple[list[str], list[str], list[str], list[str]]:
    if not shared:
        return (
            tlo.default_prompts("harmful", FIT),
            tlo.default_prompts("harmless", FIT),
            tlo.default_prompts("harmful", "eval"),
            tlo.default_prompts("harmless", "eval"),
        )
    data = ROOT.parent / "shared" / "data"
    load = tlo.load_prompts
    return (
        load(data / "harmful_train.json")[:128],
        load(data / "harmless_train.json")[:128],
        load(data / "harmful_val.json")[:32],
        load(data / "harmless_val.json")[:32],
    )


def render(path: Path) -> str:
    """The results file as a markdown table (95 % bootstrap CIs in brackets)."""
    record = json.loads(path.read_text())

    def est(value: dict[str, float], spec: str) -> str:
        return f"{value['value']:{spec}} [{value['ci_low']:{spec}}, {value['ci_high']:{spec}}]"

    lines = [
        f"`{record['command']}` (layer {record['layer']}, {record['n_train'][0]} + "
        f"{record['n_train'][1]} training prompts, {record['n_eval'][0]} + {record['n_eval'][1]} "
        f"held-out; KL budget {record['kl_budget']:.3g}; unmodified refusal log-odds "
        f"{est(record['unmodified_refusal'], '.2f')})",
        "",
        "| variant | KL at s=1 | matched s | refusal log-odds at matched KL | KL there |",
        "|---|---|---|---|---|",
    ]
    for row in record["variants"]:
        strength = row["matched_strength"]
        lines.append(
            f"| {row['variant']} | {est(row['kl_at_1'], '.3g')} | "
            f"{'1 (budget)' if strength is None else f'{strength:.3g}'} | "
            f"{est(row['refusal_matched'], '.2f')} | {est(row['kl_matched'], '.3g')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", action="store_true", help="use ../shared/data splits")
    parser.add_argument("--render", type=Path, help="print a results file as markdown and exit")
    parser.add_argument("--layer", type=int, default=14)
    parser.add_argument("--only", nargs="*", help="run only these variants")
    args = parser.parse_args()
    if args.render:
        print(render(args.render))
        return
    warnings.filterwarnings("ignore", message="strength=")
    train_h, train_hl, eval_h, eval_hl = prompts(args.shared)
    model = tlo.load_model()
    scorer = Scorer(model, eval_h, eval_hl, batch_size=32)
    layer = args.layer
    block = list(range(layer - 3, layer + 4))

    def ot(layers: list[int] | None = None, method: str = "ot", **spec: Any) -> Any:
        return tlo.fit_ot_ablation(
            model,
            train_h,
            train_hl,
            layers=layers or [layer],
            spec=dataclasses.replace(tlo.RECOMMENDED_MAP, kind=method, **spec),
            collect=tlo.CollectOptions(progress=False, batch_size=32),
        )

    variants: dict[str, Any] = {
        "direction_ablation": lambda: tlo.fit_direction_ablation(
            model,
            train_h,
            train_hl,
            layer=layer,
            collect=tlo.CollectOptions(progress=False),
        ),
        "direction_ablation@post_instruction": lambda: tlo.fit_direction_ablation(
            model,
            train_h,
            train_hl,
            layer=layer,
            collect=tlo.CollectOptions(progress=False),
            placement=tlo.Placement(apply_positions="post_instruction"),
        ),
        "ot k=64 ridge": lambda: ot(n_components=64),
        "ot k=16 ridge": lambda: ot(n_components=16),
        "ot k=16 oas": lambda: ot(n_components=16, estimator="oas"),
        "ot k=16 ledoit_wolf": lambda: ot(n_components=16, estimator="ledoit_wolf"),
        "ot k=64 ledoit_wolf": lambda: ot(n_components=64, estimator="ledoit_wolf"),
        "ot k=16 lw gated": lambda: ot(n_components=16, estimator="ledoit_wolf", gate="posterior"),
        "ot k=64 lw gated": lambda: ot(n_components=64, estimator="ledoit_wolf", gate="posterior"),
        "ot k=16 lw hard gate": lambda: ot(n_components=16, estimator="ledoit_wolf", gate="hard"),
        "ot k=16 lw gated norm-preserving": lambda: ot(
            n_components=16, estimator="ledoit_wolf", gate="posterior", preserve_norm=True
        ),
        "ot k=16 lw covariance part only": lambda: ot(
            n_components=16, estimator="ledoit_wolf", part="covariance"
        ),
        "ot k=16 lw gated pca+mean_diff": lambda: ot(
            n_components=16, estimator="ledoit_wolf", gate="posterior", basis="pca+mean_diff"
        ),
        "mean_shift k=16 gated": lambda: ot(n_components=16, method="mean_shift", gate="posterior"),
        f"ot k=16 lw gated layers {block[0]}-{block[-1]}": lambda: ot(
            n_components=16, estimator="ledoit_wolf", gate="posterior", layers=block
        ),
        f"mean_shift k=16 gated layers {block[0]}-{block[-1]}": lambda: ot(
            n_components=16, method="mean_shift", gate="posterior", layers=block
        ),
    }
    if args.only:
        variants = {
            k: v for k, v in variants.items() if k in args.only or k == "direction_ablation"
        }
    none_refusal, _ = scorer(None)
    print(f"unmodified: refusal log-odds {none_refusal:.2f}")
    rows: list[dict[str, Any]] = []
    budget = None
    for name, build in variants.items():
        start = time.perf_counter()
        fitted = build()
        base = at_strength(fitted, 1.0)
        refusal_1, kl_1 = scorer(base)
        if budget is None:  # direction ablation comes first and sets the budget
            budget = kl_1.value
            match, refusal, kl = None, refusal_1, kl_1
        else:

            def damage(s: float, base: Any = base) -> float:
                return scorer(at_strength(base, s))[1].value

            match = match_strength(damage, budget, max_strength=4.0, steps=5)
            refusal, kl = scorer(at_strength(base, match.strength))
        row = {
            "variant": name,
            "refusal_at_1": refusal_1.to_dict(),
            "kl_at_1": kl_1.to_dict(),
            "matched_strength": None if match is None else match.strength,
            "refusal_matched": refusal.to_dict(),
            "kl_matched": kl.to_dict(),
            "seconds": round(time.perf_counter() - start, 1),
        }
        rows.append(row)
        print(
            f"{name:45s} s=1: refusal {refusal_1:.2f} KL {kl_1:.3g} | matched s="
            f"{row['matched_strength'] if match else 1.0:.3g}: refusal {refusal:.2f} KL {kl:.3g}",
            flush=True,
        )
    write_results(
        f"variants-{'shared' if args.shared else 'package'}.json",
        {
            "command": "python experiments/variants.py" + (" --shared" if args.shared else ""),
            "layer": layer,
            "n_train": [len(train_h), len(train_hl)],
            "n_eval": [len(eval_h), len(eval_hl)],
            "kl_budget": budget,
            "unmodified_refusal": none_refusal.to_dict(),
            "variants": rows,
        },
    )


if __name__ == "__main__":
    main()
