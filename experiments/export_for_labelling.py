"""Issue 12: a compare report's completions, shuffled and split into blind parts for readers.

    .venv/bin/python experiments/export_for_labelling.py REPORT_FOLDER OUT_FOLDER [--parts 3]
        [--kinds harmful harmless]

Reads ``REPORT_FOLDER/completions.json`` and writes ``OUT_FOLDER/items.json`` (every (method,
kind, prompt, completion), shuffled with seed 0, numbered) and ``OUT_FOLDER/part-<i>.jsonl``
(only ``id``, ``prompt``, ``completion``: readers see neither the method nor any judge's label).
Labels come back as ``{"id", "label", "note"}`` lines, merged by ``merge_test_labels.py``.
"""

import argparse
import json
import random
from pathlib import Path

from tl_ot_ablation.core import atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--parts", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["harmful", "harmless"])
    args = parser.parse_args()
    data = json.loads((args.report / "completions.json").read_text())
    items = [
        {"method": method, "kind": kind, "prompt": prompt, "completion": completion}
        for method, by_kind in data["completions"].items()
        for kind in args.kinds
        for prompt, completion in zip(data["prompts"][kind], by_kind[kind], strict=True)
    ]
    random.Random(0).shuffle(items)
    items = [{"id": index, **item} for index, item in enumerate(items)]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out / "items.json", json.dumps(items, indent=1, ensure_ascii=False))
    for part in range(args.parts):
        rows = [
            json.dumps({key: item[key] for key in ("id", "prompt", "completion")})
            for item in items[part :: args.parts]
        ]
        atomic.write_text(args.out / f"part-{part}.jsonl", "\n".join(rows) + "\n")
    print(f"{len(items)} items in {args.parts} parts under {args.out}")


if __name__ == "__main__":
    main()
