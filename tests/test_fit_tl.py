"""Model-level fitting: OT ablation per layer (sequential or not), direction ablation, ActAdd."""

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import HARMFUL, HARMLESS

from tl_ot_ablation import (
    PLAIN_MAP,
    RECOMMENDED_MAP,
    CollectOptions,
    DirectionAblation,
    GaussianOTMap,
    GaussianStats,
    InterventionSet,
    Placement,
    collect_stats,
    fit_actadd,
    fit_direction_ablation,
    fit_ot_ablation,
)
from tl_ot_ablation.lens import training
from tl_ot_ablation.lens.chat_template import post_instruction_length

QUIET = CollectOptions(progress=False)


def test_one_map_per_layer_with_recorded_settings(tiny_bridge) -> None:
    # Not layer 0: its post-instruction rows are the same for every prompt (a refused fit).
    fitted = fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[2, 1],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=6),
        collect=QUIET,
    )
    assert list(fitted) == ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]
    assert all(isinstance(m, GaussianOTMap) and m.n_components == 6 for m in fitted.values())
    meta = fitted.metadata
    assert meta["layers"] == [1, 2] and meta["n_components"] == 6 and meta["d_model"] == 32
    assert meta["positions"] == "post_instruction" and len(meta["prompts_sha256"]) == 16
    assert fitted.positions == "post_instruction" and fitted.n_post_instruction == 13


def test_sequential_fit_sees_the_earlier_maps(tiny_bridge) -> None:
    # Not layer 0: its post-instruction rows are the template's token embeddings, identical for
    # every prompt, so the map there would be the identity.
    kwargs = {
        "layers": [1, 2],
        "spec": dataclasses.replace(PLAIN_MAP, n_components=6, reg=0.01),
        "collect": QUIET,
    }
    sequential = fit_ot_ablation(
        tiny_bridge, HARMFUL, HARMLESS, placement=Placement(sequential=True), **kwargs
    )
    independent = fit_ot_ablation(
        tiny_bridge, HARMFUL, HARMLESS, placement=Placement(sequential=False), **kwargs
    )
    first, second = "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"
    torch.testing.assert_close(sequential[first].matrix, independent[first].matrix)
    assert not torch.allclose(sequential[second].mean_source, independent[second].mean_source)
    # The second map was fitted on activations that passed through the first map.
    earlier = InterventionSet(
        {first: sequential[first]}, positions="post_instruction", n_post_instruction=13
    )
    source = collect_stats(
        tiny_bridge,
        HARMFUL,
        second,
        QUIET,
        fwd_hooks=earlier.fwd_hooks(),
    )[second]
    target = collect_stats(
        tiny_bridge,
        HARMLESS,
        second,
        QUIET,
        fwd_hooks=earlier.fwd_hooks(),
    )[second]
    expected = GaussianOTMap.from_stats(source, target, n_components=6, reg=0.01)
    x = torch.randn(4, 32)
    torch.testing.assert_close(sequential[second](x), expected(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["mean_shift", "per_neuron_ot"])
def test_other_layerwise_methods(tiny_bridge, method: str) -> None:
    fitted = fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(RECOMMENDED_MAP, kind=method, n_components=8),
        collect=QUIET,
    )
    assert fitted.metadata["method"] == method


def test_direction_ablation_is_projected_out_everywhere(tiny_bridge) -> None:
    fitted = fit_direction_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layer=1,
        collect=QUIET,
    )
    assert len(fitted) == 3 * tiny_bridge.cfg.n_layers and fitted.positions == "all"
    directions = {id(v) for v in fitted.values()}
    assert len(directions) == 1  # one direction shared by every hook point
    name = "blocks.1.hook_resid_pre"
    src = collect_stats(tiny_bridge, HARMFUL, name, QUIET)[name]
    tgt = collect_stats(tiny_bridge, HARMLESS, name, QUIET)[name]
    expected = DirectionAblation.from_stats(src, tgt).direction
    torch.testing.assert_close(fitted[name].direction, expected)
    seen = {}

    def spy(resid, hook):
        seen[hook.name] = (resid @ expected).abs().max().item()

    ids = tiny_bridge.tokenizer(["hello there"], return_tensors="pt")["input_ids"]
    spies = [(f"blocks.{i}.hook_resid_post", spy) for i in range(3)]
    tiny_bridge.run_with_hooks(ids, fwd_hooks=fitted.fwd_hooks() + spies)
    assert max(seen.values()) < 1e-4


def test_actadd_at_one_layer(tiny_bridge) -> None:
    fitted = fit_actadd(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layer=2,
        coefficient=2.0,
        collect=QUIET,
    )
    assert list(fitted) == ["blocks.2.hook_resid_pre"] and fitted.strength == 2.0


def test_save_load_round_trip_and_model_checks(tiny_bridge, tmp_path: Path) -> None:
    from tl_ot_ablation.lens.testing import tiny_model

    fitted = fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[2],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=4),
        collect=QUIET,
    )
    folder = fitted.save(tmp_path / "set")
    loaded = InterventionSet.load(folder, model=tiny_bridge)
    assert loaded.metadata == fitted.metadata and loaded.positions == fitted.positions
    ids = tiny_bridge.tokenizer(["hello there friend"], return_tensors="pt")["input_ids"]
    a = tiny_bridge.run_with_hooks(ids, fwd_hooks=fitted.fwd_hooks(positions="all"))
    b = tiny_bridge.run_with_hooks(ids, fwd_hooks=loaded.fwd_hooks(positions="all"))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="d_model=32; this model has d_model=48"):
        InterventionSet.load(folder, model=tiny_model(d_model=48))
    with pytest.raises(ValueError, match="hook layer 2; this model has only 2 layers"):
        InterventionSet.load(folder, model=tiny_model(n_layers=2))


def test_direction_ablation_set_saves_its_shared_direction_once(
    tiny_bridge, tmp_path: Path
) -> None:
    fitted = fit_direction_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layer=1,
        collect=QUIET,
    )
    folder = fitted.save(tmp_path / "da")
    assert len(list(folder.glob("intervention_*"))) == 1
    loaded = InterventionSet.load(folder)
    assert len({id(v) for v in loaded.values()}) == 1 and len(loaded) == len(fitted)


def test_with_strength_applies_to_every_intervention(tiny_bridge) -> None:
    fitted = fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1, 2],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=8),
        collect=QUIET,
    )
    half = fitted.with_strength(0.5)
    assert half.strength == 0.5 and fitted.strength == 1.0


class TestBadInput:
    def test_layer_out_of_range(self, tiny_bridge) -> None:
        with pytest.raises(
            ValueError, match=r"layer\(s\) \[3\] out of range: this model has layers 0..2"
        ):
            fit_ot_ablation(
                tiny_bridge,
                HARMFUL,
                HARMLESS,
                layers=[3],
                collect=QUIET,
            )

    def test_no_layers(self, tiny_bridge) -> None:
        with pytest.raises(ValueError, match="layers is empty"):
            fit_ot_ablation(
                tiny_bridge,
                HARMFUL,
                HARMLESS,
                layers=[],
                collect=QUIET,
            )

    def test_empty_prompts(self, tiny_bridge) -> None:
        with pytest.raises(ValueError, match="prompt list is empty"):
            fit_direction_ablation(
                tiny_bridge,
                [],
                HARMLESS,
                layer=0,
                collect=QUIET,
            )

    def test_not_a_saved_set(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="not a saved InterventionSet"):
            InterventionSet.load(tmp_path)


def test_identical_means_give_a_clear_error(tiny_bridge) -> None:
    # At layer 0 the post-instruction rows are the same template embeddings for every prompt.
    with pytest.raises(ValueError, match="means are identical"):
        fit_direction_ablation(
            tiny_bridge,
            HARMFUL,
            HARMLESS,
            layer=0,
            collect=QUIET,
        )


def test_stats_streaming_matches_rows_for_the_fit(tiny_bridge) -> None:
    name = "blocks.1.hook_resid_pre"
    streamed = collect_stats(
        tiny_bridge,
        HARMFUL,
        name,
        CollectOptions(batch_size=2, progress=False),
    )[name]
    assert isinstance(streamed, GaussianStats) and streamed.count == len(HARMFUL) * 13


def test_top_level_save_and_load_handle_intervention_sets(tiny_bridge, tmp_path: Path) -> None:
    import tl_ot_ablation as tlo

    fitted = fit_actadd(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layer=2,
        collect=QUIET,
    )
    loaded = tlo.load(tlo.save(fitted, tmp_path / "set"))
    assert isinstance(loaded, InterventionSet) and list(loaded) == list(fitted)


def test_training_activations_keep_rows_and_cached_rows_replace_the_pass(
    tiny_bridge, monkeypatch
) -> None:
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(3)]
    options = CollectOptions(positions="post_instruction", batch_size=4, progress=False)
    streamed = training.collect_training(tiny_bridge, HARMFUL, HARMLESS, names, options)
    kept = training.collect_training(tiny_bridge, HARMFUL, HARMLESS, names, options, keep_rows=True)
    assert streamed.rows is None and kept.rows is not None
    for side in range(2):
        for name in names:
            assert kept.rows[side][name].shape[0] == kept.stats[side][name].count
            torch.testing.assert_close(kept.stats[side][name].cov, streamed.stats[side][name].cov)
    spec = dataclasses.replace(RECOMMENDED_MAP, n_components=4, estimator="ledoit_wolf")
    fit = {"layers": [1, 2], "spec": spec, "collect": QUIET}
    together, one_by_one = Placement(sequential=False), Placement(sequential=True)
    fresh = fit_ot_ablation(tiny_bridge, HARMFUL, HARMLESS, placement=together, **fit)

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the cached rows should have replaced this pass")

    monkeypatch.setattr(training, "collect_activations", no_second_pass)
    cached = fit_ot_ablation(
        tiny_bridge, HARMFUL, HARMLESS, placement=together, training=kept, **fit
    )
    for name in ("blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"):
        torch.testing.assert_close(cached[name].matrix, fresh[name].matrix)
    # A sequential fit's second layer sees transported activations, so it must not use them.
    with pytest.raises(AssertionError, match="cached rows"):
        fit_ot_ablation(tiny_bridge, HARMFUL, HARMLESS, placement=one_by_one, training=kept, **fit)
    # Activations of other prompts (or positions) cannot stand in: the fingerprint differs.
    with pytest.raises(ValueError, match="fingerprint"):
        fit_ot_ablation(
            tiny_bridge, HARMFUL[:3], HARMLESS, placement=together, training=kept, **fit
        )
    with pytest.raises(ValueError, match="fingerprint"):
        fit_ot_ablation(
            tiny_bridge,
            HARMFUL,
            HARMLESS,
            placement=together,
            training=kept,
            **fit | {"collect": CollectOptions(positions="last", progress=False)},
        )


def test_rows_bytes_counts_float32_rows(tiny_bridge) -> None:
    n_post = post_instruction_length(tiny_bridge.tokenizer)
    d = tiny_bridge.cfg.d_model
    assert training.rows_bytes(tiny_bridge, 10, 3, "post_instruction") == 10 * n_post * 3 * d * 4
    assert training.rows_bytes(tiny_bridge, 10, 3, "last") == 10 * 3 * d * 4
    assert training.rows_bytes(tiny_bridge, 10, 3, "all") is None
