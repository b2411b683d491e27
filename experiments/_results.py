"""Where every experiment writes its record: ``experiments/results/NAME`` as indented JSON."""

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``results/name`` and say so."""
    out = RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return out
