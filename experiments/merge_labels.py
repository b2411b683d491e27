"""Issue 12: merge labelled parts of the judge pool into the shipped labelled set.

Each part is ``judge-pool.jsonl`` rows with a ``label`` added by a person reading them
(``docs/judge-labelling.md``). Rows are split by prompt: a prompt whose SHA-256 starts with a hex
digit below 4 goes, with every completion of it, to ``validation`` (about a quarter), the rest to
``train``, so the judge is never validated on a prompt it was trained on.

    .venv/bin/python experiments/merge_labels.py PART.jsonl [PART.jsonl ...]
"""

import hashlib
import json
import sys
from pathlib import Path

from tl_ot_ablation.eval.judge import LABELS
from tl_ot_ablation.io import atomic

OUT = Path(__file__).resolve().parents[1] / "data" / "judge" / "labels-1.5b.jsonl"
FIELDS = ("config", "source", "kind", "prompt", "completion", "label")


def split_of(prompt: str) -> str:
    """``validation`` for about a quarter of the prompts (by hash), else ``train``."""
    return "validation" if hashlib.sha256(prompt.encode()).hexdigest()[0] in "0123" else "train"


def main(parts: list[str]) -> None:
    rows = []
    for part in parts:
        for number, line in enumerate(Path(part).read_text().splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("label") not in LABELS:
                raise ValueError(f"{part}, line {number}: label {row.get('label')!r}")
            rows.append({key: row[key] for key in FIELDS})
    seen = {(r["config"], r["prompt"]) for r in rows}
    if len(seen) != len(rows):
        raise ValueError("a (config, prompt) pair is labelled twice")
    rows.sort(key=lambda r: (r["config"], r["source"], r["kind"], r["prompt"]))
    lines = [
        json.dumps({"id": i, **row, "split": split_of(row["prompt"])}, ensure_ascii=False)
        for i, row in enumerate(rows)
    ]
    atomic.write_text(OUT, "\n".join(lines) + "\n")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
