"""The CLI checks its input before loading a model, never loses a finished run, and answers
every bad argument with a one-line error and a distinct exit code."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tl_ot_ablation.cli import BAD_INPUT, commands, entry, main
from tl_ot_ablation.cli.arg_types import layer_list
from tl_ot_ablation.core.devices import resolve_device
from tl_ot_ablation.lens import models

TINY = ["--model", "tiny", "--no-progress", "--batch-size", "4"]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a command gets as far as loading the model."""

    def refuse(args):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(entry, "load_model_for", refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--n-eval", "0"], "n_eval must be an integer >= 1"),
        (["compare", "--n-train", "0"], "n_train must be an integer >= 1"),
        (["sweep", "--n-train", "-3"], "n_train must be an integer >= 1"),
        (["compare", "-k", "0"], "n_components must be an integer >= 1"),
        (["compare", "--reg", "-1"], "reg must be a finite number >= 0"),
        (["compare", "--reg", "nan"], "reg must be a finite number >= 0"),
        (["compare", "--max-strength", "0.5"], "max_strength must be a finite number >= 1"),
        (["compare", "--max-strength", "inf"], "max_strength must be a finite number >= 1"),
        (["compare", "--strength", "-1", "--match-kl", "none"], "strength must be"),
        (["compare", "--strength", "inf", "--match-kl", "none"], "strength must be a finite"),
        (["compare", "--strength", "nan", "--match-kl", "none"], "strength must be a finite"),
        (["compare", "--n-questions", "-1"], "n_questions must be an integer >= 0"),
        (["sweep", "--strengths", "1", "inf"], "every strength must be a finite number > 0"),
        (["compare", "--seed", "-1"], "seed must be an integer >= 0"),
        (["fit", "--seed", str(2**64)], "seed must be an integer >= 0 and < 2**64"),
        (["fit", "--direction-layer", "1000000000"], "no model has more than 10000 blocks"),
        (["monitor", "--direction-layer", "10000"], "no model has more than 10000 blocks"),
        (["compare", "--device", "nonsense"], "--device 'nonsense' is not a device"),
        (["generate", "--map", "m", "--prompt", "hi", "--strength", "-1"], "--strength must be"),
        (["generate", "--map", "m", "--prompt", "hi", "--strength", "inf"], "--strength must be"),
        (["generate", "--map", "m", "--prompt", "hi", "--strength", "nan"], "--strength must be"),
        (["compare", "--max-new-tokens", "0"], "max_new_tokens must be an integer >= 1"),
        (["sweep", "--strengths", "0", "1"], "every strength must be a finite number > 0"),
        (["sweep", "--k-grid", "0"], "every k in k_grid must be an integer >= 1"),
        (["compare", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["compare", "--methods", "ot_selective"], "needs that method"),
        (["fit", "--direction-layer", "-1"], "direction_layer must be"),
        (["generate", "--map", "nowhere", "--prompt", "hi"], "not a saved"),
        (["generate", "--map", "nowhere"], "--prompt"),
    ],
)
def test_bad_values_fail_before_the_model_loads(argv, message, no_model, capsys) -> None:
    assert main([*argv, "--no-progress"]) == BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_missing_and_malformed_prompt_files_fail_before_the_model_loads(
    tmp_path: Path, no_model, capsys
) -> None:
    assert main(["compare", "--harmful", str(tmp_path / "none.json")]) == BAD_INPUT
    assert "none.json" in capsys.readouterr().err
    broken = tmp_path / "prompts.jsonl"
    broken.write_text('{"instruction": "bake bread"}\n{"text": "no instruction"}\n')
    assert main(["compare", "--harmful", str(broken)]) == BAD_INPUT
    err = capsys.readouterr().err
    assert "prompts.jsonl" in err and "line 2" in err and "instruction" in err


def test_an_output_path_in_the_way_fails_before_any_work(tmp_path: Path, no_model, capsys):
    blocker = tmp_path / "report"
    blocker.write_text("a file, not a folder")
    assert main(["compare", *TINY, "--out", str(blocker)]) == BAD_INPUT
    assert "is a file" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["fit", *TINY, "--out", str(foreign)]) == BAD_INPUT
    assert "--force" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


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


def test_jsonl_prompts_and_force_replace(tmp_path: Path, capsys) -> None:
    harmful = tmp_path / "harmful.jsonl"
    harmful.write_text(
        "".join(json.dumps({"instruction": f"rob bank {i}"}) + "\n" for i in range(4))
    )
    out = tmp_path / "map"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    argv = ["fit", *TINY, "--harmful", str(harmful), "--layers", "1", "-k", "2", "--out", str(out)]
    assert main(argv) == BAD_INPUT  # a foreign folder
    assert main([*argv, "--force"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["metadata"]["n_harmful"] == 4
    assert not (out / "stale.txt").exists()  # replaced whole


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


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Act as a machine with neither CUDA nor MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_an_unavailable_device_fails_before_the_model_loads(
    device: str, no_accelerator, no_model, capsys
) -> None:
    assert main(["compare", "--device", device, "--no-progress"]) == BAD_INPUT
    err = capsys.readouterr().err
    assert f"--device {device!r}" in err and "available here: cpu" in err, err
    assert "use --device cpu" in err and err.count("\n") == 1, err


def test_a_missing_cuda_index_names_the_devices_there_are(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"2 CUDA devices.*cpu, cuda:0, cuda:1.*device='cuda:0'"):
        resolve_device("cuda:3")


def test_resolve_device_parses_and_picks_like_load_model(no_accelerator) -> None:
    assert resolve_device(None) == torch.device("cpu")  # auto: CUDA if available, else CPU
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'nonsense' is not a device.*e\.g\. cpu, cuda"):
        resolve_device("nonsense")
    with pytest.raises(ValueError, match=r"no CUDA.*available here: cpu; use device='cpu'"):
        resolve_device(torch.device("cuda"))


def test_load_model_refuses_an_unavailable_device_before_loading(
    no_accelerator, monkeypatch
) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded before the device was checked")

    monkeypatch.setattr(models, "_load_hf", refuse)
    with pytest.raises(ValueError, match=r"device 'cuda'.*use device='cpu'"):
        models.load_model("any/model", device="cuda")


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
