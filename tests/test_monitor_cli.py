"""``tl-ot-ablation monitor`` end to end on the tiny model, its settings, its ``detect.json``
record, and its input checks (made before the model loads)."""

import contextlib
import io
import itertools
import json
from pathlib import Path

import pytest
import torch

from tl_ot_ablation.cli import BAD_INPUT, commands, entry, main
from tl_ot_ablation.eval.record import (
    COMPARE_FORMAT,
    CompareRecord,
    MethodRecord,
    MonitorRecord,
    PromptsRecord,
    RecordError,
)
from tl_ot_ablation.eval.settings import MONITORED, CompareSettings, MonitorSettings
from tl_ot_ablation.io.manifest import foreign_files

TINY = ["--model", "tiny", "--no-progress", "--batch-size", "4"]
SMALL = ["--n-train", "4", "--n-eval", "3", "-k", "4"]
SCORES = ("likelihood", "disagreement", "probe")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and two threads run far
    slower while another process holds the cores (as in test_monitor.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a command gets as far as loading the model."""

    def refuse(args):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(entry, "load_model_for", refuse)


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


def compare_record(path: Path, strengths: dict[str, float], **changes) -> Path:
    """A minimal valid compare ``results.json`` recording ``strengths``."""
    settings = CompareSettings.preset(
        **{"layers": [1], "direction_layer": 1, "n_components": 4, "n_train": 4, **changes}
    )
    prompts = PromptsRecord("a", "b", "c", 4, 4, 3, 3, 2, 0)
    methods = {"none": MethodRecord(None)} | {m: MethodRecord(s) for m, s in strengths.items()}
    CompareRecord("tiny", settings, prompts, methods).write(path / "results.json")
    return path / "results.json"


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


def test_strengths_from_warns_when_the_maps_differ(tmp_path: Path, no_model) -> None:
    compare_record(tmp_path, {"ot_selective": 1.2})
    argv = ["monitor", *TINY, "--n-train", "4", "-k", "8", "--methods", "ot_selective"]
    with (
        pytest.warns(UserWarning, match="n_components differ from the compare run"),
        pytest.raises(AssertionError, match="model was loaded"),
    ):
        main([*argv, "--strengths-from", str(tmp_path), "--out", str(tmp_path / "m")])


def bad_compare_json(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"format": "tl_ot_ablation.sweep/1", "points": []}))
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "foo"], "unknown method 'foo'"),
        (["--methods", "none"], "unknown method 'none'"),
        (["--methods", "foo", "--strengths-from", "{tmp}"], "unknown method 'foo'"),
        (["--strengths-from", "{tmp}/nowhere.json"], "nowhere.json: no such file"),
        (["--strengths-from", "{tmp}"], "results.json: no such file"),
        (["--strengths-from", "{bad}"], "is not a compare results.json"),
        (["--strengths-from", "{partial}"], "records no strength for ['actadd'"),
        (["--n-eval", "1"], "n_eval must be an integer >= 2"),
        (["--positions", "all"], "the monitor reads positions"),
        (["-k", "0"], "n_components must be an integer >= 1"),
        (["--direction-layer", "-1"], "direction_layer must be"),
    ],
)
def test_bad_input_fails_before_the_model_loads(
    argv: list[str], message: str, tmp_path: Path, no_model, capsys
) -> None:
    bad = bad_compare_json(tmp_path)
    (tmp_path / "partial").mkdir()
    partial = compare_record(tmp_path / "partial", {"direction_ablation": 1.0})
    values = {"tmp": str(tmp_path), "bad": str(bad), "partial": str(partial)}
    argv = [arg.format(**values) for arg in argv]
    assert main(["monitor", *TINY, *argv, "--out", str(tmp_path / "out")]) == BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_bad_monitor_layer_specs_stop_argparse() -> None:
    for spec in ("x", "-1", "middle"):
        with pytest.raises(SystemExit):
            main(["monitor", "--monitor-layers", spec])


def test_layer_indices_are_checked_right_after_loading(
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


def test_an_output_folder_in_the_way_is_refused_unless_forced(tmp_path: Path, no_model, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["monitor", *TINY, "--out", str(foreign)]) == BAD_INPUT
    assert "--force" in capsys.readouterr().err


# ------------------------------------------------------------------------------- settings


def test_presets_and_defaults() -> None:
    quick = MonitorSettings.preset("quick")
    assert (quick.n_train, quick.n_eval) == (64, 16)
    assert MonitorSettings.preset("quick", n_eval=4).n_eval == 4
    default = MonitorSettings()
    assert default.methods == MONITORED and "none" not in default.methods
    assert (default.layers, default.monitor_layers, default.hook) == ("auto", "auto", "resid_post")
    assert default.n_eval == 32 and default.probe and default.strengths == {}
    assert default.strength("ot_full") == 1.0
    compare = MonitorSettings.preset(methods=("ot_full",), n_components=8).compare_settings()
    assert compare.methods == ("none", "ot_full") and compare.match_kl is None
    assert compare.map.n_components == 8 and not compare.detect


def test_settings_json_round_trip() -> None:
    settings = MonitorSettings.preset(
        "quick",
        layers=[3, 5],
        methods=("ot_selective", "actadd"),
        monitor_layers=[6, 4],
        hook="resid_mid",
        probe=False,
        strengths={"ot_selective": 1.25},
        seed=3,
    )
    assert settings.methods == ("actadd", "ot_selective")  # registry order
    data = json.loads(json.dumps(settings.to_json()))
    assert MonitorSettings.from_json(data) == settings
    assert settings.strength("ot_selective") == 1.25 and settings.strength("actadd") == 1.0


@pytest.mark.parametrize(
    ("selective", "n_layers", "given", "expected"),
    [
        ([23], 28, "auto", [23, 25, 27]),
        ([20, 23], 28, "auto", [23, 25, 27]),
        ([27], 28, "auto", [27]),
        ([1], 3, [2, 0, 2], [0, 2]),
    ],
)
def test_monitor_layers(selective, n_layers, given, expected) -> None:
    settings = MonitorSettings(monitor_layers=given)
    assert settings.resolve_monitor_layers(selective, n_layers) == expected


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methods": ()}, "methods must be a non-empty"),
        ({"methods": ("none",)}, "unknown method 'none'"),
        ({"monitor_layers": []}, "monitor_layers must be a non-empty list"),
        ({"monitor_layers": "middle"}, "monitor_layers must be a list of layers or 'auto'"),
        ({"monitor_layers": [-1]}, "monitor_layers must be block indices"),
        ({"hook": "resid_final"}, "hook must be one of"),
        ({"n_eval": 1}, "n_eval must be an integer >= 2"),
        ({"probe": "yes"}, "probe must be True or False"),
        ({"strengths": {"ot_full": -1.0}}, "strength of ot_full must be"),
        ({"strengths": {"ot_full": float("nan")}}, "strength of ot_full must be"),
        ({"methods": ("actadd",), "strengths": {"ot_full": 1.0}}, "not among the methods"),
        ({"positions": "all"}, "the monitor reads positions"),
        ({"layers": "deepest"}, "layers must be a list"),
    ],
)
def test_bad_settings_say_what_is_wrong(changes, message, as_user: None) -> None:
    with pytest.raises(ValueError, match=message):
        MonitorSettings.preset(**changes)


def test_strengths_are_copied() -> None:
    given = {"ot_full": 0.5}
    settings = MonitorSettings(strengths=given)
    given["ot_full"] = 2.0
    assert settings.strength("ot_full") == 0.5


def test_compare_record_format_is_what_strengths_from_reads(tmp_path: Path) -> None:
    path = compare_record(tmp_path, {"ot_full": 0.75})
    assert json.loads(path.read_text())["format"] == COMPARE_FORMAT
