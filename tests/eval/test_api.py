"""The jobs from Python (``eval.api``): compare, sweep, monitor and choose_layer."""

import json
from pathlib import Path

import pytest

import tl_ot_ablation as tlo
from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation.eval.prompt_sets import EvalPrompts, JobPrompts, ValidationPrompts
from tl_ot_ablation.eval.record import CompareRecord, MonitorRecord, SweepRecord
from tl_ot_ablation.lens.tiny import tiny_model

QUIET = {"progress": False}
PROMPTS = JobPrompts(
    HARMFUL,
    HARMLESS,
    EvalPrompts(["rob a bank", "hurt someone"], ["plant a tree", "sing a song"], ["Bread."]),
    ValidationPrompts(["burn a house", "forge a cheque"], ["fold a shirt", "read a map"]),
)
SMALL = {
    "n_components": 4,
    "batch_size": 4,
    "max_new_tokens": 3,
    "n_questions": 0,
    "detect": False,
    "bisection_steps": 2,
    "strength_fractions": (0.5, 1.0),
}


@pytest.fixture(scope="module")
def model():
    return tiny_model(n_ctx=512)


def test_compare_from_python_returns_the_record_the_folder_holds(model, tmp_path: Path) -> None:
    out = tmp_path / "compare"
    record = tlo.compare(
        model, prompts=PROMPTS, layers=[1], out=out, match_kl=None, select="kl", **SMALL, **QUIET
    )
    assert isinstance(record, CompareRecord) and set(record.methods) >= {"none", "ot_selective"}
    written = CompareRecord.read(out / "results.json")
    assert written.to_json() == record.to_json()
    assert (out / "report.md").is_file() and (out / "manifest.json").is_file()


def test_sweep_and_monitor_from_python_write_nothing_without_out(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tlo.sweep(
        model,
        prompts=PROMPTS,
        layers=[1, 2],
        k_grid=(2,),
        strengths=(1.0,),
        n_components=4,
        batch_size=4,
        **QUIET,
    )
    assert isinstance(sweep, SweepRecord) and {p.kind for p in sweep.points} >= {"layer"}
    monitor = tlo.monitor(model, prompts=PROMPTS, layers=[1], n_components=4, **QUIET)
    assert isinstance(monitor, MonitorRecord) and monitor.layers == [1]
    assert list(tmp_path.iterdir()) == []


def test_settings_objects_and_presets_are_both_accepted(model, as_user) -> None:
    with pytest.raises(TypeError, match="settings must be a CompareSettings"):
        tlo.compare(model, settings=tlo.eval.settings.SweepSettings(), prompts=PROMPTS)
    with pytest.raises(ValueError, match="unknown preset"):
        tlo.compare(model, preset="fast", prompts=PROMPTS)


def test_choose_layer_is_compares_judged_choice(model) -> None:
    choice = tlo.choose_layer(model, prompts=PROMPTS, **SMALL, **QUIET)
    assert choice.how == "judged" and len(choice.layers) == 1
    assert choice.layers[0] in [t["layer"] for t in choice.trials]
    record = tlo.compare(model, prompts=PROMPTS, **SMALL, **QUIET)
    assert record.settings.layers == choice.layers
    assert json.dumps(record.layer_trials) == json.dumps(choice.trials)
