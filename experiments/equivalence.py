"""Check that a refactor changed no number: two ``compare`` report folders, field by field.

    .venv/bin/python experiments/equivalence.py BEFORE AFTER [--out results/NAME.json]

Compares every method's strength, metrics (value and interval), judged labels, per-prompt KLs
and choice, the layer choice and trials, the prompt hashes, and every completion in
``completions.json``. Settings are compared after flattening (a refactor may nest them: the
map's and the collection's fields under ``map`` / ``collect``); fields only one side records
are listed, not counted as differences. Exits 1 on any difference.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _results import write_results

IGNORED = {"seconds", "fit_seconds", "command"}  # wall-clock times and the command line


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}`` of nested dicts (lists kept whole)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in IGNORED:
            continue
        out |= flat(item, f"{prefix}.{key}" if prefix else key)
    return out


def settings_flat(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with ``map`` / ``collect`` fields lifted to the top level."""
    lifted = {k: v for k, v in settings.items() if k not in ("map", "collect")}
    for nested in ("map", "collect"):
        lifted |= settings.get(nested) or {}
    return lifted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", default="refactor-equivalence-2.json")
    args = parser.parse_args()
    records = [json.loads((f / "results.json").read_text()) for f in (args.before, args.after)]
    texts = [json.loads((f / "completions.json").read_text()) for f in (args.before, args.after)]
    settings = [settings_flat(record.pop("settings")) for record in records]
    before, after = (flat(record) for record in records)
    differ = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    differ += sorted(
        f"settings.{k}"
        for k in settings[0].keys() & settings[1].keys()
        if settings[0][k] != settings[1][k]
    )
    same_text = texts[0] == texts[1]
    n_completions = sum(
        len(texts) for by_kind in texts[0]["completions"].values() for texts in by_kind.values()
    )
    found = {
        "before": str(args.before.name),
        "after": str(args.after.name),
        "fields_compared": len(before.keys() & after.keys()),
        "fields_only_before": sorted(before.keys() - after.keys()),
        "fields_only_after": sorted(after.keys() - before.keys()),
        "settings_only_before": sorted(settings[0].keys() - settings[1].keys()),
        "settings_only_after": sorted(settings[1].keys() - settings[0].keys()),
        "differences": {k: [before.get(k), after.get(k)] for k in differ if k in before}
        | {k: "settings differ" for k in differ if k.startswith("settings.")},
        "completions_identical": same_text,
        "completions_compared": n_completions,
    }
    write_results(args.out, found)
    print(json.dumps({k: v for k, v in found.items() if k != "differences"}, indent=1))
    print(f"{len(differ)} differing fields; completions identical: {same_text}")
    sys.exit(1 if differ or not same_text else 0)


if __name__ == "__main__":
    main()
