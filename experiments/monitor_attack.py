"""Issue 15, the attacker's side: can a transport map be made harder for the monitor to see?

The defender's monitor (``tlo.ActivationMonitor``) is fitted on clean activations of the
package's training prompts at several layers after the edit. The attacker varies the map:

- ``k``: a larger PCA subspace leaves less of the difference between the classes in the
  complement, which is what the ``disagreement`` score reads;
- ``layers``: transporting at the monitor's own layers too (the attacker knows where it sits).

Each variant (at ``--strength``, 2 by default: the strength ``compare`` chose for the gated
map) is scored without generation on the held-out prompts: the refusal log-odds on
harmful prompts (lower = less refusal), the first-token KL on harmless prompts (damage), and
the monitor's AUROC (``disagreement`` and ``likelihood``) against clean traffic. Writes
``experiments/results/monitor-attack.json`` and prints a markdown table.

    .venv/bin/python experiments/monitor_attack.py [--model qwen2.5-coder-1.5b-instruct]
"""

import argparse
import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import tl_ot_ablation as tlo
from tl_ot_ablation.eval.detect import evaluate_detection
from tl_ot_ablation.eval.evaluate import next_token_logprobs
from tl_ot_ablation.eval.metrics import (
    kl_divergence,
    refusal_log_odds,
    refusal_token_ids,
    with_ci,
)
from tl_ot_ablation.io import atomic
from tl_ot_ablation.lens.map_spec import RECOMMENDED_MAP

FIT = "validation"
"""The 64 + 64 prompts these results were recorded with (the fitting split before it grew to 256)."""

RESULTS = Path(__file__).parent / "results" / "monitor-attack.json"


def later_layers(n_layers: int, layer: int) -> list[int]:
    """Two and four blocks after ``layer``, kept inside the model (the monitor's layers)."""
    return sorted({min(layer + step, n_layers - 1) for step in (2, 4)} - {layer})


def variants(n_layers: int, layer: int) -> dict[str, dict[str, Any]]:
    """Attacker's variants of the recommended gated map (strength 1 unless stated)."""
    later = later_layers(n_layers, layer)
    return {
        "ot k=64 (compare's map)": {"layers": [layer], "n_components": 64},
        "ot k=512": {"layers": [layer], "n_components": 512},
        "ot k=64 at the monitor's layers too": {"layers": [layer, *later], "n_components": 64},
        "ot k=512 at the monitor's layers too": {"layers": [layer, *later], "n_components": 512},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--layer", type=int, default=23, help="the attack's first layer")
    parser.add_argument("--strength", type=float, default=2.0, help="compare's choice: 2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    if args.model == "tiny":  # a dry run of the script in seconds
        from tl_ot_ablation.lens.tiny import tiny_model

        model = tiny_model(n_layers=6, d_model=64, n_ctx=512)
    else:
        model = tlo.load_model(args.model)
    n_layers = model.cfg.n_layers
    train = {k: tlo.default_prompts(k, FIT) for k in ("harmful", "harmless")}
    held = {k: tlo.default_prompts(k, "eval") for k in ("harmful", "harmless")}
    quiet = tlo.CollectOptions(progress=False)
    monitor_layers = [args.layer, *later_layers(n_layers, args.layer)]
    monitor = tlo.ActivationMonitor.fit(
        model,
        train["harmful"],
        train["harmless"],
        layers=monitor_layers,
        spec=tlo.MonitorSpec(n_components=min(64, model.cfg.d_model - 1)),
        collect=quiet,
    )
    refusal_ids = refusal_token_ids(model.tokenizer)
    clean_harmless = next_token_logprobs(model, held["harmless"])
    clean_score = refusal_log_odds(next_token_logprobs(model, held["harmful"]), refusal_ids)
    rows = [{"variant": "none", "refusal_log_odds": with_ci(clean_score).to_dict()}]
    sets = {}
    for name, spec in variants(n_layers, args.layer).items():
        k = min(spec["n_components"], model.cfg.d_model - 1)
        map_spec = dataclasses.replace(RECOMMENDED_MAP, n_components=k)
        fitted = tlo.fit_ot_ablation(
            model,
            train["harmful"],
            train["harmless"],
            layers=spec["layers"],
            spec=map_spec,
            collect=quiet,
        )
        with warnings.catch_warnings():  # strength 2 extrapolates on purpose (compare's choice)
            warnings.simplefilter("ignore", UserWarning)
            sets[name] = fitted.with_strength(args.strength)
    detection = evaluate_detection(model, monitor, sets, held["harmful"], held["harmless"])
    for name, interventions in sets.items():
        hooks = interventions.fwd_hooks()
        harmful = next_token_logprobs(model, held["harmful"], fwd_hooks=hooks)
        harmless = next_token_logprobs(model, held["harmless"], fwd_hooks=hooks)
        row = {
            "variant": name,
            "refusal_log_odds": with_ci(refusal_log_odds(harmful, refusal_ids)).to_dict(),
            "kl_harmless": with_ci(kl_divergence(clean_harmless, harmless)).to_dict(),
        }
        for result in detection.results:
            if result.method == name:
                row[f"auroc_{result.score}_L{result.layer}"] = result.auroc.to_dict()
        rows.append(row)
    record = {
        "model": args.model,
        "attack_layer": args.layer,
        "strength": args.strength,
        "monitor_layers": monitor_layers,
        "monitor_hook": monitor.hook,
        "seconds": round(time.perf_counter() - start),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out, json.dumps(record, indent=1))  # never a half-written record
    render(record)


def _cell(value: dict[str, float] | None) -> str:
    if value is None:
        return "-"
    return f"{value['value']:.3g} [{value['ci_low']:.3g}, {value['ci_high']:.3g}]"


def render(record: dict[str, Any]) -> None:
    """Print the record as a markdown table."""
    layers = record["monitor_layers"]
    header = ["variant", "refusal log-odds", "KL harmless"] + [
        f"AUROC {s} L{layer}" for s in ("disagreement", "likelihood") for layer in layers
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in record["rows"]:
        cells = [row["variant"], _cell(row.get("refusal_log_odds")), _cell(row.get("kl_harmless"))]
        cells += [
            _cell(row.get(f"auroc_{s}_L{layer}"))
            for s in ("disagreement", "likelihood")
            for layer in layers
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
