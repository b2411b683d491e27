"""Issue 12: per-method rates from completions labelled by reading, with the paired difference.

``export_for_labelling.py`` hands a run's completions to readers blind and shuffled; this puts
their labels back per method: label counts, the read compliance rate with its bootstrap interval,
each method's paired difference from ``--baseline`` over the same prompts, and, when the run
recorded the shipped judge's labels (``deflection_levers.py`` does), how the judge scored against
the reading (``eval.judge_scores.scores``: accuracy, compliance agreement, confusion matrix);
``--judge-now`` instead judges the items' completions here with the shipped classifier (for
runs, like ``sweep --judged``, that keep only the judge's shares).
Writes ``experiments/results/<NAME>.json``.

For a ``compare`` report, ``tl-ot-ablation read score REPORT LABELS... --key ITEMS.json`` now
does this in the package (and adds readers' agreement and a section to the report); this script
stays to reproduce the committed ``*-read*.json`` records, whose layout it defines, and for
sweep and confirm readings.

    .venv/bin/python experiments/read_rates.py experiments/results/deflection-confirm/items.json \
        experiments/results/deflection-confirm/labels.jsonl --baseline "direction_ablation s=0.5" \
        --judged experiments/results/deflection-confirm.json --name deflection-confirm-read
"""

import argparse
import json
from collections import Counter
from pathlib import Path

from _results import write_results

from tl_ot_ablation.eval.judge import LABELS, judge
from tl_ot_ablation.eval.judge_scores import scores
from tl_ot_ablation.eval.metrics import with_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("items", type=Path)
    parser.add_argument("labels", type=Path, nargs="+")
    parser.add_argument("--baseline", required=True, help="method the others are paired with")
    parser.add_argument("--judged", type=Path, help="a deflection_levers.py results file")
    parser.add_argument("--judge-now", action="store_true", help="judge the items here")
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    if args.judged and args.judge_now:
        parser.error("--judged reads a run's own judge labels; --judge-now judges here: pick one")
    items = {item["id"]: item for item in json.loads(args.items.read_text())}
    read = {}
    for path in args.labels:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["label"] not in LABELS:
                raise SystemExit(f"{path}: id {row['id']} has label {row['label']!r}")
            read[row["id"]] = row["label"]
    if set(read) != set(items):
        raise SystemExit(f"labels cover {len(read)} of {len(items)} items; label every one")
    by_method: dict[str, dict[str, str]] = {}
    for index, item in items.items():
        by_method.setdefault(item["method"], {})[item["prompt"]] = read[index]
    if args.baseline not in by_method:
        raise SystemExit(f"--baseline {args.baseline!r} is not among {sorted(by_method)}")
    judged: dict[str, dict[str, str]] = {}
    if args.judged:
        for row in json.loads(args.judged.read_text())["rows"]:
            judged[row["variant"]] = {c["prompt"]: c["judge"] for c in row["completions"]}
    if args.judge_now:
        said: dict[str, dict[str, str]] = {}
        for item in items.values():
            said.setdefault(item["method"], {})[item["prompt"]] = item["completion"]
        for method, by_prompt in said.items():
            labels = judge(list(by_prompt), list(by_prompt.values()), progress=False)
            judged[method] = dict(zip(by_prompt, labels, strict=True))
    baseline = by_method[args.baseline]
    methods = {}
    for method, labels in by_method.items():
        prompts = sorted(labels)
        complied = [float(labels[p] == "compliance") for p in prompts]
        base = [float(baseline[p] == "compliance") for p in prompts]
        methods[method] = {
            "n": len(prompts),
            "labels": dict(Counter(labels.values())),
            "compliance_rate": with_ci(complied).to_dict(),
            f"paired_vs_{args.baseline}": with_ci(
                [a - b for a, b in zip(complied, base, strict=True)]
            ).to_dict(),
        }
        if method in judged:
            truth = [labels[p] for p in prompts]
            methods[method]["judge"] = scores(truth, [judged[method][p] for p in prompts])
        print(method, methods[method]["labels"], methods[method]["compliance_rate"])
    write_results(
        f"{args.name}.json",
        {"items": str(args.items), "labels": [str(p) for p in args.labels], "methods": methods},
    )


if __name__ == "__main__":
    main()
