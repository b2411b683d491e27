"""The README's code blocks are the demo scripts verbatim, and they run."""

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _block_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"## {re.escape(heading)}\n\n```python\n(.*?)```", text, re.S)
    assert match, f"README.md lost its '## {heading}' python block"
    return match.group(1)


@pytest.mark.parametrize(
    ("heading", "script"),
    [("Quickstart", "quickstart.py"), ("The core on plain tensors", "core_tensors.py")],
)
def test_readme_blocks_are_the_demo_scripts(heading: str, script: str) -> None:
    assert _block_after(heading) == (ROOT / "demos" / script).read_text()


def test_core_demo_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "demos" / "core_tensors.py"), run_name="__main__")
    assert (tmp_path / "maps" / "demo" / "config.json").is_file()
    assert "W2 mean part" in capsys.readouterr().out


@pytest.mark.slow
def test_quickstart_runs_on_the_embedded_model(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(ROOT / "demos" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("[none     ]") == 6 and out.count("[OT       ]") == 6
    assert out.count("[OT gated ]") == 6 and "selected layers: [" in out
    assert "I'm sorry" in out
