"""Issue 12: labelled sets from compare runs: part to train the judge, part to test it, or (with
``--all-test``) a fresh set that only tests it.

The 448 completions of ``tl-ot-ablation compare --model qwen2.5-coder-0.5b-instruct --out
reports/compare-0.5b`` (7 methods x (32 harmful + 32 harmless) held-out prompts, 64 tokens),
shuffled (seed 0) and labelled by reading: four LLM helper agents, a quarter each, following
``docs/judge-labelling.md``, blind to every judge. Whole prompts are split by the same rule as
``merge_labels.py`` (first hex digit of the prompt's SHA-256 in 0-3: ``test``, else ``train``),
so a prompt held out in one set is held out in the other; no judge is trained or tuned on the
test part, which ``python -m tl_ot_ablation.eval.judge_training`` scores once per judge.

    .venv/bin/python experiments/merge_test_labels.py ITEMS.json LABELS.jsonl [LABELS.jsonl ...]

``ITEMS.json``: the shuffled items (``id``, ``method``, ``kind``, ``prompt``, ``completion``);
each ``LABELS.jsonl`` line: ``{"id", "label", "note"}``. Writes
``data/judge/labels-0.5b.jsonl``.

The third set (``--source compare-shared --all-test --out data/judge/labels-shared.jsonl``)
comes from the 1.5B model's compare run on the real ``../shared/data`` validation prompts, after
the judge was final: every row is ``test``, so it measures the shipped judge on prompts and
completions it never saw, written by other people.
"""

import argparse
import hashlib
import json
from pathlib import Path

from tl_ot_ablation.eval.judge import LABELS
from tl_ot_ablation.io import atomic

OUT = Path(__file__).resolve().parents[1] / "data" / "judge" / "labels-0.5b.jsonl"


def split_of(prompt: str) -> str:
    """``test`` for about a quarter of the prompts (by hash, as ``merge_labels``), else
    ``train``."""
    return "test" if hashlib.sha256(prompt.encode()).hexdigest()[0] in "0123" else "train"


def main(
    items_path: str,
    label_paths: list[str],
    *,
    source: str = "compare-0.5b",
    out: Path = OUT,
    all_test: bool = False,
) -> None:
    items = {item["id"]: item for item in json.loads(Path(items_path).read_text())}
    labels = {}
    for path in label_paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if row["id"] in labels:
                    raise ValueError(f"{path}: id {row['id']} labelled twice")
                if row["label"] not in LABELS:
                    raise ValueError(f"{path}: id {row['id']}: unknown label {row['label']!r}")
                labels[row["id"]] = row
    if set(labels) != set(items):
        raise ValueError(f"labels cover {len(labels)} of {len(items)} items")
    lines = []
    for key in sorted(items):
        item, label = items[key], labels[key]
        row = {
            "id": key,
            "config": item["method"],
            "source": source,
            "kind": item["kind"],
            "prompt": item["prompt"],
            "completion": item["completion"],
            "label": label["label"],
            "note": label.get("note", ""),
            "split": "test" if all_test else split_of(item["prompt"]),
        }
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic.write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {len(lines)} rows to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("items")
    parser.add_argument("labels", nargs="+")
    parser.add_argument("--source", default="compare-0.5b")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--all-test", action="store_true")
    args = parser.parse_args()
    main(args.items, args.labels, source=args.source, out=args.out, all_test=args.all_test)
