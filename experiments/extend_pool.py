"""Issue 32: more labels for the judge, read blind under the rubric, from runs already made.

``rubric_hidden.py`` showed the judges' agreement still rising with the number of labels, so
this reads every harmful answer of the earlier runs' reports that the pool
(``data/judge/labels-*.jsonl``) does not hold yet: ``SOURCES`` (compare reports and the judged
sweep, 64-token answers of the embedded 1.5B model). The two readings made with
``tl-ot-ablation read`` (``compare-default-timed``, ``compare-shared-xstest``) are left out on
purpose: they are the fresh test of every judge.

    .venv/bin/python experiments/extend_pool.py export OUT --parts 2
    .venv/bin/python experiments/extend_pool.py disagreements OUT
    .venv/bin/python experiments/extend_pool.py merge OUT

Same steps and files as ``relabel_pool.py`` (two blind readers ``a`` / ``b``, then an
adjudicator on their disagreements). ``merge`` writes ``data/judge-extra/labels-extra.jsonl`` and
``experiments/results/extend-pool.json`` (the readers' agreement). Split: a prompt the pool
already has keeps its side (``train`` if any pool ``train`` row has it, else ``test``); a new
prompt goes to ``test`` when the first hex digit of its SHA-256 is below 4 (a quarter), as the
pool's own split did.
"""

import argparse
import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from _results import write_results
from relabel_pool import (
    READERS,
    SEEDS,
    _reader_labels,
    _write_parts,
    final_labels,
    write_disagreements,
)

from tl_ot_ablation.eval.reading_score import agreement
from tl_ot_ablation.io import atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
POOL = ROOT / "data" / "judge"
OUT_FILE = ROOT / "data" / "judge-extra" / "labels-extra.jsonl"
"""Beside the pool, not in it: the shipped classifier head is trained on ``data/judge`` alone
(its rebuild test reproduces it from there); the reader probe reads both folders."""
SOURCES = (
    "compare-judged-layers",
    "compare-ot-full",
    "compare-others",
    "deflection-confirm",
    "deflection-confirm-L17",
    "sweep-judged",
)


def _answers(run: str) -> list[tuple[str, str, str]]:
    """``(config, prompt, completion)`` of every harmful answer in ``run``'s completions."""
    data = json.loads((RESULTS / run / "completions.json").read_text())
    if "points" in data:  # a sweep: one entry per point
        prompts = data["harmful_prompts"]
        return [
            (_point_config(p), prompt, text)
            for p in data["points"]
            for prompt, text in zip(prompts, p["completions"], strict=True)
        ]
    prompts = data["prompts"]["harmful"]
    return [
        (method, prompt, text)
        for method, kinds in data["completions"].items()
        for prompt, text in zip(prompts, kinds.get("harmful", []), strict=True)
    ]


def _point_config(point: dict) -> str:
    layers = ",".join(map(str, point["layers"]))
    return point["method"] + (f"@{layers}" if layers else "") + f" s={point['strength']:g}"


def _pool() -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(POOL.glob("labels-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def _items() -> list[dict]:
    """One item per distinct new (prompt, completion), with every (run, config) it stands for."""
    seen = {(r["prompt"], r["completion"]) for r in _pool()}
    items: dict[str, dict] = {}
    for run in SOURCES:
        for config, prompt, text in _answers(run):
            if (prompt, text) in seen:
                continue
            digest = hashlib.sha256(json.dumps([prompt, text]).encode()).hexdigest()[:12]
            item = items.setdefault(
                digest, {"id": digest, "prompt": prompt, "completion": text, "rows": []}
            )
            item["rows"].append({"source": run, "config": config})
    return sorted(items.values(), key=lambda i: i["id"])


def _split(prompt: str, pool: list[dict]) -> str:
    sides = {r["split"] for r in pool if r["prompt"] == prompt}
    if sides:
        return "train" if "train" in sides else "test"
    return "test" if hashlib.sha256(prompt.encode()).hexdigest()[0] < "4" else "train"


def export(out: Path, parts: int) -> None:
    items = _items()
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "key.json", json.dumps({i["id"]: i["rows"] for i in items}, indent=1))
    for reader in READERS:
        shuffled = list(items)
        random.Random(SEEDS[reader]).shuffle(shuffled)
        _write_parts(out / reader, shuffled, parts)
    print(f"{len(items)} new harmful answers, {parts} parts per reader, in {out}")


def disagreements(out: Path) -> None:
    a, b = (_reader_labels(out, reader) for reader in READERS)
    write_disagreements(out, a, b, {i["id"]: i for i in _items()})


def merge(out: Path) -> None:
    a, b = (_reader_labels(out, reader) for reader in READERS)
    ids, differ, final = final_labels(out, a, b)
    items, pool = {i["id"]: i for i in _items()}, _pool()
    lines = []
    for i in ids:
        item = items[i]
        split = _split(item["prompt"], pool)
        for n, where in enumerate(item["rows"]):
            row = {
                "id": f"{i}-{n}",
                "config": where["config"],
                "source": where["source"],
                "kind": "harmful",
                "prompt": item["prompt"],
                "completion": item["completion"],
                "label": final[i],
                "split": split,
                "reading": "two blind readers, disagreements adjudicated (extend_pool.py)",
            }
            lines.append(json.dumps(row, ensure_ascii=False))
    OUT_FILE.parent.mkdir(exist_ok=True)
    atomic.write_text(OUT_FILE, "\n".join(lines) + "\n")
    write_results(
        "extend-pool.json",
        {
            "command": "experiments/extend_pool.py export|disagreements|merge",
            "sources": list(SOURCES),
            "items": len(ids),
            "unread": len(items) - len(ids),
            "rows": len(lines),
            "readers": agreement([a[i] for i in ids], [b[i] for i in ids]),
            "adjudicated": len(differ),
            "final_counts": Counter(final.values()),
            "splits": Counter(_split(items[i]["prompt"], pool) for i in ids),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("step", choices=("export", "disagreements", "merge"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--parts", type=int, default=2)
    args = parser.parse_args()
    {"export": lambda: export(args.out, args.parts), "disagreements": lambda: disagreements(args.out),
     "merge": lambda: merge(args.out)}[args.step]()  # fmt: skip


if __name__ == "__main__":
    main()
