"""The ``tl-ot-ablation`` command line, end to end on a tiny random-weight model."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tl_ot_ablation import CollectOptions
from tl_ot_ablation.cli import main
from tl_ot_ablation.eval.methods import METHODS

TINY = ["--model", "tiny", "--no-progress", "--batch-size", "4"]
REQUIRED = (
    "refusal_rate_harmful",
    "refusal_rate_harmless",
    "kl_harmless",
    "ppl_harmless",
    "compliance_rate_harmful",
    "deflection_rate_harmful",
    "degenerate_rate_harmful",
    "capability_accuracy",
)


def test_compare_writes_a_complete_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    code = main(
        [
            "compare",
            *TINY,
            "--quick",
            "--n-train",
            "6",
            "--n-eval",
            "3",
            "--n-validation",
            "3",
            "-k",
            "4",
            "--methods",
            "all",
            "--max-new-tokens",
            "4",
            "--n-questions",
            "5",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    record = json.loads((out / "results.json").read_text())
    assert list(record["methods"]) == list(METHODS)
    for name, values in record["methods"].items():
        for key in REQUIRED:
            assert set(values[key]) == {"value", "ci_low", "ci_high"}, (name, key)
    assert all(len(values["judged_harmful"]) == 3 for values in record["methods"].values())
    assert record["preset"] == "quick" and record["command"].startswith("tl-ot-ablation compare")
    assert record["prompts"]["n_train_harmful"] == 6 and record["prompts"]["n_eval_harmless"] == 3
    assert record["prompts"]["n_validation_harmful"] == 3
    for name, values in record["methods"].items():
        selection = values["selection"]
        assert selection["strength"] == (values["strength"] or 0.0), name
        assert len(selection["points"]) == (1 if name == "none" else 2), name  # quick: 0.5, 1
    for png in ("comparison.png", "clouds.png", "w2_by_layer.png", "frontier.png"):
        assert (out / png).stat().st_size > 1000, png
    report = (out / "report.md").read_text()
    assert "| ot_selective |" in report and "![" in report
    completions = json.loads((out / "completions.json").read_text())
    assert len(completions["completions"]["none"]["harmful"]) == 3
    assert "| direction_ablation |" in capsys.readouterr().out


def test_compare_refuses_overlapping_train_and_eval_prompts(tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "harmful.txt"
    prompts.write_text("rob a bank\nhurt someone\nsteal a car\n")
    args = ["compare", *TINY, "--harmful", str(prompts), "--eval-harmful", str(prompts)]
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    assert re.search(r"3 held-out prompt.*--allow-overlap", capsys.readouterr().err)
    with pytest.warns(UserWarning, match="memorisation"):
        main(
            [
                *args,
                "--allow-overlap",
                "--n-eval",
                "2",
                "--n-train",
                "3",
                "--methods",
                "direction_ablation",
                "ot_selective",
                "--max-new-tokens",
                "2",
                "--n-validation",
                "2",
                "--n-questions",
                "0",
                "-k",
                "2",
                "--no-plots",
                "--out",
                str(tmp_path / "r"),
            ]
        )
    record = json.loads((tmp_path / "r" / "results.json").read_text())
    assert record["prompts"]["train_eval_overlap"] == 2
    assert "WARNING" in (tmp_path / "r" / "report.md").read_text()


def test_compare_refuses_validation_prompts_seen_elsewhere(tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "harmful.txt"
    prompts.write_text("rob a bank\nhurt someone\n")
    args = ["compare", *TINY, "--validation-harmful", str(prompts), "--eval-harmful", str(prompts)]
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    assert re.search(r"2 validation prompt.*--allow-overlap", capsys.readouterr().err)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strength-fractions", "0.5", "1.5"], "strength_fractions must be numbers in"),
        (["--n-validation", "0"], "n_validation"),
    ],
)
def test_compare_checks_strength_choice_flags(tmp_path: Path, capsys, flags, message) -> None:
    assert main(["compare", *TINY, *flags, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err


def test_sweep_writes_points_w2_and_plots(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", *TINY, "--n-train", "6", "--n-eval", "3", "-k", "4", "--out", str(out)]
    assert main([*args, "--k-grid", "2", "4", "--strengths", "0.5", "1"]) == 0
    record = json.loads((out / "sweep.json").read_text())
    kinds = {p["kind"] for p in record["points"]}
    assert kinds == {"reference", "layer", "pair", "k", "strength"}
    assert [r["layer"] for r in record["w2_by_layer"]] == [0, 1, 2]
    # Layer 0's post-instruction rows are the same for every prompt: no map, no point there.
    assert [p["layers"] for p in record["points"] if p["kind"] == "layer"] == [[1], [2]]
    for png in ("layer_sweep.png", "w2_by_layer.png", "strength.png"):
        assert (out / png).stat().st_size > 1000, png
    assert "Report:" in capsys.readouterr().out


def test_fit_then_generate(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "map"
    fit = ["fit", *TINY, "--n-train", "5", "--layers", "1,2", "-k", "4", "--out", str(folder)]
    assert main(fit) == 0
    assert (folder / "config.json").is_file()
    generate = ["generate", *TINY, "--map", str(folder), "--prompt", "hi", "--prompt", "rob a bank"]
    assert main([*generate, "--max-new-tokens", "3", "--with-unmodified"]) == 0
    out = capsys.readouterr().out
    assert "### rob a bank" in out and "[unmodified]" in out and "[ot]" in out


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


def test_fit_auto_picks_the_w2_layer_from_one_pass(tmp_path: Path, capsys) -> None:
    from tl_ot_ablation.eval.selection import layers_by_w2, w2_by_layer
    from tl_ot_ablation.lens.prompts import default_prompts
    from tl_ot_ablation.lens.testing import tiny_model
    from tl_ot_ablation.lens.training import collect_training

    folder = tmp_path / "map"
    assert main(["fit", *TINY, "--n-train", "5", "-k", "4", "--out", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    model = tiny_model(n_ctx=512)  # the CLI's "tiny"
    harmful, harmless = default_prompts("harmful")[:5], default_prompts("harmless")[:5]
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(3)]
    stats = collect_training(
        model,
        harmful,
        harmless,
        names,
        CollectOptions(batch_size=4, progress=False),
    ).stats
    expected = layers_by_w2(w2_by_layer(stats, 3, n_components=4))
    assert config["metadata"]["layers"] == expected
    assert f"largest W2² / variance): {expected}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", *TINY, "--layers", "deepest"])


def test_sweep_refuses_kl_budget_none(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["sweep", *TINY, "--kl-budget", "none", "--out", str(tmp_path / "s")])
    assert stop.value.code == 2
    assert "sweep needs a KL budget" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], ("none", "direction_ablation", "ot_selective")),
        (["--methods", "all"], tuple(METHODS)),
        (["--methods", "actadd", "direction_ablation"], ("none", "direction_ablation", "actadd")),
    ],
)
def test_compare_runs_the_headline_methods_unless_asked(flags, expected) -> None:
    from tl_ot_ablation.cli import build_parser
    from tl_ot_ablation.cli.to_settings import settings_from_args

    settings = settings_from_args(build_parser().parse_args(["compare", *flags]))
    assert settings.resolve(28).methods == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], "judged"),
        (["--quick"], "auto"),
        (["--quick", "--layers", "judged"], "judged"),
        (["--layers", "auto"], "auto"),
        (["--layers", "11,14"], [11, 14]),
    ],
)
def test_compare_layers_default_to_judged_and_quick_to_auto(flags, expected) -> None:
    from tl_ot_ablation.cli import build_parser
    from tl_ot_ablation.cli.to_settings import settings_from_args

    assert settings_from_args(build_parser().parse_args(["compare", *flags])).layers == expected
