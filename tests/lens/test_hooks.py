"""Interventions as TL hooks (``lens.hooks``): exactness, lifecycle, composition, cached
generation, patching, dtypes and devices."""

import pytest
import torch
import transformer_lens.patching as patching

import tl_ot_ablation as tlo
from tests.helpers import DEVICES, HARMFUL, HARMLESS, device_classes
from tl_ot_ablation import (
    CollectOptions,
    DirectionAblation,
    GaussianOTMap,
    GenerationOptions,
    InterventionSet,
    as_hook,
    collect_activations,
    fwd_hooks,
    generate,
)
from tl_ot_ablation.lens.collect import prepare_tokens
from tl_ot_ablation.lens.tiny import tiny_model

QUIET_GENERATION = GenerationOptions(progress=False)

HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def fitted(tiny_bridge) -> GaussianOTMap:
    src = collect_activations(
        tiny_bridge,
        HARMFUL,
        HOOK,
        CollectOptions(positions="all", progress=False),
    )[HOOK]
    tgt = (
        collect_activations(
            tiny_bridge,
            HARMLESS,
            HOOK,
            CollectOptions(positions="all", progress=False),
        )[HOOK]
        * 1.5
    )
    return GaussianOTMap.fit(src, tgt + 0.3, n_components=8)


def _tokens(model):
    return prepare_tokens(model, ["tell me a story", "hi"])


def test_hook_equals_editing_the_cached_activation_and_continuing(tiny_bridge, fitted) -> None:
    ids, mask = _tokens(tiny_bridge)
    _, cache = tiny_bridge.run_with_cache(ids, attention_mask=mask, names_filter=HOOK)
    edited = cache[HOOK].clone()
    edited[:, -4:] = fitted(edited[:, -4:])
    reference = tiny_bridge.run_with_hooks(
        ids, attention_mask=mask, fwd_hooks=[(HOOK, lambda resid, hook: edited)]
    )
    hooked = tiny_bridge.run_with_hooks(
        ids, attention_mask=mask, fwd_hooks=fwd_hooks(fitted, HOOK, positions=slice(-4, None))
    )
    plain = tiny_bridge(ids, attention_mask=mask)
    real = mask.bool()  # pad positions attend to nothing: their logits are not defined
    torch.testing.assert_close(hooked[real], reference[real])
    assert (hooked - plain).abs().max() > 1e-3
    torch.testing.assert_close(hooked[:, :-4][real[:, :-4]], plain[:, :-4][real[:, :-4]])


def test_nothing_stays_attached_after_the_block(tiny_bridge, fitted) -> None:
    ids, mask = _tokens(tiny_bridge)
    with tiny_bridge.hooks(fwd_hooks=fwd_hooks(fitted, HOOK)):
        assert tiny_bridge.list_hooks()
    assert tiny_bridge.list_hooks() == {}
    plain = tiny_bridge(ids, attention_mask=mask)
    with tiny_bridge.hooks(fwd_hooks=fwd_hooks(fitted, HOOK)):
        changed = tiny_bridge(ids, attention_mask=mask)
    torch.testing.assert_close(tiny_bridge(ids, attention_mask=mask), plain)
    assert not torch.allclose(changed, plain)


def test_attach_and_detach(tiny_bridge, fitted) -> None:
    interventions = InterventionSet({HOOK: fitted}, positions="all")
    with pytest.warns(UserWarning, match="every forward pass"):
        interventions.attach(tiny_bridge)
    try:
        assert tiny_bridge.list_hooks()
        with pytest.raises(RuntimeError, match="already attached"):
            interventions.attach(tiny_bridge)
    finally:
        interventions.detach()
    assert tiny_bridge.list_hooks() == {}


def test_composition_follows_list_order(tiny_bridge, fitted) -> None:
    ablation = DirectionAblation(direction=fitted.basis.components[0].float())
    ids, mask = _tokens(tiny_bridge)
    seen = {}

    def spy(resid, hook):
        seen["out"] = resid.clone()

    for order, expected in (
        ([fitted, ablation], lambda x: ablation(fitted(x))),
        ([ablation, fitted], lambda x: fitted(ablation(x))),
    ):
        _, cache = tiny_bridge.run_with_cache(ids, attention_mask=mask, names_filter=HOOK)
        hooks = [pair for item in order for pair in fwd_hooks(item, HOOK)] + [(HOOK, spy)]
        tiny_bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=hooks)
        torch.testing.assert_close(seen["out"], expected(cache[HOOK]))


def test_alias_and_native_names_are_the_same_hook_point(tiny_bridge, fitted) -> None:
    ids, mask = _tokens(tiny_bridge)
    alias = tiny_bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=fwd_hooks(fitted, HOOK))
    native = tiny_bridge.run_with_hooks(
        ids, attention_mask=mask, fwd_hooks=fwd_hooks(fitted, "blocks.1.hook_in")
    )
    torch.testing.assert_close(alias, native)


def test_hook_never_edits_in_place_and_respects_positions(fitted) -> None:
    resid = torch.randn(2, 9, 32)
    before = resid.clone()
    hook = as_hook(fitted, positions="post_instruction", n_post_instruction=3)
    out = hook(resid, hook=None)
    assert torch.equal(resid, before)
    assert torch.equal(out[:, :6], resid[:, :6])
    torch.testing.assert_close(out[:, 6:], fitted(resid[:, 6:]))
    # A single-token pass (one generated token with the KV cache) is always edited.
    torch.testing.assert_close(hook(resid[:, :1], hook=None), fitted(resid[:, :1]))


def test_bad_positions(fitted, as_user) -> None:
    with pytest.raises(ValueError, match="n_post_instruction"):
        as_hook(fitted, positions="post_instruction")
    with pytest.raises(ValueError, match="positions must be"):
        as_hook(fitted, positions="middle")


def test_shape_mismatch_is_caught(tiny_bridge) -> None:
    wrong = DirectionAblation(direction=torch.ones(7) / 7**0.5)
    ids, mask = _tokens(tiny_bridge)
    with pytest.raises(Exception, match="d_model"):
        tiny_bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=fwd_hooks(wrong, HOOK))


def _greedy_without_cache(model, prompts, hooks, n_tokens):
    """Reference decoder: a full forward pass per new token, no KV cache."""
    ids, mask = prepare_tokens(model, prompts)
    out = []
    with model.hooks(fwd_hooks=hooks):
        for _ in range(n_tokens):
            logits = model(ids, attention_mask=mask)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt)
            ids = torch.cat([ids, nxt], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return model.tokenizer.batch_decode(torch.cat(out, 1), skip_special_tokens=True)


def test_cached_generation_equals_uncached_reference(tiny_bridge, fitted) -> None:
    """Catches the TL 4.3 + transformers 5.24 KV-cache bug, with and without hooks."""
    prompts = ["tell me a story", "hi"]
    for hooks in ([], fwd_hooks(fitted, HOOK, positions=slice(1, None))):
        cached = generate(
            tiny_bridge,
            prompts,
            fwd_hooks=hooks,
            max_new_tokens=6,
            options=QUIET_GENERATION,
        )
        assert cached == _greedy_without_cache(tiny_bridge, prompts, hooks, 6)


def test_hooks_change_generation(tiny_bridge, fitted) -> None:
    prompts = ["tell me a story", "hi", "bake a cake"]
    plain = generate(
        tiny_bridge,
        prompts,
        max_new_tokens=8,
        options=QUIET_GENERATION,
    )
    strong = InterventionSet({HOOK: fitted.inverse()}, positions="all").fwd_hooks()
    hooked = generate(
        tiny_bridge,
        prompts,
        fwd_hooks=strong,
        max_new_tokens=8,
        options=QUIET_GENERATION,
    )
    assert hooked != plain
    assert tiny_bridge.list_hooks() == {}


def test_patching_the_transported_activation_into_a_clean_run(tiny_bridge, fitted) -> None:
    """TL's patching utilities see the transported activations like any other cache entry."""
    ids, _ = prepare_tokens(tiny_bridge, ["tell me a story"])
    hooks = fwd_hooks(fitted, HOOK, positions="last")  # only the last position is transported
    with tiny_bridge.hooks(fwd_hooks=hooks):
        hooked_logits, transported = tiny_bridge.run_with_cache(
            ids, names_filter=lambda n: "resid_pre" in n
        )
    plain_logits = tiny_bridge(ids)

    def metric(logits):
        return logits[0, -1].log_softmax(-1)[hooked_logits[0, -1].argmax()]

    result = patching.get_act_patch_resid_pre(tiny_bridge, ids, transported, metric)
    assert result.shape == (tiny_bridge.cfg.n_layers, ids.shape[1])
    # Patching the last position of layer 2's input with the transported run's value reproduces
    # the hooked run exactly: every earlier position is the same in both runs.
    torch.testing.assert_close(result[2, -1], metric(hooked_logits), rtol=1e-5, atol=1e-5)
    assert not torch.isclose(result[2, -1], metric(plain_logits), atol=1e-3)
    # Before the hooked layer the caches agree, so patching changes nothing.
    torch.testing.assert_close(
        result[0], metric(plain_logits).expand(ids.shape[1]), rtol=1e-5, atol=1e-5
    )


def test_bf16_model_computes_stably_and_returns_bf16() -> None:

    model = tiny_model(dtype=torch.bfloat16)
    src = collect_activations(
        model,
        HARMFUL,
        HOOK,
        CollectOptions(positions="all", progress=False),
    )[HOOK]
    tgt = collect_activations(
        model,
        HARMLESS,
        HOOK,
        CollectOptions(positions="all", progress=False),
    )[HOOK]
    assert src.dtype == torch.float32
    fitted_map = GaussianOTMap.fit(src, tgt, n_components=8)
    seen = {}

    def spy(resid, hook):
        seen["dtype"] = resid.dtype
        seen["finite"] = bool(torch.isfinite(resid).all())

    ids, mask = prepare_tokens(model, HARMFUL)
    logits = model.run_with_hooks(
        ids, attention_mask=mask, fwd_hooks=[*fwd_hooks(fitted_map, HOOK), (HOOK, spy)]
    )
    assert seen == {"dtype": torch.bfloat16, "finite": True}
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("device", DEVICES)
def test_a_hook_moves_a_cpu_map_once_and_keeps_the_activation_dtype(device: str) -> None:
    source, target = device_classes("cpu")
    fitted = tlo.GaussianOTMap.fit(source[0], target[0], n_components=4)
    hook = tlo.as_hook(fitted)
    resid = source[0, :6].reshape(2, 3, -1).to(device=device, dtype=torch.bfloat16)
    out = hook(resid, hook=None)
    assert out.device == resid.device and out.dtype == torch.bfloat16
    assert list(hook._placed) == [resid.device]
    torch.testing.assert_close(
        out.float().cpu(), fitted(resid.float().cpu()).bfloat16().float(), rtol=0.02, atol=0.05
    )
