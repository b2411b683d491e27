"""Relabel the judge's labelled pool under one rubric: two blind readings and adjudication.

The pool's labels (``data/judge/labels-*.jsonl``, formerly in ``tests/data``) were read under two
rules (the old labelling guide and a stricter instruction added later), so they disagree with
each other on hollow answers. This script re-reads every harmful answer in the pool under the
package's one rubric (``tl_ot_ablation/data/rubric.md``):

    .venv/bin/python experiments/relabel_pool.py export OUT --parts 2
        writes OUT/key.json (id -> pool file and row; kept from readers) and, for each reader
        ``a`` / ``b``, OUT/<reader>/part-<i>.jsonl (``id``, ``prompt``, ``completion`` only,
        each reader's parts in its own shuffled order) and the rubric beside them;
    .venv/bin/python experiments/relabel_pool.py disagreements OUT
        reads OUT/<reader>/labels-<i>.jsonl, reports the readers' agreement and writes
        OUT/adjudicate/part-0.jsonl with the items they disagree on (both labels hidden);
    .venv/bin/python experiments/relabel_pool.py merge OUT
        reads the adjudicator's OUT/adjudicate/labels-0.jsonl and writes
        ``experiments/results/relabel-pool.json`` (agreement between readers, with intervals)
        and OUT/labels.jsonl (one adjudicated label per pool row).

Harmless answers keep their single reading: the rubric changed nothing for them (a normal
answer is compliance, declining is refusal) and the judge's targets are about harmful answers.
"""

import argparse
import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from _results import write_results

from tl_ot_ablation.eval.reading import read_labels, rubric_text
from tl_ot_ablation.eval.reading_score import agreement
from tl_ot_ablation.io import atomic

ROOT = Path(__file__).resolve().parents[1]
POOL = {
    "1.5b": ROOT / "data" / "judge" / "labels-1.5b.jsonl",
    "0.5b": ROOT / "data" / "judge" / "labels-0.5b.jsonl",
    "shared": ROOT / "data" / "judge" / "labels-shared.jsonl",
}
READERS = ("a", "b")
SEEDS = {"a": 1, "b": 2}


def _pool_rows() -> list[dict]:
    """One item per distinct (prompt, completion) among the pool's harmful answers (the same
    answer from two configurations is read once), with every pool row it stands for."""
    items: dict[str, dict] = {}
    for name, path in POOL.items():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["kind"] != "harmful":
                continue
            text = json.dumps([row["prompt"], row["completion"]])
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            item = items.setdefault(
                digest,
                {**row, "label": row.get("label_before", row["label"]), "id": digest, "rows": []},
            )
            before = row.get("label_before", row["label"])  # the label before this relabelling
            item["rows"].append({"pool": name, "row": row["id"], "label": before})
    return list(items.values())


def _write_parts(folder: Path, items: list[dict], parts: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / "rubric.md", rubric_text())
    for part in range(parts):
        lines = [
            json.dumps({k: item[k] for k in ("id", "prompt", "completion")}, ensure_ascii=False)
            for item in items[part::parts]
        ]
        atomic.write_text(folder / f"part-{part}.jsonl", "\n".join(lines) + "\n")


def export(out: Path, parts: int) -> None:
    rows = _pool_rows()
    out.mkdir(parents=True, exist_ok=True)
    key = {row["id"]: row["rows"] for row in rows}
    atomic.write_text(out / "key.json", json.dumps(key, indent=1))
    for reader in READERS:
        items = list(rows)
        random.Random(SEEDS[reader]).shuffle(items)
        _write_parts(out / reader, items, parts)
    print(f"{len(rows)} harmful answers, {parts} parts per reader, in {out}")


def _reader_labels(out: Path, reader: str) -> dict[str, str]:
    key = json.loads((out / "key.json").read_text())
    labels: dict[str, str] = {}
    for path in sorted((out / reader).glob("labels-*.jsonl")):
        part = path.name.removeprefix("labels-")
        ids = [
            json.loads(line)["id"]
            for line in (out / reader / f"part-{part}").read_text().splitlines()
        ]
        labels.update(read_labels(path, ids))
    missing = set(key) - set(labels)
    if missing:
        raise SystemExit(f"reader {reader}: {len(missing)} items unlabelled")
    return labels


def write_disagreements(out: Path, a: dict[str, str], b: dict[str, str], items: dict) -> None:
    """The readers' agreement on the items both read, and OUT/adjudicate/part-0.jsonl with the
    ``items`` (by id) they disagree on, shuffled, both labels hidden."""
    ids = sorted(set(a) & set(b))
    print(json.dumps(agreement([a[i] for i in ids], [b[i] for i in ids]), indent=1))
    differ = [items[i] for i in ids if a[i] != b[i]]
    random.Random(3).shuffle(differ)
    _write_parts(out / "adjudicate", differ, 1)
    print(f"{len(ids)} read by both, {len(differ)} disagreements to adjudicate")


def final_labels(
    out: Path, a: dict[str, str], b: dict[str, str]
) -> tuple[list[str], list[str], dict[str, str]]:
    """``(ids read by both, ids they disagree on, final label per id)``: the adjudicator's
    (OUT/adjudicate/labels-0.jsonl) where they disagree, else theirs."""
    ids = sorted(set(a) & set(b))
    differ = [i for i in ids if a[i] != b[i]]
    adjudicated = read_labels(out / "adjudicate" / "labels-0.jsonl", differ) if differ else {}
    return ids, differ, {i: adjudicated.get(i, a[i]) for i in ids}


def disagreements(out: Path) -> None:
    a, b = (_reader_labels(out, reader) for reader in READERS)
    write_disagreements(out, a, b, {row["id"]: row for row in _pool_rows()})


def merge(out: Path) -> None:
    a, b = (_reader_labels(out, reader) for reader in READERS)
    ids, differ, final = final_labels(out, a, b)
    rows = {row["id"]: row for row in _pool_rows()}
    lines = [json.dumps({**where, "label": final[i]}) for i in ids for where in rows[i]["rows"]]
    atomic.write_text(out / "labels.jsonl", "\n".join(lines) + "\n")
    old = {i: rows[i]["label"] for i in ids}  # the first row's (duplicates agree mostly)
    write_results(
        "relabel-pool.json",
        {
            "command": "experiments/relabel_pool.py export|disagreements|merge",
            "items": len(ids),
            "readers": agreement([a[i] for i in ids], [b[i] for i in ids]),
            "adjudicated": len(differ),
            "final_counts": Counter(final.values()),
            "old_counts": Counter(old.values()),
            "changed_from_old": sum(final[i] != old[i] for i in ids),
            "changed_compliance_to_not": sum(
                old[i] == "compliance" and final[i] != "compliance" for i in ids
            ),
            "changed_not_to_compliance": sum(
                old[i] != "compliance" and final[i] == "compliance" for i in ids
            ),
            "per_pool_reader_agreement": {
                pool: agreement(
                    [a[i] for i in ids if rows[i]["rows"][0]["pool"] == pool],
                    [b[i] for i in ids if rows[i]["rows"][0]["pool"] == pool],
                )
                for pool in POOL
            },
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("step", choices=("export", "disagreements", "merge"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--parts", type=int, default=2)
    args = parser.parse_args()
    if args.step == "export":
        export(args.out, args.parts)
    elif args.step == "disagreements":
        disagreements(args.out)
    else:
        merge(args.out)


if __name__ == "__main__":
    main()
