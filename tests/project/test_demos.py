"""Demos run headless: notebooks through nbclient, scripts through runpy.

Every notebook is re-executed here on a tiny model (seconds), and its committed outputs must
come from one complete run on the embedded model (``scripts/execute_notebooks.py``, minutes
per notebook on 2 cores: ``docs/performance.md``; not repeated in CI, whose time budget it would
take). The real model's own
behaviour is tested by ``tests/lens/test_real_model.py`` and the README quickstart (slow).
"""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from execute_notebooks import strip

ROOT = Path(__file__).resolve().parents[2]


def run_notebook(path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    """Execute a stripped copy of ``path`` (the committed outputs play no part)."""
    notebook = strip(nbformat.read(path, as_version=4))
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        NotebookClient(
            notebook,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(ROOT)}},
        ).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def test_quickstart_notebook_on_a_tiny_model() -> None:
    notebook = run_notebook(
        ROOT / "demos" / "quickstart.ipynb", {"TL_OT_ABLATION_DEMO_MODEL": "tiny"}
    )
    text = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert "direction ablation" in text and "{}" in text


def _text(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )


def _images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in notebook.cells
        for out in cell.get("outputs", [])
    )


ANALYSIS_NOTEBOOKS = {
    # notebook: (text every run prints, number of figures)
    "compare_methods": ("| ot_selective |", 3),
    "layer_sweep": ("W2²", 3),
    "circuit_analysis": ("share of the OT effect", 1),
}


@pytest.mark.parametrize("name", sorted(ANALYSIS_NOTEBOOKS))
def test_analysis_notebook_on_a_tiny_model(name: str) -> None:
    notebook = run_notebook(ROOT / "demos" / f"{name}.ipynb", {"TL_OT_ABLATION_DEMO_MODEL": "tiny"})
    expected_text, n_figures = ANALYSIS_NOTEBOOKS[name]
    assert expected_text in _text(notebook)
    assert _images(notebook) == n_figures


PUBLIC_CALLS = {
    # notebook: the public call it is built on
    "quickstart": "tlo.fit_ot_ablation(",
    "compare_methods": "tlo.compare(",
    "layer_sweep": "tlo.sweep(",
    "circuit_analysis": "tlo.fit_ot_ablation(",
}
# What runs behind tlo.compare / tlo.sweep / tlo.monitor / tlo.choose_layer, and the objects
# it returned before the jobs had a public face: a notebook that shows these teaches internals.
JOB_INTERNALS = (
    "run_comparison",
    "comparison_record",
    "comparison.results",
    "run_sweep",
    "compare_job",
    "sweep_job",
    "monitor_job",
    "eval.jobs",
    "eval.choices",
)


@pytest.mark.parametrize("name", sorted(PUBLIC_CALLS))
def test_notebooks_use_the_public_api(name: str) -> None:
    """Each notebook runs on what a reader would write (``tlo.compare``, ``tlo.sweep``,
    ``tlo.fit_ot_ablation``), and neither its code nor its prose names the jobs' internals."""
    notebook = nbformat.read(ROOT / "demos" / f"{name}.ipynb", as_version=4)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    everything = "\n".join(cell.source for cell in notebook.cells)
    assert PUBLIC_CALLS[name] in code
    assert not [internal for internal in JOB_INTERNALS if internal in everything]


EMBEDDED_RUN = {
    # notebook: text only a run on the embedded model prints
    "quickstart": "I'm sorry",
    "compare_methods": "Qwen2.5-Coder-1.5B-Instruct",
    "layer_sweep": "Qwen2.5-Coder-1.5B-Instruct",
    "circuit_analysis": "Qwen2.5-Coder-1.5B-Instruct",
}


@pytest.mark.parametrize("name", sorted(EMBEDDED_RUN))
def test_committed_notebooks_show_a_run_on_the_embedded_model(name: str) -> None:
    """A reader on a code host sees outputs: every code cell ran once, in order, without
    errors, on the embedded model (``scripts/execute_notebooks.py``), with its figures."""
    notebook = nbformat.read(ROOT / "demos" / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), (
        f"{name}.ipynb is not committed executed; run scripts/execute_notebooks.py {name}"
    )
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert EMBEDDED_RUN[name] in _text(notebook)
    if name in ANALYSIS_NOTEBOOKS:
        assert _images(notebook) == ANALYSIS_NOTEBOOKS[name][1]
