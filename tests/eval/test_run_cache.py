"""``compare`` never decodes the same thing twice: validation measurements are remembered within
a run, and its outputs (validation measurements, every method's held-out evaluation) are kept on
disk between runs; neither changes a number."""

import dataclasses
import json

import pytest
import torch

from tests.helpers import HARMFUL, HARMLESS, HELD_OUT, VALIDATION
from tl_ot_ablation.eval import compare, validation
from tl_ot_ablation.eval.choices import chosen_strength
from tl_ot_ablation.eval.common import at_strength
from tl_ot_ablation.eval.compare import run_comparison
from tl_ot_ablation.eval.fitting import fit_methods
from tl_ot_ablation.eval.methods import COMPARED
from tl_ot_ablation.eval.run_cache import StoredMeasurements, evaluation_inputs
from tl_ot_ablation.eval.settings import CompareSettings
from tl_ot_ablation.eval.validation import validation_reference
from tl_ot_ablation.io.result_cache import META, TENSORS, ResultCache

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = ("none", "direction_ablation", "ot_selective")
SETTINGS = CompareSettings.preset(
    n_components=4,
    layers="judged",
    max_new_tokens=3,
    batch_size=4,
    bisection_steps=2,
    strength_fractions=(0.5, 1.0),
    n_questions=0,
    early_stop=1,  # partial label lists (``None`` for prompts not judged) are stored too
    gate_neighbours=2,
    methods=SHARED,
)
MORE = dataclasses.replace(SETTINGS, methods=(*SHARED, "actadd"))


def _same_results(first, second, names=None) -> None:
    for name in names or list(first.results):
        result, other = first.results[name], second.results[name]
        assert result.completions == other.completions, name
        assert result.strength == other.strength, name
        assert result.metrics == other.metrics, name
        assert result.judged_harmful == other.judged_harmful, name
        assert result.kl_harmless == other.kl_harmless, name
        assert result.harm_scores == other.harm_scores, name
        assert result.to_record().selection == other.to_record().selection, name
        assert result.to_record().gate == other.to_record().gate, name
        assert result.monitor_scores.keys() == other.monitor_scores.keys(), name
        for kind, scores in result.monitor_scores.items():
            for score, values in scores.items():
                assert torch.equal(values, other.monitor_scores[kind][score]), (name, score)
    assert first.settings.layers == second.settings.layers
    assert first.layer_trials == second.layer_trials


@pytest.fixture(scope="module")
def runs(tiny_bridge, tmp_path_factory):
    cache = ResultCache(tmp_path_factory.mktemp("results"))
    checked: list[validation.Validation] = []

    def run(settings=SETTINGS, with_cache=cache, held_out=HELD_OUT):
        return run_comparison(
            tiny_bridge,
            HARMFUL,
            HARMLESS,
            held_out,
            settings,
            validation=VALIDATION,
            progress=False,
            cache=with_cache,
        )

    def kept(*args):  # the run's Validation, to read its reuse count
        checked.append(cached_validation(*args))
        return checked[-1]

    cached_validation = compare.cached_validation
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compare, "cached_validation", kept)
        uncached = run(MORE, with_cache=None)
        first = run()
        second = run(MORE)
    return uncached, first, second, cache, run, checked


def test_a_second_run_with_one_more_method_reads_the_shared_ones_back(runs) -> None:
    uncached, first, second, cache, _, checked = runs
    assert not any("cached" in result.seconds for result in first.results.values())
    for name in SHARED:
        assert second.results[name].seconds["cached"] == 1.0, name
    assert "cached" not in second.results["actadd"].seconds
    assert second.results["ot_selective"].gate is not None  # the gated map's record came back
    assert checked[-1].reused > len(checked[-1].measured) // 2
    assert cache.hits > 10
    _same_results(uncached, first, SHARED)
    _same_results(uncached, second)


def test_a_change_of_prompts_settings_or_fit_misses(runs, tiny_bridge) -> None:
    *_, cache, run, _ = runs
    hits = cache.hits
    rebatched = run(SETTINGS.with_changes(batch_size=2))  # every entry depends on it
    assert cache.hits == hits
    held_out = dataclasses.replace(HELD_OUT, harmful=["rob a bank", "hurt someone badly"])
    longer = dataclasses.replace(SETTINGS, max_new_tokens=4)  # not the validation KLs
    for changed in [rebatched, run(longer), run(held_out=held_out)]:
        assert not any("cached" in method.seconds for method in changed.results.values())
    refit = run(SETTINGS.with_changes(reg=SETTINGS.map.reg * 2))
    assert refit.results["none"].seconds["cached"] == 1.0
    assert "cached" not in refit.results["ot_selective"].seconds
    assert evaluation_inputs(tiny_bridge, HELD_OUT, SETTINGS, None) != evaluation_inputs(
        tiny_bridge, HELD_OUT, dataclasses.replace(SETTINGS, seed=1), None
    )


def test_a_corrupted_entry_is_recomputed_with_a_warning(runs) -> None:
    _, first, _, cache, run, _ = runs
    result = first.results["ot_selective"]
    edit = at_strength(first.interventions["ot_selective"], result.strength).fingerprint()
    wanted = {"edit": edit, "tokens": 3, "batch_size": 4, "harmful": HELD_OUT.harmful}
    [entry] = [
        path
        for path in cache.entries()
        if wanted.items() <= json.loads((path / META).read_text())["inputs"].items()
    ]
    tensors = entry / TENSORS
    tensors.write_bytes(tensors.read_bytes()[:-8] + b"corrupt!")
    with pytest.warns(UserWarning, match="corrupted entry"):
        again = run()
    assert "cached" not in again.results["ot_selective"].seconds
    assert again.results["direction_ablation"].seconds["cached"] == 1.0
    _same_results(first, again)


def test_the_layer_search_point_is_not_decoded_again(runs) -> None:
    """The judged layer's trial at its KL ceiling is the strength choice's point at fraction
    1: the run reuses it, and direction ablation's KL at strength 1, instead of decoding."""
    _, first, *_ = runs
    trial = next(t for t in first.layer_trials if t["layer"] == first.settings.layers[0])
    choice = first.results["ot_selective"].choice
    top = next(p for p in choice.points if p.strength == trial["strength"])
    assert top.compliance == trial["compliance"] and top.kl == trial["kl"]


def test_fits_are_fingerprinted_alike_every_time(tiny_bridge) -> None:
    """Equal fits give equal keys: two fresh fits of every method in one process (the global
    seed moved in between) have the same fingerprints."""
    settings = dataclasses.replace(SETTINGS, methods=COMPARED).resolve(tiny_bridge.cfg.n_layers)
    settings = dataclasses.replace(settings, layers=[1])
    once, _ = fit_methods(tiny_bridge, HARMFUL, HARMLESS, settings, progress=False)
    torch.manual_seed(1234)
    twice, _ = fit_methods(tiny_bridge, HARMFUL, HARMLESS, settings, progress=False)
    assert {name: fit.fingerprint() for name, fit in once.items()} == {
        name: fit.fingerprint() for name, fit in twice.items()
    }
    assert None not in {fit.fingerprint() for fit in once.values()}


def test_stored_labels_continue_where_judging_stopped(tiny_bridge, tmp_path, monkeypatch) -> None:
    """A stored partial list answers the same question without decoding, and a stricter one
    decodes only the prompts not yet judged; a fresh run gives the same labels."""
    settings = dataclasses.replace(SETTINGS, layers=[1]).resolve(tiny_bridge.cfg.n_layers)
    fitted, _ = fit_methods(tiny_bridge, HARMFUL, HARMLESS, settings, progress=False)
    edit = fitted["ot_selective"]
    decoded: list[int] = []
    judged = validation.judged_completions

    def counting(model, interventions, harmful, settings):
        decoded.append(len(harmful))
        return judged(model, interventions, harmful, settings)

    monkeypatch.setattr(validation, "judged_completions", counting)
    cache = ResultCache(tmp_path)
    every = validation_reference(tiny_bridge, VALIDATION, settings).labels(
        tiny_bridge, edit, settings
    )
    assert every[0] != "compliance" and decoded == [1, 1]  # the random model's first answer
    decoded.clear()
    need = len(VALIDATION.harmful)  # every prompt compliant: out of reach after the first

    def stored_run():
        checked = validation_reference(tiny_bridge, VALIDATION, settings)
        checked.store = StoredMeasurements.of(cache, tiny_bridge, checked)
        return checked

    partial = stored_run().labels(tiny_bridge, edit, settings, need=need)
    assert None in partial and decoded == [1]
    again = stored_run()
    assert again.labels(tiny_bridge, edit, settings, need=need) == partial
    assert decoded == [1] and again.reused == 1
    full = again.labels(tiny_bridge, edit, settings)
    assert None not in full and full[:1] == partial[:1] and decoded == [1, 1]
    assert full == every
    assert stored_run().labels(tiny_bridge, edit, settings) == full and decoded == [1, 1]


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
