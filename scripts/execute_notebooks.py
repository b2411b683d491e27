"""Execute the demo notebooks on the embedded model and write them back with their outputs.

A reader on a code host then sees the tables and plots without running anything. Each notebook
is stripped of old outputs, executed top to bottom by ``nbclient`` (the model is the embedded
one: ``TL_OT_ABLATION_DEMO_MODEL`` is unset), and replaced atomically only if every cell ran;
a failing notebook is left as it was. The tests re-execute the same notebooks
(``tests/test_demos.py``) and check the committed outputs came from such a run.

    .venv/bin/python scripts/execute_notebooks.py [NAME ...]   # default: every demos/*.ipynb
"""

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tl_ot_ablation.core import atomic

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"


def strip(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without outputs or execution counts (in place; returned for chaining)."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return notebook


def execute(path: Path) -> float:
    """Run ``path`` on the embedded model and write it back with outputs; returns seconds."""
    notebook = strip(nbformat.read(path, as_version=4))
    os.environ.pop("TL_OT_ABLATION_DEMO_MODEL", None)
    start = time.perf_counter()
    NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    atomic.write_text(path, nbformat.writes(notebook) + "\n")
    return time.perf_counter() - start


def main(names: list[str]) -> None:
    paths = [DEMOS / f"{name}.ipynb" for name in names] or sorted(DEMOS.glob("*.ipynb"))
    for path in paths:
        print(f"{path.name}: {execute(path):.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
