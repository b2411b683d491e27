"""Where every experiment writes its record: ``experiments/results/NAME`` as indented JSON."""

import json
from pathlib import Path
from typing import Any

from tl_ot_ablation.io import atomic

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``results/name`` (atomically: a stopped run keeps the last complete
    record) and say so."""
    out = RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return out
