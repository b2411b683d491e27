"""The jobs' settings (``eval.settings``): presets and defaults, nesting and JSON round trips,
older flat records, and bad values refused."""

import dataclasses
import json

import pytest

from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation.eval.damage import KL_THRESHOLD
from tl_ot_ablation.eval.fitting import fit_methods
from tl_ot_ablation.eval.selection import check_layer_spec
from tl_ot_ablation.eval.settings import (
    JOB_COLLECT,
    JOB_MAP,
    MONITORED,
    CompareSettings,
    FitSettings,
    MonitorSettings,
    SweepSettings,
)


def test_settings_nest_the_map_and_how_prompts_are_run() -> None:
    """The map and the collection are ``MapSpec`` / ``CollectOptions`` objects; presets and
    ``with_changes`` also take their fields by name, on top of the job defaults."""
    settings = CompareSettings.preset("quick", n_components=8, batch_size=4, reg=0.01)
    assert settings.map == dataclasses.replace(JOB_MAP, n_components=8, reg=0.01)
    assert settings.collect == dataclasses.replace(JOB_COLLECT, batch_size=4)
    assert settings.n_train == CompareSettings.QUICK["n_train"]
    changed = settings.with_changes(gate="none", seed=3)
    assert changed.map.gate == "none" and changed.map.n_components == 8 and changed.seed == 3
    data = json.loads(json.dumps(settings.to_json()))
    assert data["map"]["n_components"] == 8 and "progress" not in data["collect"]
    assert CompareSettings.from_json(data) == settings
    with pytest.raises(ValueError, match="n_components must be an integer >= 1, got None"):
        CompareSettings.preset(n_components=None)


def test_settings_read_an_older_flat_record() -> None:
    """Records written before the nesting held the map and collection fields flat."""
    settings = SweepSettings.preset(n_components=16, estimator="oas", positions="last")
    data = json.loads(json.dumps(settings.to_json()))
    flat = {key: value for key, value in data.items() if key not in ("map", "collect")}
    for name in ("n_components", "reg", "estimator", "gate", "gate_prior", "preserve_norm"):
        flat[name] = data["map"][name]
    for name in ("positions", "batch_size", "system"):
        flat[name] = data["collect"][name]
    assert SweepSettings.from_json(flat) == settings
    with pytest.raises(ValueError, match=r"unknown settings\.map field\(s\) \['k'\]"):
        SweepSettings.from_json({**data, "map": {"k": 4}})


def test_compare_settings_reject_bad_values(tiny_bridge) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        CompareSettings(methods=("ot_magic",)).resolve(3)
    with pytest.raises(ValueError, match="match_kl"):
        CompareSettings(match_kl="ot").resolve(3)
    with pytest.raises(ValueError, match="needs that method"):
        CompareSettings(methods=("ot_full",)).resolve(3)
    with pytest.raises(ValueError, match="select must be one of"):
        CompareSettings(select="refusal").resolve(3)


def test_layer_settings_are_checked(tiny_bridge) -> None:
    assert CompareSettings(layers="middle").resolve(4).layers == [2]
    assert CompareSettings(layers="auto").resolve(4).layers == "auto"
    assert CompareSettings().resolve(4).layers == "judged"  # chosen later, on validation
    with pytest.raises(ValueError, match="'auto', 'middle' or 'judged'"):
        CompareSettings(layers="deepest").resolve(4)
    with pytest.raises(ValueError, match="layers is empty"):
        CompareSettings(layers=[]).resolve(4)
    with pytest.raises(ValueError, match="must be resolved first"):
        fit_methods(tiny_bridge, HARMFUL, HARMLESS, CompareSettings().resolve(3), progress=False)


def test_match_measure_and_threshold_are_checked() -> None:
    assert CompareSettings().match_measure == "mean"  # the default is unchanged
    assert CompareSettings().kl_threshold == KL_THRESHOLD
    with pytest.raises(ValueError, match="match_measure"):
        CompareSettings(match_measure="p99")
    with pytest.raises(ValueError, match="share of prompts"):
        CompareSettings(match_measure="share_above", match_kl=2.0)
    CompareSettings(match_measure="share_above", match_kl=0.5)
    with pytest.raises(ValueError, match="kl_threshold"):
        CompareSettings(kl_threshold=-1.0)
    with pytest.raises(ValueError, match="gate_neighbours"):
        CompareSettings(gate_neighbours=-1)
    with pytest.raises(ValueError, match="n_xstest"):
        CompareSettings(n_xstest=0)
    with pytest.raises(ValueError, match="match_measure"):
        SweepSettings(match_measure="max")
    with pytest.raises(ValueError, match="share of prompts"):
        SweepSettings(match_measure="share_above", kl_budget=3.0)


def test_judged_is_a_compare_choice_only() -> None:
    check_layer_spec("judged", judged=True)
    with pytest.raises(ValueError, match="chosen by compare"):
        check_layer_spec("judged")
    with pytest.raises(ValueError, match="chosen by compare"):
        FitSettings(layers="judged")
    # The default; with nothing selective to judge, the (unused) layers fall back to "auto".
    assert CompareSettings().layers == "judged"
    assert CompareSettings.preset("quick").layers == "auto"
    alone = CompareSettings(methods=("direction_ablation",))
    assert alone.judged_method is None and alone.resolve(4).layers == "auto"
    others = ("direction_ablation", "ot_full", "mean_shift")
    assert CompareSettings(layers="judged", methods=others).judged_method == "mean_shift"
    assert CompareSettings(layers="judged").judged_method == "ot_selective"


def test_settings_check_the_judged_fields() -> None:
    with pytest.raises(ValueError, match="judge must be one of"):
        SweepSettings(judge="llm")
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        SweepSettings(max_new_tokens=0)
    assert SweepSettings.preset("quick").max_new_tokens == 48


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
