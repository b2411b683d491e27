"""Issue 12: a compare report's completions, shuffled and split into blind parts for readers.

    .venv/bin/python experiments/export_for_labelling.py REPORT_FOLDER OUT_FOLDER [--parts 3]
        [--kinds harmful harmless] [--add OTHER_REPORT ...] [--methods NAME ...]

Reads ``REPORT_FOLDER/completions.json`` (a ``compare`` report, or a ``sweep --judged`` report:
then each judged point is a "method" named like ``ot_selective L20 s=1``, and ``--points`` picks
which point indices to export; ``--add`` merges more ``compare`` reports over the same prompts,
so that methods from separate runs are read together, blind, by the same readers; a method two
reports share must have the same completions; ``--methods`` keeps only those named) and writes
``OUT_FOLDER/items.json`` (every (method, kind, prompt, completion), shuffled with seed 0,
numbered) and ``OUT_FOLDER/part-<i>.jsonl`` (only ``id``, ``prompt``, ``completion``: readers
see neither the method nor any judge's label).
Labels come back as ``{"id", "label", "note"}`` lines, merged by ``merge_test_labels.py``.

For a new reading of a ``compare`` report use the package's command instead, which this script
predates: ``tl-ot-ablation read export REPORT OUT`` (opaque ids, the key kept apart from the
readers' parts, the rubric beside them; ``docs/cli.md``). This script stays to reproduce the
committed readings (integer ids, ``items.json``) and for what the command does not cover: sweep
reports and merging several reports (``--add``). ``read score`` accepts its ``items.json`` as
``--key``.
"""

import argparse
import json
import random
from pathlib import Path

from tl_ot_ablation.io import atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--parts", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["harmful", "harmless"])
    parser.add_argument("--points", type=int, nargs="+", help="sweep point indices (sweep only)")
    parser.add_argument("--add", type=Path, nargs="+", default=[], help="more compare reports")
    parser.add_argument("--methods", nargs="+", help="export only these methods (compare only)")
    args = parser.parse_args()
    data = json.loads((args.report / "completions.json").read_text())
    if "points" in data:
        if args.add or args.methods:
            parser.error("--add and --methods are for compare reports, not sweeps")
        items = _sweep_items(data, args.points)
    else:
        for other in args.add:
            _merge(data, json.loads((other / "completions.json").read_text()), other, args.methods)
        items = _compare_items(data, args.kinds, args.methods)
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


def _merge(data: dict, other: dict, where: Path, methods: list[str] | None) -> None:
    """Add ``other``'s (wanted) methods to ``data``; same prompts, shared methods must agree."""
    if other["prompts"] != data["prompts"]:
        raise SystemExit(f"{where}: its prompts differ from the first report's; cannot merge")
    for method, by_kind in other["completions"].items():
        if methods is not None and method not in methods:
            continue
        known = data["completions"].setdefault(method, by_kind)
        if known != by_kind:
            raise SystemExit(f"{where}: {method!r} has other completions than the first report")


def _compare_items(data: dict, kinds: list[str], methods: list[str] | None) -> list[dict]:
    unknown = sorted(set(methods or ()) - set(data["completions"]))
    if unknown:
        raise SystemExit(f"--methods {unknown}: the reports have {sorted(data['completions'])}")
    return [
        {"method": method, "kind": kind, "prompt": prompt, "completion": completion}
        for method, by_kind in data["completions"].items()
        if methods is None or method in methods
        for kind in kinds
        for prompt, completion in zip(data["prompts"][kind], by_kind[kind], strict=True)
    ]


def _sweep_items(data: dict, indices: list[int] | None) -> list[dict]:
    points = [p for p in data["points"] if indices is None or p["index"] in indices]
    if indices is not None and len(points) != len(set(indices)):
        found = sorted(p["index"] for p in data["points"])
        raise SystemExit(f"--points {indices}: the report has judged points {found}")
    return [
        {
            "method": f"{p['method']} L{','.join(map(str, p['layers']))} s={p['strength']:g}",
            "kind": "harmful",
            "prompt": prompt,
            "completion": completion,
        }
        for p in points
        for prompt, completion in zip(data["harmful_prompts"], p["completions"], strict=True)
    ]


if __name__ == "__main__":
    main()
