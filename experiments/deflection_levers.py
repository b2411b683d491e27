"""Issue 12: which lever turns the gated map's deflections into compliance?

On the real ../shared/data validation prompts the gated map at layer 23 removes the refusal
(refusal log-odds -8.0, below direction ablation's -5.4) but the model then *deflects* on a
quarter of the requests ("... is a highly illegal and unethical practice"), so direction
ablation wins on judged compliance (0.87 vs 0.72). This screens the levers that could change
what the model says, each judged on the same 32 real harmful requests and costed by first-token
KL on 32 real everyday ones:

- strength (1.5 is what compare chose; 2 and 3);
- where the map applies: the post-instruction span (default) or every position but the first
  (the attention sink), as direction ablation applies at every position;
- the layer: 23 (auto), 21 + 23, and 14 / 17 (the paper's 40-60 % depth).

Fitted on the package's own training split (256 + 256, as compare) with its defaults (k = 64,
Ledoit-Wolf, posterior gate); screened on the first 32 + 32 prompts of ../shared/data's
*training* split, so the validation split that compare reports stays untouched by this choice.
Two layers are fitted on the unmodified activations (not sequentially, to keep one pass).
Writes ``experiments/results/deflection-levers.json`` after every variant (with completions).

``--variants NAME ...`` screens only those (beside direction ablation at s=0.5), into
``--name`` (default ``deflection-levers``; ``deflection-levers-strength.json`` holds the
strength screen at layers 17 and 20).

``--confirm NAME`` then scores one variant chosen on that screen, once, beside direction
ablation at compare's strength, on the validation prompts that compare reported (the 39
harmful requests and the first 39 everyday instructions, as ``--n-eval 39``), with
bootstrap intervals and the paired difference (``<--name>.json``, default
``deflection-confirm.json``; the completions also as ``<--name>/completions.json`` for
``export_for_labelling.py --kinds harmful``).

    .venv/bin/python experiments/deflection_levers.py [--shared ../shared/data]
    .venv/bin/python experiments/deflection_levers.py --name deflection-levers-strength \
        --variants "ot L17 s=3" "ot L17 s=4" "ot L20 s=2" "ot L20 s=3"
    .venv/bin/python experiments/deflection_levers.py --confirm "ot L14 s=2"
    .venv/bin/python experiments/deflection_levers.py --confirm "ot L17 s=2" \
        --name deflection-confirm-L17

The second confirm is what ``compare --layers judged`` evaluates on these prompts: the layer it
picks on the package's validation split (17) at the strength it chooses there (2), fitted on
the same training split and generated in the same batches of 32, so the greedy completions are
the ones that run would produce, without repeating its deterministic layer trials and reference
rows.
"""

import argparse
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _results import RESULTS, write_results

import tl_ot_ablation as tlo
from tl_ot_ablation.eval.common import at_strength
from tl_ot_ablation.eval.judge import LABELS
from tl_ot_ablation.eval.metrics import with_ci
from tl_ot_ablation.eval.sweep import Scorer
from tl_ot_ablation.io import atomic
from tl_ot_ablation.lens.collect import hook_name
from tl_ot_ablation.lens.intervention_set import InterventionSet
from tl_ot_ablation.lens.training import collect_training

LAYERS = (14, 17, 20, 21, 23)
N_SCREEN = 32
TOKENS = 64
SPEC = dataclasses.replace(
    tlo.RECOMMENDED_MAP, n_components=64, estimator="ledoit_wolf", gate="posterior"
)
COLLECT = tlo.CollectOptions(positions="post_instruction", batch_size=32, progress=True)
NOT_THE_SINK = slice(1, None)

# (name, layers, where the map applies, strength)
VARIANTS: list[tuple[str, tuple[int, ...], Any, float]] = [
    ("ot L23 s=1.5", (23,), None, 1.5),
    ("ot L23 s=2", (23,), None, 2.0),
    ("ot L23 s=3", (23,), None, 3.0),
    ("ot L23 every position s=1.5", (23,), NOT_THE_SINK, 1.5),
    ("ot L21+23 s=1.5", (21, 23), None, 1.5),
    ("ot L17 s=2", (17,), None, 2.0),
    ("ot L14 s=2", (14,), None, 2.0),
    ("ot L14 every position s=2", (14,), NOT_THE_SINK, 2.0),
    # More strength at the judged layer (on the validation split its KL was 1/2 360 of the
    # budget) and at the judged sweep's pick, layer 20 (session 11):
    ("ot L17 s=3", (17,), None, 3.0),
    ("ot L17 s=4", (17,), None, 4.0),
    ("ot L20 s=2", (20,), None, 2.0),
    ("ot L20 s=3", (20,), None, 3.0),
]


def write_completions(rows: list[dict[str, Any]], folder: Path) -> None:
    """The rows' harmful completions as a compare ``completions.json``, so that
    ``export_for_labelling.py`` can hand them to readers blind."""
    prompts = [c["prompt"] for c in rows[0]["completions"]]
    record = {
        "prompts": {"harmful": prompts},
        "completions": {
            row["variant"]: {"harmful": [c["completion"] for c in row["completions"]]}
            for row in rows
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / "completions.json", json.dumps(record, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--confirm", choices=[v[0] for v in VARIANTS])
    parser.add_argument("--variants", nargs="+", choices=[v[0] for v in VARIANTS])
    parser.add_argument("--name", help="results name (default: deflection-levers or -confirm)")
    args = parser.parse_args()
    if args.confirm and args.variants:
        parser.error("--variants is for the screen; a --confirm scores one variant")
    args.name = args.name or ("deflection-confirm" if args.confirm else "deflection-levers")
    if not args.name.replace("-", "").replace("_", "").isalnum():
        parser.error(f"--name must be letters, digits, - and _ (a file name), got {args.name!r}")
    started = time.monotonic()
    model = tlo.load_model()
    harmful, harmless = tlo.default_prompts("harmful"), tlo.default_prompts("harmless")
    if args.confirm:
        split, n, out = "val", 39, f"{args.name}.json"
    else:
        split, n, out = "train", N_SCREEN, f"{args.name}.json"
    screen_harmful = tlo.load_prompts(args.shared / f"harmful_{split}.json")[:n]
    screen_harmless = tlo.load_prompts(args.shared / f"harmless_{split}.json")[:n]
    names = [hook_name("resid_pre", layer) for layer in LAYERS]
    training = collect_training(model, harmful, harmless, names, COLLECT, keep_rows=True)
    scorer = Scorer(model, screen_harmful, screen_harmless, batch_size=32)

    def fitted(name: str) -> InterventionSet:
        if name.startswith("direction"):
            return tlo.fit_direction_ablation(
                model, harmful, harmless, layer=14, training=training, collect=COLLECT
            )
        layers = next(v[1] for v in VARIANTS if v[0] == name)
        return tlo.fit_ot_ablation(
            model,
            harmful,
            harmless,
            layers=list(layers),
            training=training,
            spec=SPEC,
            collect=COLLECT,
            placement=tlo.Placement(sequential=False),
        )

    runs = [("direction_ablation s=0.5", None, 0.5)]
    if not (args.confirm or args.variants):
        runs.append(("direction_ablation s=1", None, 1.0))
    chosen = [args.confirm] if args.confirm else args.variants
    runs += [(v[0], v[2], v[3]) for v in VARIANTS if chosen is None or v[0] in chosen]
    rows: list[dict[str, Any]] = []
    for name, where, strength in runs:
        base = fitted(name)
        edited = at_strength(base, strength)
        if where is not None:
            edited = InterventionSet(
                dict(edited.items()),
                positions=where,
                n_post_instruction=edited.n_post_instruction,
            )
        refusal, kl = scorer(edited)
        completions = tlo.generate(
            model,
            screen_harmful,
            fwd_hooks=edited.fwd_hooks(),
            max_new_tokens=TOKENS,
            options=tlo.GenerationOptions(batch_size=32, progress=False),
        )
        labels = tlo.judge(screen_harmful, completions, progress=False)
        counts = Counter(labels)
        complied = [float(label == "compliance") for label in labels]
        rows.append(
            {
                "variant": name,
                "strength": strength,
                "kl_harmless": kl.to_dict(),
                "refusal_log_odds": refusal.to_dict(),
                "labels": dict(counts),
                "compliance_rate": with_ci(complied).to_dict(),
                "paired_vs_direction_ablation": with_ci(
                    [a - b for a, b in zip(complied, rows[0]["complied"], strict=True)]
                ).to_dict()
                if rows
                else None,
                "complied": complied,
                "completions": [
                    {"prompt": p, "completion": c, "judge": j}
                    for p, c, j in zip(screen_harmful, completions, labels, strict=True)
                ],
            }
        )
        print(
            f"{name:32s} KL {kl:.3g}  log-odds {refusal:.2f}  "
            + "  ".join(f"{k} {counts.get(k, 0)}" for k in LABELS),
            flush=True,
        )
        write_results(
            out,
            {
                "command": "python experiments/deflection_levers.py"
                + (f" --confirm {args.confirm!r}" if args.confirm else "")
                + (
                    " --variants" + "".join(f" {v!r}" for v in args.variants)
                    if args.variants
                    else ""
                )
                + f" --name {args.name}",
                "fit": "package train split, 256 + 256",
                "prompts": f"{args.shared}/harmful_{split}.json and harmless_{split}.json"
                + (f", first {n} each" if n else ""),
                "seconds": round(time.monotonic() - started),
                "rows": rows,
            },
        )
    if args.confirm:
        write_completions(rows, RESULTS / args.name)
    print(json.dumps({r["variant"]: r["labels"] for r in rows}, indent=1))


if __name__ == "__main__":
    main()
