"""The choices compare makes (``eval.choices``): with ``layers="judged"`` the selective layer is
chosen by judged compliance on validation prompts."""

import json
from pathlib import Path

import pytest

import tl_ot_ablation as tlo
from tests.helpers import HARMFUL, HARMLESS, HELD_OUT, VALIDATION
from tl_ot_ablation.eval.common import at_strength
from tl_ot_ablation.eval.compare import comparison_record, run_comparison
from tl_ot_ablation.eval.selection import best_trial, judged_candidates
from tl_ot_ablation.eval.settings import CompareSettings
from tl_ot_ablation.lens.collect import layer_of


def test_judging_layers_needs_validation_prompts(tiny_bridge) -> None:
    settings = CompareSettings.preset(n_components=4, layers="judged", match_kl=None, select="kl")
    with pytest.raises(ValueError, match=r"validation prompts disjoint.*layers=.auto. or a list"):
        run_comparison(tiny_bridge, HARMFUL, HARMLESS, HELD_OUT, settings, progress=False)


@pytest.fixture(scope="module")
def judged(tiny_bridge):
    settings = CompareSettings.preset(
        n_components=4,
        layers="judged",
        max_new_tokens=3,
        batch_size=4,
        bisection_steps=2,
        strength_fractions=(0.5, 1.0),
        n_questions=0,
        detect=False,
    )
    comparison = run_comparison(
        tiny_bridge, HARMFUL, HARMLESS, HELD_OUT, settings, validation=VALIDATION, progress=False
    )
    return comparison


def test_compare_tries_each_candidate_and_keeps_the_most_compliant(judged, tiny_bridge) -> None:
    assert judged.layer_choice == "judged"
    trials = judged.layer_trials
    assert [t["layer"] for t in trials] == judged_candidates(3, judged.w2_by_layer)
    assert judged.settings.layers == [best_trial(trials)["layer"]]
    # Every trial is at its KL ceiling within direction ablation's validation KL (the budget
    # the strength search then uses too), and the whole map, not part of it, is on that layer.
    ablation = judged.results["direction_ablation"].choice
    [budget] = [p.kl for p in ablation.points if p.strength == 1.0]
    ot = judged.results["ot_selective"]
    assert ot.match is not None and ot.match.budget == pytest.approx(budget)
    for t in trials:
        assert 0 <= t["kl"] <= budget * (1 + 1e-6)
        assert t["compliance"] is None or 0 <= t["compliance"] <= 1
    hooked = {name for name, _ in judged.interventions["ot_selective"].items()}
    assert hooked == {f"blocks.{judged.settings.layers[0]}.hook_resid_pre"}


def test_a_trial_is_what_the_public_api_gives_at_that_layer(judged, tiny_bridge) -> None:
    """The chosen layer's trial, redone by hand: the same fit, strength, completions and
    judge give the same compliance share."""
    trial = best_trial(judged.layer_trials)
    fitted = tlo.fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[trial["layer"]],
        spec=judged.settings.map,
        collect=judged.settings.collecting(progress=False),
    )
    edited = at_strength(fitted, trial["strength"])
    said = tlo.generate(
        tiny_bridge,
        VALIDATION.harmful,
        fwd_hooks=edited.fwd_hooks(),
        max_new_tokens=3,
        options=tlo.GenerationOptions(batch_size=4, progress=False),
    )
    labels = tlo.judge(VALIDATION.harmful, said, progress=False)
    for label in tlo.metrics.LABELS:
        assert trial[label] == sum(x == label for x in labels) / len(labels), label


def test_the_layer_the_judge_prefers_wins_over_a_cheaper_one(tiny_bridge, monkeypatch) -> None:
    """A judge that finds only layer 2's map compliant: compare must pick 2, though the map
    there costs more KL than at layer 1 (the tiny model's maps all read as degenerate, so the
    real judge cannot tell its layers apart)."""
    from tl_ot_ablation.eval import validation as measurements

    def judged_completions(model, interventions, harmful, settings):
        names = [] if interventions is None else [name for name, _ in interventions.items()]
        complies = any(layer_of(name) == 2 for name in names)
        return ["compliance" if complies else "deflection" for _ in harmful]

    monkeypatch.setattr(measurements, "judged_completions", judged_completions)
    settings = CompareSettings.preset(
        n_components=4, layers="judged", max_new_tokens=2, bisection_steps=1, n_questions=0
    )
    result = run_comparison(
        tiny_bridge, HARMFUL, HARMLESS, HELD_OUT, settings, validation=VALIDATION, progress=False
    )
    by_layer = {t["layer"]: t for t in result.layer_trials}
    assert by_layer[2]["compliance"] == 1.0 and by_layer[1]["compliance"] == 0.0
    assert by_layer[2]["kl"] > by_layer[1]["kl"]
    assert result.settings.layers == [2]


def _record(judged):
    """The ``results.json`` record of the ``judged`` comparison."""
    return comparison_record(
        judged,
        model_name="tiny",
        train={"harmful": HARMFUL, "harmless": HARMLESS},
        held_out=HELD_OUT,
        validation=VALIDATION,
    )


def test_the_trials_are_recorded_and_reported(judged, tmp_path: Path) -> None:
    record = _record(judged)
    data = json.loads(json.dumps(record.to_json()))
    assert data["layer_choice"] == "judged"
    assert data["layer_trials"] == judged.layer_trials
    assert type(record).from_json(data).layer_trials == judged.layer_trials


def test_stopping_early_keeps_the_judged_layer_and_decodes_less(tiny_bridge, monkeypatch) -> None:
    """Candidates judged one prompt at a time stop once they cannot beat the best so far; the
    layer, and its trial, are the ones judging every prompt gives."""
    from tl_ot_ablation.eval import choices
    from tl_ot_ablation.eval import validation as measurements

    complying = {0: 1, 1: 2, 2: 6}  # compliant validation answers of 6, by the map's layer
    decoded: list[int] = []

    def judged_completions(model, interventions, harmful, settings):
        names = [] if interventions is None else [name for name, _ in interventions.items()]
        [layer] = {layer_of(name) for name in names} or {None}
        decoded.append(len(harmful))
        index = [validation.harmful.index(prompt) for prompt in harmful]
        return ["compliance" if i < complying.get(layer, 0) else "refusal" for i in index]

    monkeypatch.setattr(measurements, "judged_completions", judged_completions)
    validation = tlo.ValidationPrompts(
        [f"harmful request {i}" for i in range(6)], list(VALIDATION.harmless)
    )
    base = CompareSettings.preset(n_components=4, max_new_tokens=2, bisection_steps=1)
    runs = {}
    for group in (None, 1):
        decoded.clear()
        settings = base.with_changes(early_stop=group)
        choice = choices.choose_layer(
            tiny_bridge, HARMFUL, HARMLESS, validation, settings, progress=False
        )
        runs[group] = (choice, sum(decoded))
    (every, decoded_every), (early, decoded_early) = runs[None], runs[1]
    assert every.layers == early.layers == [2]
    by_layer = {t["layer"]: t for t in early.trials}
    assert by_layer[2]["compliance"] == 1.0 and by_layer[2]["judged_prompts"] is None
    stopped = [t for t in early.trials if t["judged_prompts"] is not None]
    assert stopped and all(t["judged_prompts"] < 6 for t in stopped)
    assert decoded_early < decoded_every == 6 * len(every.trials)
    # The screen ran (refusal log-odds recorded) only where candidates can stop.
    assert all("refusal_log_odds" in t for t in early.trials)
    assert not any("refusal_log_odds" in t for t in every.trials)


def test_the_report_shows_which_trials_stopped_early(judged) -> None:
    """A stopped trial's shares are of the prompts judged: the report says how many."""
    import dataclasses

    from tl_ot_ablation.eval.report_sections import layer_trial_lines

    record = _record(judged)
    first, *rest = record.layer_trials
    trials = [{**first, "judged_prompts": 1, "refusal_log_odds": 0.5}, *rest]
    text = "\n".join(layer_trial_lines(dataclasses.replace(record, layer_trials=trials)))
    assert "prompts judged" in text and "refusal log-odds (screen)" in text
    rows = [line for line in text.splitlines() if line.startswith(f"| {first['layer']} ")]
    assert len(rows) == 1 and rows[0].rstrip(" |").endswith("| 1") and "0.50" in rows[0]
    every = [{k: v for k, v in t.items() if k != "refusal_log_odds"} for t in record.layer_trials]
    plain = "\n".join(layer_trial_lines(dataclasses.replace(record, layer_trials=every)))
    assert "prompts judged" not in plain and "stopped early" not in plain
