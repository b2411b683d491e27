"""The command line's own value syntaxes (``cli.arg_types``): layer lists and KL budgets."""

import argparse
from pathlib import Path

import pytest

from tl_ot_ablation.cli import BAD_INPUT, main
from tl_ot_ablation.cli.arg_types import layer_list


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("14", [14]),
        ("11,14", [11, 14]),
        ("10-12", [10, 11, 12]),
        ("1,3-4", [1, 3, 4]),
        ("9998-9999", [9998, 9999]),
    ],
)
def test_layer_specs(value: str, expected: list[int]) -> None:
    assert layer_list(value) == expected


@pytest.mark.parametrize("value", ["5-2", "1,,2", "=-1", "-1", "1, 2", "a", "", "1-", "3-2,1"])
def test_bad_layer_specs_say_what_was_expected(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"layers like|runs backwards"):
        layer_list(value)


@pytest.mark.parametrize("value", ["10000", "9990-10000", "0-1000000000", "3,5-1" + "0" * 30])
def test_layer_indices_beyond_any_model_are_refused_before_a_list_is_built(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="no model has more than 10000 blocks"):
        layer_list(value)


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "--layers", "0-1000000000"],
        ["compare", "--layers", "0-1000000000"],
        ["fit", "--layers", "7,0-1000000000"],
        ["monitor", "--monitor-layers", "0-1000000000"],
    ],
)
def test_huge_layer_options_fail_while_parsing(argv: list[str], no_model, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == BAD_INPUT
    assert "no model has more than 10000 blocks" in capsys.readouterr().err


def test_bad_monitor_layer_specs_stop_argparse() -> None:
    for spec in ("x", "-1", "middle"):
        with pytest.raises(SystemExit):
            main(["monitor", "--monitor-layers", spec])


TINY = ["--model", "tiny", "--no-progress", "--batch-size", "4"]


def test_sweep_refuses_kl_budget_none(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["sweep", *TINY, "--kl-budget", "none", "--out", str(tmp_path / "s")])
    assert stop.value.code == 2
    assert "sweep needs a KL budget" in capsys.readouterr().err
