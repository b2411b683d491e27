"""Issue 12: one methods table from ``compare`` runs that share everything but their methods.

A judged ``compare`` costs about half an hour per method here, so the methods came in separate
runs: ``compare-judged-layers`` (direction ablation and ``ot_selective``, layer 17 judged),
``compare-others`` (``actadd``, ``mean_shift``, ``per_neuron_ot``) and ``compare-ot-full``, the
last two at ``--layers 17`` with direction ablation's validation KL passed as ``--match-kl`` so
that the budget is the same number. This checks that each later run can sit beside the first:
the same model, prompts and settings apart from ``methods`` / ``match_kl`` (``layers`` as
recorded, i.e. ``"judged"`` resolved, must match), a numeric ``match_kl`` equal to the first
run's direction-ablation budget, and the unmodified model's completions identical (greedy
decoding is deterministic; anything else means the runs are not comparable). Then it prints the
methods table (``report.comparison_table``) and each method's paired judged-compliance
difference from ``--baseline`` over the same prompts, and writes
``experiments/results/NAME.json``.

    .venv/bin/python experiments/combine_compare.py experiments/results/compare-judged-layers \\
        experiments/results/compare-others experiments/results/compare-ot-full \\
        --baseline direction_ablation --name compare-all-methods
"""

import argparse
import json
import math
from pathlib import Path
from typing import Any

from _results import write_results

from tl_ot_ablation.eval.report_markdown import comparison_table
from tl_ot_ablation.eval.verdict import paired_difference

FREE = {"methods", "match_kl"}
"""Settings the runs may differ in."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path, nargs="+", help="compare report folders")
    parser.add_argument("--baseline", default="direction_ablation")
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    runs = [_load(folder) for folder in args.runs]
    first = runs[0]
    merged = dict(first["results"], methods=dict(first["results"]["methods"]))
    for run in runs[1:]:
        _check_comparable(first, run)
        for name, result in run["results"]["methods"].items():
            merged["methods"].setdefault(name, result)
    if args.baseline not in merged["methods"]:
        raise SystemExit(f"--baseline {args.baseline!r}: the runs have {sorted(merged['methods'])}")
    table = comparison_table(merged)
    baseline = merged["methods"][args.baseline]
    paired = {
        name: paired_difference(result, baseline, key="judged_harmful")
        for name, result in merged["methods"].items()
        if name != args.baseline
    }
    print(table)
    for name, difference in paired.items():
        if difference is not None:
            print(f"{name} - {args.baseline}, judged compliance: {difference:+.2f}")
    write_results(
        f"{args.name}.json",
        {
            "runs": [str(folder) for folder in args.runs],
            "commands": [run["results"].get("command") for run in runs],
            "table": table,
            f"paired_judged_compliance_vs_{args.baseline}": {
                name: None if difference is None else difference.to_dict()
                for name, difference in paired.items()
            },
        },
    )


def _load(folder: Path) -> dict[str, Any]:
    return {
        "folder": folder,
        "results": json.loads((folder / "results.json").read_text()),
        "completions": json.loads((folder / "completions.json").read_text()),
    }


def _check_comparable(first: dict[str, Any], other: dict[str, Any]) -> None:
    where = other["folder"]
    a, b = first["results"], other["results"]
    if a["model"] != b["model"]:
        raise SystemExit(f"{where}: model {b['model']!r}, the first run's is {a['model']!r}")
    if first["completions"]["prompts"] != other["completions"]["prompts"]:
        raise SystemExit(f"{where}: its evaluation prompts differ from the first run's")
    differ = {
        key
        for key in a["settings"].keys() | b["settings"].keys()
        if a["settings"].get(key) != b["settings"].get(key)
    }
    if differ - FREE:
        raise SystemExit(
            f"{where}: settings differ from the first run's in {sorted(differ - FREE)}"
        )
    for run, budget_from in ((b, a), (a, b)):
        if isinstance(run["settings"]["match_kl"], float):
            _check_budget(run["settings"]["match_kl"], budget_from, where)
    same = (
        first["completions"]["completions"]["none"] == other["completions"]["completions"]["none"]
    )
    if not same:
        raise SystemExit(f"{where}: the unmodified model's completions differ: not comparable")


def _check_budget(number: float, run: dict[str, Any], where: Path) -> None:
    """A numeric ``match_kl`` must be ``run``'s direction-ablation budget (its KL at strength 1)."""
    if run["settings"]["match_kl"] != "direction_ablation":
        raise SystemExit(f"{where}: neither run measured direction ablation's budget")
    points = run["methods"]["direction_ablation"]["selection"]["points"]
    budget = next(point["kl"] for point in points if point["strength"] == 1.0)
    if not math.isclose(number, budget, rel_tol=1e-12):
        raise SystemExit(f"{where}: match_kl {number} is not the other run's budget {budget}")


if __name__ == "__main__":
    main()
