"""``main`` (``cli.entry``): the order of a command (layers checked right after loading), one-line
errors and distinct exit codes, a bug never reported as bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tl_ot_ablation.cli import BAD_INPUT, commands, entry, main

TINY = ["--model", "tiny", "--no-progress", "--batch-size", "4"]


def test_bad_input_gives_a_one_line_error(tmp_path: Path, capsys) -> None:
    code = main(["fit", *TINY, "--n-train", "3", "--layers", "7", "--out", str(tmp_path / "m")])
    assert code == 2
    assert "out of range: this model has layers 0..2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--match-kl", "lots"])
    assert main(["generate", *TINY, "--map", str(tmp_path)]) == 2
    assert "--prompt" in capsys.readouterr().err


def test_python_dash_m_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tl_ot_ablation", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("compare", "sweep", "fit", "generate", "monitor"):
        assert command in result.stdout


def test_layer_indices_are_checked_right_after_loading(tmp_path: Path, monkeypatch, capsys):
    def no_pass(*args, **kwargs):
        raise AssertionError("an activation pass ran before the layers were checked")

    monkeypatch.setattr(commands, "compare_job", no_pass)
    monkeypatch.setattr(commands, "fit_job", no_pass)
    for argv in (
        ["compare", *TINY, "--layers", "9", "--out", str(tmp_path / "c")],
        ["compare", *TINY, "--direction-layer", "5", "--out", str(tmp_path / "c")],
        ["fit", *TINY, "--layers", "1,7", "--out", str(tmp_path / "f")],
    ):
        assert main(argv) == BAD_INPUT
        assert "out of range: this model has layers 0..2" in capsys.readouterr().err


FLAGS = (
    "--layers --direction-layer -k --reg --n-eval --n-train --match-kl --max-strength "
    "--strength --methods --batch-size --k-grid --strengths --positions --estimator --gate "
    "--quick --seed"
).split()
ARGUMENT = st.one_of(st.sampled_from(FLAGS), st.text(alphabet="0123456789-,.=eainf ", max_size=6))
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(command=st.sampled_from(["compare", "sweep", "fit"]), argv=st.lists(ARGUMENT, max_size=6))
def test_fuzzed_arguments_exit_cleanly_before_the_model_loads(command, argv, no_model) -> None:
    """Any argument list either is rejected by argparse (SystemExit 2) or by the checks (exit
    code 2), or passes them and reaches the model load: never a traceback from inside."""
    try:
        code = main([command, *argv, "--out", "/nonexistent-dir/x"])
    except SystemExit as exit_:
        assert exit_.code == 2
    except AssertionError as error:
        assert "model was loaded" in str(error)
    else:
        assert code == BAD_INPUT


def test_a_bug_is_not_reported_as_bad_input(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Every TypeError used to be "bad input" (exit 2, one line), hiding real bugs."""

    def broken(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(entry, "check_before_loading", broken)
    with pytest.raises(TypeError, match="unsupported operand"):  # its traceback is printed
        main(["compare", *TINY])
    assert "this is a bug in tl_ot_ablation: please report it" in capsys.readouterr().err


def test_a_plain_value_error_from_inside_a_job_is_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Only ``UserInputError`` (and missing / existing files) is bad input: a plain
    ``ValueError`` raised after the checks, inside the package or torch, is a bug."""

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(commands, "compare_job", broken)
    with pytest.raises(ValueError, match="boom"):  # propagates: its traceback is printed
        main(["compare", *TINY, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert "tl-ot-ablation compare: this is a bug in tl_ot_ablation: please report it" in err
    assert "error: boom" not in err


def test_monitor_layer_indices_are_checked_right_after_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_pass(*args, **kwargs):
        raise AssertionError("an activation pass ran before the layers were checked")

    monkeypatch.setattr(commands, "monitor_job", no_pass)
    for spec, name in (
        (["--monitor-layers", "1,7"], "monitor layer(s) [7]"),
        (["--layers", "5"], "layer(s) [5]"),
        (["--direction-layer", "3"], "direction_layer(s) [3]"),
    ):
        argv = ["monitor", *TINY, *spec, "--out", str(tmp_path / "m")]
        assert main(argv) == BAD_INPUT
        err = capsys.readouterr().err
        assert f"{name} out of range: this model has layers 0..2" in err, err
