"""``tl-ot-ablation generate`` (``cli.generate``): control characters escaped on a terminal only."""

import io
from pathlib import Path
from typing import ClassVar

import pytest

# --- generate prints escape codes escaped on a terminal -----------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_generate(
    monkeypatch: pytest.MonkeyPatch, stdout: io.StringIO, text: str, *, allow: bool = False
) -> str:
    import argparse
    import sys

    from tl_ot_ablation.cli import generate as cli_generate

    class FakeSet:
        metadata: ClassVar[dict[str, str]] = {"method": "ot"}

        def fwd_hooks(self) -> list[object]:
            return []

    monkeypatch.setattr(
        cli_generate.InterventionSet, "load", staticmethod(lambda *a, **k: FakeSet())
    )

    def fake_generate(model: object, prompts: list[str], **kwargs: object) -> list[str]:
        assert kwargs["options"].allow_control_tokens is allow  # type: ignore[attr-defined]
        return [text] * len(prompts)

    monkeypatch.setattr(cli_generate, "generate", fake_generate)
    monkeypatch.setattr(sys, "stdout", stdout)
    args = argparse.Namespace(
        prompt=[text],
        prompts=None,
        map=Path("m"),
        strength=None,
        max_new_tokens=3,
        batch_size=1,
        system=None,
        no_progress=True,
        with_unmodified=True,
        allow_control_tokens=allow,
    )
    cli_generate.run_generate(args, model=None)
    return stdout.getvalue()


NASTY = "a\x1b[2J\x1b]0;title\x07b\r\tc\nd\x9b31m\u202eevil\x7f"


def test_generate_escapes_control_characters_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown = _run_generate(monkeypatch, _Terminal(), NASTY)
    assert not any(c in shown for c in "\x1b\x07\r\x9b\u202e\x7f")
    escaped = r"a\x1b[2J\x1b]0;title\x07b\r" + "\tc\nd" + r"\x9b31m\u202eevil\x7f"
    assert f"### {escaped}" in shown and f"[ot] {escaped}" in shown
    assert f"[unmodified] {escaped}" in shown


def test_generate_writes_text_unchanged_to_a_file_or_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _run_generate(monkeypatch, io.StringIO(), NASTY, allow=True)
    assert f"### {NASTY}" in shown and f"[ot] {NASTY}" in shown
