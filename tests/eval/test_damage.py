"""Harmless damage as a distribution and the gate on held-out prompts (``eval.damage``,
``eval.gate_report``), on tiny random-weight models."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import tl_ot_ablation as tlo
from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation import CollectOptions, GenerationOptions
from tl_ot_ablation.eval.common import at_strength
from tl_ot_ablation.eval.compare import comparison_record, run_comparison
from tl_ot_ablation.eval.damage import (
    DAMAGE_METRICS,
    MATCH_MEASURES,
    harmless_damage,
    kl_distribution,
    summarise,
)
from tl_ot_ablation.eval.evaluate import next_token_logprobs
from tl_ot_ablation.eval.gate_report import GateRecorder
from tl_ot_ablation.eval.metrics import Estimate, kl_divergence, statistic_ci
from tl_ot_ablation.eval.prompt_sets import EvalPrompts, ValidationPrompts
from tl_ot_ablation.eval.record import METRICS, CompareRecord
from tl_ot_ablation.eval.report import write_compare_report
from tl_ot_ablation.eval.settings import CompareSettings
from tl_ot_ablation.lens.collect import collect_activations
from tl_ot_ablation.lens.generation import generate_with_first_logprobs

TEXTS = ["The cat sat on the mat and looked out at the rain.", "Bread is made of flour."]
HELD_OUT = EvalPrompts(
    ["rob a bank", "hurt someone"],
    ["plant a tree", "sing a song", "fold a map", "tie a knot"],
    TEXTS[:1],
)
VALIDATION = ValidationPrompts(
    ["burn a house", "forge a cheque"],
    ["fold a shirt", "read a map", "boil an egg", "paint a wall", "walk the dog", "wash a cup"],
)


# --- the distribution and its intervals ------------------------------------------------------


def test_kl_distribution_is_the_statistics_of_the_per_prompt_values() -> None:
    kl = np.array([0.0, 0.001, 0.002, 0.5, 0.03, 0.0, 0.2, 0.004])
    spread = kl_distribution(kl, threshold=0.01)
    assert spread["kl_harmless_median"].value == pytest.approx(np.median(kl))
    assert spread["kl_harmless_p90"].value == pytest.approx(np.quantile(kl, 0.9))
    assert spread["kl_harmless_max"].value == 0.5
    assert spread["kl_harmless_share_above"].value == pytest.approx(3 / 8)
    for estimate in spread.values():
        assert estimate.ci_low <= estimate.value <= estimate.ci_high
    assert spread["kl_harmless_max"].ci_high == 0.5  # a resampled max never exceeds the sample's
    for measure, key in (("median", "kl_harmless_median"), ("p90", "kl_harmless_p90")):
        assert summarise(kl, measure) == pytest.approx(spread[key].value)
    assert summarise(kl, "share_above", 0.01) == pytest.approx(3 / 8)
    assert summarise(kl, "mean") == pytest.approx(kl.mean())


def test_a_constant_sample_has_a_zero_width_interval_and_bad_input_raises() -> None:
    assert statistic_ci([0.2, 0.2, 0.2], np.median) == Estimate(0.2, 0.2, 0.2)
    with pytest.raises(ValueError, match="non-empty"):
        statistic_ci([], np.median)
    with pytest.raises(ValueError, match="match_measure"):
        summarise([0.1], "mode")


def test_identical_and_changed_shares_compare_with_the_unmodified_model() -> None:
    damage = harmless_damage(
        torch.tensor([0.0, 0.2, 0.0, 0.05]),
        ["a", "b", "c", "d"],
        ["a", "x", "c", "y"],
        ["compliance", "compliance", "refusal", "compliance"],
        ["compliance", "refusal", "refusal", "compliance"],
    )
    assert set(damage) == set(DAMAGE_METRICS) <= set(METRICS)
    assert damage["identical_rate_harmless"].value == 0.5
    assert damage["label_changed_rate_harmless"].value == 0.25
    assert damage["kl_harmless_share_above"].value == 0.5  # 0.2 and 0.05 exceed 0.01
    with pytest.raises(ValueError, match="same prompts"):
        harmless_damage(torch.zeros(2), ["a"], ["a"], ["compliance"], ["compliance"])


# --- compare on the tiny model ---------------------------------------------------------------


def _settings(**changes) -> CompareSettings:
    base = {
        "layers": "auto",
        "n_components": 4,
        "max_new_tokens": 3,
        "batch_size": 4,
        "bisection_steps": 3,
        "select": "kl",
        "methods": ("direction_ablation", "ot_selective"),
        "judge": "markers",
        "n_questions": 0,
        "detect": False,
        "gate_neighbours": 2,
    }
    return CompareSettings.preset(**{**base, **changes})


@pytest.fixture(scope="module")
def by_measure(tiny_bridge):
    """Direction ablation sets the budget, in the mean and in the 90th percentile."""
    return {
        measure: run_comparison(
            tiny_bridge,
            HARMFUL,
            HARMLESS,
            HELD_OUT,
            _settings(match_measure=measure),
            validation=VALIDATION,
            progress=False,
        )
        for measure in ("mean", "p90")
    }


def test_every_method_reports_the_damage_distribution(by_measure) -> None:
    comparison = by_measure["mean"]
    record = comparison_record(
        comparison,
        model_name="tiny",
        train={"harmful": HARMFUL, "harmless": HARMLESS},
        held_out=HELD_OUT,
        validation=VALIDATION,
    )
    for name, method in record.methods.items():
        kl = method.kl_harmless_per_prompt
        assert len(kl) == len(HELD_OUT.harmless)
        assert method.metrics["kl_harmless"].value == pytest.approx(np.mean(kl), rel=1e-4, abs=1e-9)
        assert method.metrics["kl_harmless_median"].value == pytest.approx(
            np.median(kl), rel=1e-4, abs=1e-9
        )
        assert set(DAMAGE_METRICS) <= set(method.metrics)
        assert len(method.judged_harmless) == len(HELD_OUT.harmless)
        if name == "none":
            assert method.metrics["identical_rate_harmless"].value == 1.0
            assert method.metrics["label_changed_rate_harmless"].value == 0.0
            assert kl == [0.0] * len(kl)
    again = CompareRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again.methods["ot_selective"].kl_harmless_per_prompt == (
        record.methods["ot_selective"].kl_harmless_per_prompt
    )


def _validation_kl(model, comparison, name: str) -> np.ndarray:
    """The validation harmless prompts' first-token KL at the method's chosen strength, by
    plain forward passes (not the search's generation passes)."""
    settings = comparison.settings
    fitted = at_strength(comparison.interventions[name], comparison.results[name].strength)
    options = {"batch_size": settings.collect.batch_size, "system": settings.collect.system}
    reference = next_token_logprobs(model, VALIDATION.harmless, **options)
    edited = next_token_logprobs(
        model, VALIDATION.harmless, fwd_hooks=fitted.fwd_hooks(), **options
    )
    return kl_divergence(reference, edited).numpy()


def test_direction_ablation_sets_the_budget_in_the_chosen_measure(by_measure, tiny_bridge) -> None:
    budgets = {}
    for measure, comparison in by_measure.items():
        match = comparison.results["ot_selective"].match
        assert match is not None
        kl = _validation_kl(tiny_bridge, comparison, "direction_ablation")
        assert comparison.results["direction_ablation"].strength == 1.0
        assert match.budget == pytest.approx(summarise(kl, measure), rel=1e-2)
        budgets[measure] = match.budget
    assert budgets["p90"] > budgets["mean"]


@pytest.fixture(scope="module")
def unbounded(tiny_bridge):
    """``ot_selective`` alone at strength 1 (no search, no neighbour pass)."""
    return run_comparison(
        tiny_bridge, HARMFUL, HARMLESS, HELD_OUT,
        _settings(methods=("ot_selective",), match_kl=None, gate_neighbours=0), progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def unbounded_kl(unbounded, tiny_bridge) -> np.ndarray:
    """``ot_selective``'s validation KLs at strength 1, per prompt."""
    return _validation_kl(tiny_bridge, unbounded, "ot_selective")


@pytest.mark.parametrize("measure", MATCH_MEASURES)
def test_the_strength_search_holds_the_chosen_measure_within_the_budget(
    unbounded_kl, tiny_bridge, measure
) -> None:
    """A budget of half what the map costs at strength 1, in each measure: the chosen strength
    drops below 1 and keeps that measure of its validation KLs within the budget."""
    threshold = float(np.median(unbounded_kl))  # half the prompts above it at strength 1
    budget = 0.5 * summarise(unbounded_kl, measure, threshold)
    assert budget > 0
    settings = _settings(
        methods=("ot_selective",),
        match_kl=budget,
        match_measure=measure,
        kl_threshold=threshold,
        bisection_steps=4,
        gate_neighbours=0,
    )
    comparison = run_comparison(
        tiny_bridge, HARMFUL, HARMLESS, HELD_OUT, settings, validation=VALIDATION,
        progress=False,
    )  # fmt: skip
    ot = comparison.results["ot_selective"]
    assert ot.match is not None and ot.match.budget == budget
    assert 0 < ot.strength < 1
    kl = _validation_kl(tiny_bridge, comparison, "ot_selective")
    assert summarise(kl, measure, threshold) <= budget * 1.02
    assert ot.match.damage <= budget


# --- the gate ---------------------------------------------------------------------------------


def test_the_gate_recorder_reads_what_the_gate_reads_and_changes_nothing(tiny_bridge) -> None:
    fitted = tlo.fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1, 2],
        spec=dataclasses.replace(tlo.RECOMMENDED_MAP, n_components=4, gate="posterior"),
        collect=tlo.CollectOptions(progress=False),
    )  # fmt: skip
    recorder = GateRecorder.for_set(fitted)
    assert recorder is not None and recorder.hook == "blocks.1.hook_resid_pre"
    assert GateRecorder.for_set(fitted.__class__(dict(fitted), positions="all")) is not None
    ablation = tlo.fit_direction_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layer=1,
        collect=tlo.CollectOptions(progress=False),
    )
    assert GateRecorder.for_set(ablation) is None
    options = {"max_new_tokens": 3, "options": GenerationOptions(batch_size=2, progress=False)}
    plain, _ = generate_with_first_logprobs(
        tiny_bridge, HELD_OUT.harmless, fwd_hooks=fitted.fwd_hooks(), **options
    )
    watched, _ = generate_with_first_logprobs(
        tiny_bridge,
        HELD_OUT.harmless,
        fwd_hooks=[*recorder.hooks("harmless"), *fitted.fwd_hooks()],
        **options,
    )
    assert watched == plain
    posterior = recorder.values("harmless")
    assert posterior.shape == (len(HELD_OUT.harmless),)  # one value per prompt, not per token
    rows = collect_activations(
        tiny_bridge,
        HELD_OUT.harmless,
        recorder.hook,
        CollectOptions(positions="last", progress=False),
    )[recorder.hook]
    direct = torch.sigmoid(fitted[recorder.hook].harmful_log_odds(rows).double())
    torch.testing.assert_close(posterior, direct, rtol=1e-4, atol=1e-6)
    assert (recorder.values("harmless", "max") >= posterior - 1e-9).all()


def test_compare_records_the_gate_and_its_nearest_training_prompts(by_measure, tmp_path) -> None:
    comparison = by_measure["mean"]
    ot = comparison.results["ot_selective"]
    assert comparison.results["direction_ablation"].gate is None
    assert ot.gate is not None and "gate_neighbours" in ot.seconds
    record = comparison_record(
        comparison,
        model_name="tiny",
        train={"harmful": HARMFUL, "harmless": HARMLESS},
        held_out=HELD_OUT,
        validation=VALIDATION,
    )
    gate = record.methods["ot_selective"].gate
    assert gate is not None and gate["position"] == "last prompt token"
    assert len(gate["posterior"]["harmless"]) == len(HELD_OUT.harmless)
    assert len(gate["posterior"]["harmful"]) == len(HELD_OUT.harmful)
    assert 0 <= gate["open"]["harmless"]["value"] <= 1
    top = gate["top"]
    assert top and len(top[0]["neighbours"]) == 2
    assert top[0]["posterior"] == max(gate["posterior"]["harmless"])
    assert top[0]["prompt"] in HELD_OUT.harmless
    assert {n["class"] for item in top for n in item["neighbours"]} <= {"harmful", "harmless"}
    folder = write_compare_report(
        tmp_path / "r",
        record,
        {n: r.completions for n, r in comparison.results.items()},
        HELD_OUT.sets(),
    )
    report = (folder / "report.md").read_text()
    assert "## Harmless damage, prompt by prompt" in report
    assert "## The gate on held-out prompts" in report and "(gate.png)" in report
    assert "Median harmless KL" in report  # the verdict line says how the damage is spread
    assert (folder / "gate.png").is_file() and (folder / "frontier.png").is_file()
    assert CompareRecord.read(folder / "results.json").methods["ot_selective"].gate == gate


def test_no_neighbour_pass_when_switched_off(unbounded) -> None:
    ot = unbounded.results["ot_selective"]
    assert ot.gate is not None and ot.gate.top == [] and "gate_neighbours" not in ot.seconds
