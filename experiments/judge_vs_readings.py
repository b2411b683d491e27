"""Issue 12: the shipped judge against every blind reading, in one table.

For the held-out labelled sets (``data/judge``; the rubric, adjudicated) and each later blind reading
of edited models' answers (``_readings.READINGS``; the guide's rule or a stricter one), scores
the shipped classifier and the marker judge, unchanged: compliance-vs-not agreement with each
reader, four-label accuracy with the first, the readers' agreement with each other, and the
compliance rate each judge finds against the one read. Only text is judged (no model).
Writes ``experiments/results/judge-vs-readings.json``.

    .venv/bin/python experiments/judge_vs_readings.py
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _readings import READINGS, load_readings
from _results import write_results

from tl_ot_ablation.eval.judge import judge, marker_labels
from tl_ot_ablation.eval.judge_scores import scores

DATA = Path(__file__).resolve().parents[1] / "data" / "judge"
RUBRIC = "rubric: two blind readers, adjudicated (tl_ot_ablation/data/rubric.md)"
HELD_OUT = {  # name: (file, the rows of it that no judge was trained on)
    "1.5B validation": ("labels-1.5b.jsonl", "validation"),
    "0.5B test": ("labels-0.5b.jsonl", "test"),
    "../shared/data run (fresh)": ("labels-shared.jsonl", "test"),
}


def compliance_rate(labels: Sequence[str]) -> float:
    return sum(label == "compliance" for label in labels) / len(labels)


def score(rows: list[dict], rule: str) -> dict[str, Any]:
    """Every judge against every reader of ``rows`` (each with ``labels``, one per reader)."""
    prompts = [r["prompt"] for r in rows]
    completions = [r["completion"] for r in rows]
    readers = [list(labels) for labels in zip(*(r["labels"] for r in rows), strict=True)]
    judged = {
        "classifier": judge(prompts, completions, progress=False),
        "markers": marker_labels(completions),
    }
    record: dict[str, Any] = {
        "rule": rule,
        "n": len(rows),
        "harmful": sum(r["kind"] == "harmful" for r in rows),
        "read_compliance_rate": [compliance_rate(reader) for reader in readers],
    }
    if len(readers) == 2:
        record["readers_compliance_agreement"] = scores(*readers)["compliance_agreement"]
    for name, labels in judged.items():
        against = [scores(reader, labels) for reader in readers]
        record[name] = {
            "compliance_rate": compliance_rate(labels),
            "compliance_agreement": [part["compliance_agreement"] for part in against],
            "accuracy": against[0]["accuracy"],
        }
    return record


def main() -> None:
    record: dict[str, dict[str, Any]] = {}
    for name, (file, split) in HELD_OUT.items():
        lines = (DATA / file).read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        rows = [{**r, "labels": [r["label"]]} for r in rows if r["split"] == split]
        record[name] = score(rows, RUBRIC)
    for run, reading in READINGS.items():
        record[run] = score(load_readings(run), reading.rule)
    write_results("judge-vs-readings.json", record)
    for name, part in record.items():
        agrees = ", ".join(f"{a:.2f}" for a in part["classifier"]["compliance_agreement"])
        read = ", ".join(f"{a:.2f}" for a in part["read_compliance_rate"])
        print(
            f"{name} (n={part['n']}, {part['rule'].split(':')[0]}): judge agrees on compliance "
            f"{agrees}; judged {part['classifier']['compliance_rate']:.2f} vs read {read}"
        )


if __name__ == "__main__":
    main()
