"""Model-level fitting (``lens.fit``): OT ablation per layer (sequential or not, the recommended
map by default, its variants), direction ablation, ActAdd; identical classes refused before any
pass; the same fit on every device."""

import dataclasses
from pathlib import Path

import pytest
import torch

import tl_ot_ablation as tlo
from tests.helpers import DEVICES, HARMFUL, HARMLESS
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
from tl_ot_ablation.core.degeneracy import IdenticalClassesError
from tl_ot_ablation.lens.tiny import tiny_model

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


def test_fit_ot_ablation_fits_the_recommended_map_by_default(tiny_bridge) -> None:
    """It used to fit the plain map, the configuration that wrecks the model at matched KL."""
    fitted = tlo.fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(tlo.RECOMMENDED_MAP, n_components=4),
        collect=tlo.CollectOptions(progress=False),
    )
    [ot] = fitted.values()
    assert ot.gate == "posterior" and fitted.metadata["estimator"] == "ledoit_wolf"
    assert tlo.RECOMMENDED_MAP == tlo.MapSpec(estimator="ledoit_wolf", gate="posterior")
    plain = tlo.fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(tlo.PLAIN_MAP, n_components=4),
        collect=tlo.CollectOptions(progress=False),
    )
    [ot] = plain.values()
    assert ot.gate == "none" and plain.metadata["estimator"] == "ridge"


# --- through fit_ot_ablation on a model ----------------------------------------------------------


def test_fit_ot_ablation_passes_the_variant_options(tiny_bridge) -> None:
    from tests.helpers import HARMFUL, HARMLESS
    from tl_ot_ablation.lens.collect import collect_activations

    fitted = tlo.fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(
            tlo.RECOMMENDED_MAP,
            n_components=4,
            estimator="ledoit_wolf",
            gate="posterior",
            preserve_norm=True,
        ),
        collect=tlo.CollectOptions(progress=False),
    )
    name = "blocks.1.hook_resid_pre"
    fitted_map = fitted[name]
    assert (fitted_map.estimator, fitted_map.gate, fitted_map.preserve_norm) == (
        "ledoit_wolf",
        "posterior",
        True,
    )
    assert fitted.metadata["estimator"] == "ledoit_wolf" and fitted.metadata["gate"] == "posterior"
    # Ledoit-Wolf is fitted from the collected rows, exactly as GaussianOTMap.fit would.
    rows = [
        collect_activations(tiny_bridge, prompts, name, CollectOptions(progress=False))[name]
        for prompts in (HARMFUL, HARMLESS)
    ]
    direct = GaussianOTMap.fit(*rows, n_components=4, estimator="ledoit_wolf", route="rows")
    torch.testing.assert_close(fitted_map.cov_source, direct.cov_source)
    with tiny_bridge.hooks(fwd_hooks=fitted.fwd_hooks()):
        logits = tiny_bridge(tlo.format_chat(tiny_bridge.tokenizer, ["hello"]))
    assert torch.isfinite(logits).all()


def test_model_fits_refuse_identical_prompts_before_any_pass(tiny_bridge, monkeypatch) -> None:
    from tests.helpers import HARMFUL
    from tl_ot_ablation import fit_actadd, fit_direction_ablation, fit_ot_ablation, select_layers
    from tl_ot_ablation.lens import fit as fit_module
    from tl_ot_ablation.lens import training as training_module

    def no_pass(*args, **kwargs):
        raise AssertionError("the prompts were run through the model")

    monkeypatch.setattr(fit_module, "collect_pair", no_pass)
    monkeypatch.setattr(training_module, "collect_training", no_pass)
    quiet = {"progress": False}
    message = "harmful and harmless prompts are the same"
    for harmful, harmless in ((HARMFUL, list(reversed(HARMFUL))), (["x"], ["x"])):
        with pytest.raises(IdenticalClassesError, match=message):
            fit_ot_ablation(
                tiny_bridge,
                harmful,
                harmless,
                layers=[1],
                collect=CollectOptions(progress=False),
            )
        with pytest.raises(IdenticalClassesError, match=message):
            fit_direction_ablation(
                tiny_bridge,
                harmful,
                harmless,
                layer=1,
                collect=CollectOptions(progress=False),
            )
        with pytest.raises(IdenticalClassesError, match=message):
            fit_actadd(
                tiny_bridge,
                harmful,
                harmless,
                layer=1,
                collect=CollectOptions(progress=False),
            )
        with pytest.raises(IdenticalClassesError, match=message):
            select_layers(tiny_bridge, harmful, harmless, **quiet)


def test_a_model_layer_where_the_classes_agree_is_refused_by_name(tiny_bridge) -> None:
    from tests.helpers import HARMFUL, HARMLESS
    from tl_ot_ablation import fit_ot_ablation, select_layers

    # Layer 0 of a rotary model at the post-instruction positions: the template's embeddings,
    # the same rows for every prompt.
    with pytest.raises(IdenticalClassesError, match=r"blocks\.0\.hook_resid_pre: .*later layer"):
        fit_ot_ablation(
            tiny_bridge,
            HARMFUL,
            HARMLESS,
            layers=[0],
            spec=dataclasses.replace(RECOMMENDED_MAP, n_components=4),
            collect=CollectOptions(progress=False),
        )
    kwargs = {"n_components": 4, "progress": False}
    # Among other layers (e.g. a map at every layer), that layer is left out, with a warning.
    with pytest.warns(UserWarning, match=r"no map at blocks\.0\.hook_resid_pre.*identical") as w:
        fitted = fit_ot_ablation(
            tiny_bridge,
            HARMFUL,
            HARMLESS,
            layers=[0, 1],
            spec=dataclasses.replace(RECOMMENDED_MAP, n_components=4),
            collect=CollectOptions(progress=False),
        )
    assert w[0].filename == __file__
    assert list(fitted) == ["blocks.1.hook_resid_pre"]
    assert fitted.metadata["layers"] == [1] and fitted.metadata["identical_layers"] == [0]
    assert 0 not in select_layers(tiny_bridge, HARMFUL, HARMLESS, count=2, **kwargs)
    with pytest.raises(IdenticalClassesError, match="only 2 layer"):
        select_layers(tiny_bridge, HARMFUL, HARMLESS, count=3, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_model_level_fit_and_hooks_on_the_device(device: str) -> None:
    model = tiny_model("qwen2", n_layers=3, d_model=32).to(device)
    stats = tlo.collect_stats(
        model,
        HARMFUL,
        "blocks.1.hook_resid_pre",
        QUIET,
    )
    assert stats["blocks.1.hook_resid_pre"].device.type == torch.device(device).type
    fitted = tlo.fit_ot_ablation(
        model,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(tlo.RECOMMENDED_MAP, n_components=4, gate="posterior"),
        collect=QUIET,
    )
    tokens = model.to_tokens("hello there", prepend_bos=False).to(device)
    logits = model.run_with_hooks(tokens, fwd_hooks=fitted.fwd_hooks())
    assert logits.device.type == torch.device(device).type
    assert bool(torch.isfinite(logits).all())
