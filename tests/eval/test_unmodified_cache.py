"""``compare`` never decodes the same thing twice: validation measurements are remembered within
a run, and the unmodified model's outputs are kept on disk between runs; neither changes a
number."""

import dataclasses

import pytest
import torch

from tests.helpers import HARMFUL, HARMLESS, HELD_OUT, VALIDATION
from tl_ot_ablation.eval.choices import chosen_strength, validation_reference
from tl_ot_ablation.eval.compare import run_comparison
from tl_ot_ablation.eval.fitting import fit_methods
from tl_ot_ablation.eval.settings import CompareSettings
from tl_ot_ablation.eval.unmodified_cache import evaluation_inputs
from tl_ot_ablation.io.result_cache import ResultCache

SETTINGS = CompareSettings.preset(
    n_components=4,
    layers="judged",
    max_new_tokens=3,
    batch_size=4,
    bisection_steps=2,
    strength_fractions=(0.5, 1.0),
    n_questions=0,
    methods=("none", "direction_ablation", "ot_selective"),
)


def _same_results(first, second) -> None:
    assert list(first.results) == list(second.results)
    for name, result in first.results.items():
        other = second.results[name]
        assert result.completions == other.completions, name
        assert result.strength == other.strength, name
        assert result.metrics == other.metrics, name
        assert result.judged_harmful == other.judged_harmful, name
        for kind, scores in result.monitor_scores.items():
            for score, values in scores.items():
                assert torch.equal(values, other.monitor_scores[kind][score]), (name, score)
    assert first.layer_trials == second.layer_trials


@pytest.fixture(scope="module")
def runs(tiny_bridge, tmp_path_factory):
    cache = ResultCache(tmp_path_factory.mktemp("results"))

    def run(settings=SETTINGS, with_cache=cache):
        return run_comparison(
            tiny_bridge,
            HARMFUL,
            HARMLESS,
            HELD_OUT,
            settings,
            validation=VALIDATION,
            progress=False,
            cache=with_cache,
        )

    uncached = run(with_cache=None)
    first = run()
    second = run()
    return uncached, first, second, cache, run


def test_a_second_run_reads_the_unmodified_outputs_and_changes_no_number(runs) -> None:
    uncached, first, second, cache, _ = runs
    assert "cached" not in first.results["none"].seconds
    assert second.results["none"].seconds["cached"] == 1.0
    assert cache.hits >= 3  # the validation reference, its labels and the evaluation
    _same_results(uncached, first)
    _same_results(first, second)


def test_a_changed_setting_misses_the_cache(runs, tiny_bridge) -> None:
    *_, cache, run = runs
    hits = cache.hits
    longer = run(dataclasses.replace(SETTINGS, max_new_tokens=4))
    assert "cached" not in longer.results["none"].seconds
    assert cache.hits == hits
    assert evaluation_inputs(tiny_bridge, HELD_OUT, SETTINGS, None) != evaluation_inputs(
        tiny_bridge, HELD_OUT, dataclasses.replace(SETTINGS, seed=1), None
    )


def test_the_layer_search_point_is_not_decoded_again(runs) -> None:
    """The judged layer's trial at its KL ceiling is the strength choice's point at fraction
    1: the run reuses it, and direction ablation's KL at strength 1, instead of decoding."""
    _, first, *_ = runs
    trial = next(t for t in first.layer_trials if t["layer"] == first.settings.layers[0])
    choice = first.results["ot_selective"].choice
    top = next(p for p in choice.points if p.strength == trial["strength"])
    assert top.compliance == trial["compliance"] and top.kl == trial["kl"]


def test_remembered_measurements_equal_fresh_ones(tiny_bridge) -> None:
    settings = SETTINGS.resolve(tiny_bridge.cfg.n_layers)
    settings = dataclasses.replace(settings, layers=[1])
    fitted, _ = fit_methods(tiny_bridge, HARMFUL, HARMLESS, settings, progress=False)
    checked = validation_reference(tiny_bridge, VALIDATION, settings)
    chosen, once = chosen_strength(tiny_bridge, fitted["ot_selective"], 0.05, checked, settings)
    measured = len(checked.measured)
    again, twice = chosen_strength(tiny_bridge, fitted["ot_selective"], 0.05, checked, settings)
    assert checked.reused >= measured and len(checked.measured) == measured
    fresh = validation_reference(tiny_bridge, VALIDATION, settings)
    _, anew = chosen_strength(tiny_bridge, fitted["ot_selective"], 0.05, fresh, settings)
    assert once == twice == anew
    assert chosen.fingerprint() == again.fingerprint()
