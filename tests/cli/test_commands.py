"""The job commands (``cli.commands``) end to end on a tiny random-weight model: compare, sweep,
fit then generate, monitor."""

import contextlib
import io
import itertools
import json
from pathlib import Path

import pytest

from tests.helpers import compare_record
from tl_ot_ablation import CollectOptions
from tl_ot_ablation.cli import BAD_INPUT, main
from tl_ot_ablation.eval import plots_sweep
from tl_ot_ablation.eval.methods import METHODS
from tl_ot_ablation.eval.record import CompareRecord, MonitorRecord, RecordError
from tl_ot_ablation.eval.settings import MONITORED
from tl_ot_ablation.eval.xstest import XSTEST_METRICS
from tl_ot_ablation.io.manifest import foreign_files
from tl_ot_ablation.lens.prompts import default_prompts

pytestmark = pytest.mark.usefixtures("one_thread")

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


def test_fit_auto_picks_the_w2_layer_from_one_pass(tmp_path: Path, capsys) -> None:
    from tl_ot_ablation.eval.selection import layers_by_w2, w2_by_layer
    from tl_ot_ablation.lens.tiny import tiny_model
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


SMALL = ["--n-train", "4", "--n-eval", "3", "-k", "4"]
SCORES = ("likelihood", "disagreement", "probe")


@pytest.fixture(scope="module")
def monitor_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One run of every method, probe on, selective layer 1 (so "auto" monitors layer 1, after
    every edit; layer 0's post-instruction rows are the same for every prompt, so nothing can
    be fitted there), and layer 2 too: its folder and what it printed."""
    out = tmp_path_factory.mktemp("monitor") / "report"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["monitor", *TINY, *SMALL, "--layers", "1", "--out", str(out)])
    assert code == 0
    return out, printed.getvalue()


def test_monitor_writes_a_complete_report(monitor_run) -> None:
    out, printed = monitor_run
    assert foreign_files(out) == []  # every file listed in its manifest
    record = MonitorRecord.read(out / "detect.json")
    assert record.monitor_layers == [1] and record.hook == "resid_post"
    assert record.strengths == dict.fromkeys(MONITORED, 1.0)
    assert set(record.strength_sources.values()) == {"default"}
    assert record.layers == [1] and record.layer_choice == "given"
    keys = [(r.method, r.layer, r.score) for r in record.results]
    assert sorted(keys) == sorted(itertools.product(MONITORED, [1], SCORES))
    for result in record.results:
        assert result.n_positive == 3 and result.n_negative == 6
        for estimate in (result.auroc, result.tpr_at_1pct_fpr):
            assert 0 <= estimate.ci_low <= estimate.value <= estimate.ci_high <= 1
    assert record.prompts.n_train_harmful == 4 and record.prompts.n_eval_harmless == 3
    assert record.command is not None and record.command.startswith("tl-ot-ablation monitor")
    assert MonitorRecord.from_json(record.to_json()).to_json() == record.to_json()
    report = (out / "report.md").read_text()
    assert "| ot_selective | 1 | 1 | probe (supervised) |" in report
    assert "## Settings" in report and "Command: `tl-ot-ablation monitor" in report
    assert "| n_components | `4` |" in report and "| batch_size | `4` |" in report
    assert "![AUROC per monitored layer](detection.png)" in report
    assert (out / "detection.png").stat().st_size > 1000
    assert "| direction_ablation | 1 | 1 | likelihood (unsupervised) |" in printed
    assert "Report:" in printed


def test_auto_layers_as_compare_picks_them(tmp_path: Path) -> None:
    out = tmp_path / "auto"
    argv = ["monitor", *TINY, *SMALL, "--methods", "ot_selective", "--no-probe", "--no-plots"]
    assert main([*argv, "--out", str(out)]) == 0
    record = MonitorRecord.read(out / "detect.json")
    assert record.layer_choice == "w2_relative" and record.w2_by_layer is not None
    best = max(record.w2_by_layer, key=lambda row: row["w2_relative"])["layer"]
    assert record.layers == [best]
    assert record.monitor_layers == list(range(best, 3, 2))
    assert main([*argv, "--out", str(out)]) == 0  # our own folder: replaced without --force


def test_detect_json_is_validated_on_read(monitor_run, tmp_path: Path) -> None:
    data = json.loads((monitor_run[0] / "detect.json").read_text())
    for change, message in (
        ({"format": "tl_ot_ablation.compare/1"}, "format is"),
        ({"surprise": 1}, "unknown key"),
        ({"results": [{**data["results"][0], "score": "vibes"}]}, "score"),
        ({"results": [{**data["results"][0], "auroc": {"value": 1}}]}, "auroc"),
        ({"settings": {**data["settings"], "hook": "logits"}}, "hook must be"),
    ):
        with pytest.raises(RecordError, match=message):
            MonitorRecord.from_json({**data, **change})
    del data["monitor_layers"]
    with pytest.raises(RecordError, match="lacks"):
        MonitorRecord.from_json(data)


def test_strengths_come_from_a_compare_record(tmp_path: Path, capsys) -> None:
    source = compare_record(
        tmp_path, {"direction_ablation": 1.0, "actadd": 0.5, "ot_selective": 1.7}
    )
    out = tmp_path / "monitor"
    argv = ["monitor", *TINY, *SMALL, "--methods", "ot_selective", "actadd"]
    argv += ["--strengths-from", str(tmp_path), "--no-probe", "--no-plots", "--hook", "resid_pre"]
    assert main([*argv, "--out", str(out)]) == 0
    record = MonitorRecord.read(out / "detect.json")
    assert record.strengths == {"actadd": 0.5, "ot_selective": 1.7}
    assert record.strength_sources == dict.fromkeys(["actadd", "ot_selective"], str(source))
    assert record.layers == [1] and record.direction_layer == 1  # the compare run's
    assert record.monitor_layers == [1] and record.hook == "resid_pre"
    assert {r.score for r in record.results} == {"likelihood", "disagreement"}
    assert not (out / "detection.png").exists()
    assert "| ot_selective | 1.7 | 1 |" in capsys.readouterr().out


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


def test_the_cli_takes_judged_layers(tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    args = ["compare", "--model", "tiny", "--no-progress", "--quick", "--n-train", "6"]
    args += ["--n-eval", "2", "--n-validation", "2", "-k", "4", "--n-questions", "0"]
    args += ["--max-new-tokens", "3"]
    assert main([*args, "--layers", "judged", "--no-plots", "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())
    assert record["layer_choice"] == "judged" and len(record["layer_trials"]) >= 2
    report = (out / "report.md").read_text()
    assert "chosen by judged compliance on the validation prompts" in report
    assert "| layer | strength (KL ceiling) |" in report
    with pytest.raises(SystemExit):
        main(["fit", "--model", "tiny", "--layers", "judged", "--out", str(tmp_path / "f")])
    assert "'judged' is chosen by compare" in capsys.readouterr().err


def test_the_cli_writes_judged_shares_completions_and_the_panel(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", "--model", "tiny", "--no-progress", "--batch-size", "4", "--n-train", "6"]
    args += ["--n-eval", "2", "-k", "4", "--k-grid", "2", "--strengths", "1", "--no-pairs"]
    assert main([*args, "--judged", "--max-new-tokens", "2", "--out", str(out)]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["settings"]["judged"] is True and record["settings"]["max_new_tokens"] == 2
    layers = [p for p in record["points"] if p["kind"] == "layer"]
    assert all(p["compliance"] is not None for p in layers)
    completions = json.loads((out / "completions.json").read_text())
    assert len(completions["harmful_prompts"]) == 2
    for entry in completions["points"]:  # each entry names the sweep.json point it belongs to
        point = record["points"][entry["index"]]
        assert (point["kind"], point["layers"]) == (entry["kind"], entry["layers"])
        assert len(entry["completions"]) == 2
    assert {tuple(p["layers"]) for p in completions["points"] if p["kind"] == "layer"} == {
        (1,),
        (2,),
    }  # no point at layer 0, where the classes are identical
    report = (out / "report.md").read_text()
    assert "most judged compliance" in report and "| compliance |" in report
    assert (out / "layer_sweep.png").stat().st_size > 1000
    assert len(plots_sweep.plot_layer_sweep(record).axes) == 3  # log-odds, compliance, KL
    assert "judged compliance" in capsys.readouterr().out
    assert main([*args, "--judge", "markers", "--out", str(tmp_path / "plain")]) == 2
    assert "only apply to a --judged sweep" in capsys.readouterr().err


def test_compare_reports_over_refusal_for_every_method(tmp_path: Path) -> None:
    out = tmp_path / "report"
    code = main(
        ["compare", "--model", "tiny", "--no-progress", "--batch-size", "4", "--quick",
         "--n-train", "6", "--n-eval", "2", "-k", "4", "--layers", "auto", "--methods",
         "ot_selective", "--match-kl", "none", "--select", "kl", "--max-new-tokens", "3",
         "--n-questions", "0", "--no-detect", "--judge", "markers", "--xstest", "shipped",
         "--n-xstest", "3", "--match-measure", "median", "--gate-neighbours", "1",
         "--no-plots", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    record = CompareRecord.read(out / "results.json")
    assert record.settings.match_measure == "median" and record.settings.n_xstest == 3
    assert record.prompts.xstest_source == "shipped"
    assert (record.prompts.n_xstest_safe, record.prompts.n_xstest_unsafe) == (3, 3)
    for name, method in record.methods.items():
        assert set(XSTEST_METRICS) <= set(method.metrics), name
        assert [len(v) for v in method.judged_xstest.values()] == [3, 3]
    none = record.methods["none"].metrics
    assert none["xstest_over_refusal_removed"].value == 0.0
    gate = record.methods["ot_selective"].gate
    assert gate is not None and len(gate["posterior"]["xstest_safe"]) == 3
    assert len(gate["top"]) == 5 and all(len(t["neighbours"]) == 1 for t in gate["top"])
    completions = json.loads((out / "completions.json").read_text())
    assert len(completions["prompts"]["xstest_safe"]) == 3
    assert len(completions["completions"]["ot_selective"]["xstest_unsafe"]) == 3
    report = (out / "report.md").read_text()
    assert "## Over-refusal (XSTest-style prompts)" in report
    assert "## Harmless damage, prompt by prompt" in report
