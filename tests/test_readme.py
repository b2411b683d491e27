"""The README's quickstart is demos/quickstart.py verbatim, and it runs."""

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_quickstart() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"## Quickstart\n\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its '## Quickstart' python block"
    return match.group(1)


def test_readme_quickstart_is_the_demo_script() -> None:
    assert _readme_quickstart() == (ROOT / "demos" / "quickstart.py").read_text()


def test_quickstart_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "demos" / "quickstart.py"), run_name="__main__")
    assert (tmp_path / "maps" / "demo" / "config.json").is_file()
    assert capsys.readouterr().out.strip()
