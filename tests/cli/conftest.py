"""Fixtures of the command-line tests."""

import pytest

from tl_ot_ablation.cli import entry


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a command gets as far as loading the model."""

    def refuse(args):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(entry, "load_model_for", refuse)
