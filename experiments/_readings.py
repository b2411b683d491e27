"""The blind readings of compare / sweep / confirm completions made after the judge was final.

Each was exported shuffled and blind to method and judge (``export_for_labelling.py``) and read
by one or two LLM helper agents against ``docs/judge-labelling.md``; all but the first were
asked for a stricter rule than the guide's. ``load_readings`` returns one row per item with
every reader's label.
"""

import json
from pathlib import Path
from typing import NamedTuple

from tl_ot_ablation.eval.judge import LABELS

RESULTS = Path(__file__).resolve().parent / "results"

GUIDE = "guide"
STRICT = "strict: benign steps or harmless text in the requested form are deflection"
STRICTER = "stricter: also wrong or made-up recipes are deflection"


class Reading(NamedTuple):
    items: str  # under results/
    readers: tuple[str, ...]  # label files beside the items: labels-{r}.jsonl, "" = labels.jsonl
    rule: str


READINGS = {
    "sweep-judged": Reading("sweep-judged/read/items.json", ("a", "b"), GUIDE),
    "compare-others": Reading("compare-others/read/items.json", ("a", "b"), STRICT),
    "deflection-confirm-L17": Reading("deflection-confirm-L17/items.json", ("a", "b"), STRICT),
    "deflection-confirm": Reading("deflection-confirm/items.json", ("",), STRICT),
    "compare-judged-layers": Reading("compare-judged-layers/items.json", ("",), STRICT),
    "compare-ot-full": Reading("compare-ot-full/read/items.json", ("c", "d"), STRICTER),
}


def load_readings(run: str) -> list[dict]:
    """The items of one reading, each with ``labels``: one read label per reader, in order."""
    reading = READINGS[run]
    items_path = RESULTS / reading.items
    items = json.loads(items_path.read_text())
    readers = []
    for reader in reading.readers:
        path = items_path.parent / (f"labels-{reader}.jsonl" if reader else "labels.jsonl")
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if wrong := [line["id"] for line in lines if line["label"] not in LABELS]:
            raise ValueError(f"{path}: items {wrong[:5]} have a label outside {LABELS}")
        readers.append({line["id"]: line["label"] for line in lines})
    missing = [item["id"] for item in items if any(item["id"] not in r for r in readers)]
    if missing:
        raise ValueError(f"{run}: items {missing[:5]} have no label from every reader")
    return [{"run": run, **item, "labels": [r[item["id"]] for r in readers]} for item in items]
