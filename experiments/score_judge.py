"""Issue 12: score the shipped judge, unchanged, on a labelled set it never saw.

``python -m tl_ot_ablation.eval.judge_training`` trains the head and scores it once on the
held-out parts of the sets it was built from. This scores the head as shipped on a *fresh* set (every row ``test``, e.g.
``data/judge/labels-shared.jsonl``: the 1.5B model's compare run on the real
../shared/data validation prompts, labelled by reading after the head was final), beside the
marker judge, and per configuration and prompt kind compares the compliance rate the readers
found with the one each judge reports, since a judge that is accurate overall can still be
biased for one method. ``--seen`` names the sets the head was built from: rows whose prompt
appears there (some ../shared/data validation prompts were in the first labelling pool, with
other completions) are scored apart, so the ``unseen prompts`` part is fresh in prompt and text.
Writes ``experiments/results/judge-<NAME>.json``.

    .venv/bin/python experiments/score_judge.py data/judge/labels-shared.jsonl --name shared \
        --seen data/judge/labels-1.5b.jsonl data/judge/labels-0.5b.jsonl
"""

import argparse
import json
from pathlib import Path

from _results import write_results

from tl_ot_ablation.eval.judge import judge, marker_labels
from tl_ot_ablation.eval.judge_scores import scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("labelled", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--seen", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.labelled.read_text().splitlines() if line.strip()]
    if any(r["split"] != "test" for r in rows):
        raise SystemExit(f"{args.labelled}: every row must be a test row (merge with --all-test)")
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    truth = [r["label"] for r in rows]
    predicted = {
        "classifier": judge(prompts, completions, progress=False),
        "markers": marker_labels(completions),
    }
    record: dict[str, object] = {
        "command": f"python experiments/score_judge.py {args.labelled} --name {args.name}"
        + "".join(f" --seen {path}" for path in args.seen),
        "labelled": str(args.labelled),
        **{name: scores(truth, labels) for name, labels in predicted.items()},
    }
    seen = {
        json.loads(line)["prompt"]
        for path in args.seen
        for line in path.read_text().splitlines()
        if line.strip()
    }
    parts = {
        f"{kind} only": (lambda r, kind=kind: r["kind"] == kind) for kind in ("harmful", "harmless")
    }
    if seen:
        parts["unseen prompts"] = lambda r: r["prompt"] not in seen
        parts["unseen harmful"] = lambda r: r["prompt"] not in seen and r["kind"] == "harmful"
    for part, keep in parts.items():
        where = [i for i, r in enumerate(rows) if keep(r)]
        record[part] = {
            name: scores([truth[i] for i in where], [labels[i] for i in where])
            for name, labels in predicted.items()
        }
    rates = {}
    for config, kind in sorted({(r["config"], r["kind"]) for r in rows}):
        where = [i for i, r in enumerate(rows) if (r["config"], r["kind"]) == (config, kind)]

        def rate(labels: list[str], where: list[int] = where) -> float:
            return sum(labels[i] == "compliance" for i in where) / len(where)

        rates[f"{config} {kind}"] = {
            "n": len(where),
            "read": rate(truth),
            **{name: rate(labels) for name, labels in predicted.items()},
        }
    record["compliance_rate"] = rates
    write_results(f"judge-{args.name}.json", record)
    for where in ["all", *parts]:
        for name in predicted:
            part = record[name] if where == "all" else record[where][name]  # type: ignore[index]
            print(
                f"{where:14s} {name:10s}: accuracy {part['accuracy']:.3f}, compliance "
                f"agreement {part['compliance_agreement']:.3f} (n = {part['n']})"
            )
    for key, value in rates.items():
        print(
            f"{key:30s} read {value['read']:.2f}  classifier {value['classifier']:.2f}  "
            f"markers {value['markers']:.2f}  (n = {value['n']})"
        )


if __name__ == "__main__":
    main()
