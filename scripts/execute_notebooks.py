"""Execute the demo notebooks on the embedded model and write them back with their outputs.

A reader on a code host then sees the tables and plots without running anything. Each notebook
is stripped of old outputs, executed top to bottom by ``nbclient`` (the model is the embedded
one: ``TL_OT_ABLATION_DEMO_MODEL`` is unset), scrubbed of this machine's paths (``scrub``) and
replaced atomically only if every cell ran; a failing notebook is left as it was. The tests
re-execute the same notebooks (``tests/project/test_demos.py``) and check the committed outputs
came from such a run; ``tests/project/test_hygiene.py`` checks no committed file holds a machine
path.

    .venv/bin/python scripts/execute_notebooks.py [NAME ...]   # default: every demos/*.ipynb
    .venv/bin/python scripts/execute_notebooks.py --scrub-only [NAME ...]   # paths only, no run
"""

import os
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tl_ot_ablation.io import atomic

ROOT = Path(__file__).resolve().parents[1]
DEMOS = ROOT / "demos"

# A path ends where the next character cannot continue its last component (a "." continues it
# only when more name follows: "/a/b." ends a sentence).
_END = r"(?![\w+@~-]|\.[\w.-])"
# Any installed-packages folder, wherever its interpreter lives (a kernel may run another one).
_SITE_PACKAGES = re.compile(
    r"(?<![\w.+@~/\\-])(?:[A-Za-z]:)?(?:[/\\][\w.+@~-]+)*?[/\\](?:site|dist)-packages" + _END
)


def _machine_paths() -> list[tuple[re.Pattern[str], str]]:
    """(pattern, replacement) for each machine path to hide, most specific first: installed
    packages, the standard library, the repository, the home folder, the temporary folder."""
    places = [
        (sysconfig.get_paths()["stdlib"], "<stdlib>"),
        (str(ROOT), "."),
        (str(Path.home()), "~"),
        (tempfile.gettempdir(), "<tmp>"),
    ]
    pairs = [(_SITE_PACKAGES, "<site-packages>")]
    for place, name in places:
        if len(Path(place).parts) > 1:  # never rewrite a bare "/" (or "C:\")
            pairs.append((re.compile(re.escape(place) + _END), name))
    return pairs


def scrub_text(text: str) -> str:
    """``text`` with this machine's paths replaced: any ``.../site-packages`` or
    ``.../dist-packages`` folder by ``<site-packages>``, the standard library by ``<stdlib>``,
    the repository root by ``.``, the home folder by ``~`` and the temporary folder by
    ``<tmp>``; nothing else changes.

    >>> scrub_text(f"{ROOT}/demos/x.py:3: note")
    './demos/x.py:3: note'
    >>> scrub_text("/opt/venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning")
    '<site-packages>/tqdm/auto.py:21: TqdmWarning'
    """
    for pattern, replacement in _machine_paths():
        text = pattern.sub(replacement, text)
    return text


def scrub(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with machine paths rewritten (``scrub_text``) in its text outputs: streams,
    ``text/*`` results and displays, error messages and tracebacks. Sources, metadata and
    binary outputs (images) are left alone. In place; returned for chaining."""
    for cell in notebook.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if "text" in out:
                out.text = scrub_text(out.text)
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    out.data[mime] = scrub_text(value)
            if "evalue" in out:
                out.evalue = scrub_text(out.evalue)
            if "traceback" in out:
                out.traceback = [scrub_text(line) for line in out.traceback]
    return notebook


def strip(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without outputs or execution counts (in place; returned for chaining)."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return notebook


def write(path: Path, notebook: nbformat.NotebookNode) -> None:
    """Write ``notebook`` to ``path`` atomically, machine paths scrubbed."""
    atomic.write_text(path, nbformat.writes(scrub(notebook)) + "\n")


def execute(path: Path) -> float:
    """Run ``path`` on the embedded model and write it back with outputs; returns seconds."""
    notebook = strip(nbformat.read(path, as_version=4))
    os.environ.pop("TL_OT_ABLATION_DEMO_MODEL", None)
    start = time.perf_counter()
    NotebookClient(
        notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    seconds = time.perf_counter() - start
    write(path, notebook)
    return seconds


def main(argv: list[str]) -> None:
    scrub_only = "--scrub-only" in argv
    names = [name for name in argv if name != "--scrub-only"]
    paths = [DEMOS / f"{name}.ipynb" for name in names] or sorted(DEMOS.glob("*.ipynb"))
    for path in paths:
        if scrub_only:
            write(path, nbformat.read(path, as_version=4))
            print(f"{path.name}: scrubbed", flush=True)
        else:
            print(f"{path.name}: {execute(path):.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
