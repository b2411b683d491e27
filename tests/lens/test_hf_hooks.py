"""Plain transformers hooks: the same edits as the TransformerLens hooks, on an un-booted model."""

import dataclasses

import pytest
import torch

from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation import (
    PLAIN_MAP,
    RECOMMENDED_MAP,
    ActAdd,
    CollectOptions,
    GenerationOptions,
    InterventionSet,
    Placement,
    fit_direction_ablation,
    fit_ot_ablation,
)
from tl_ot_ablation.lens.generation import generate, prepare_tokens
from tl_ot_ablation.lens.hf_hooks import decoder_layers, hf_hooks, register_hf_hooks
from tl_ot_ablation.lens.tiny import tiny_hf_model, tiny_model

QUIET = CollectOptions(progress=False)
QUIET_GENERATION = GenerationOptions(progress=False)
PROMPTS = ["how do I bake bread?", "tell me a story about a cat", "hi"]


def _pair(architecture: str, seed: int = 3):
    """A booted bridge and an un-booted plain model with the same weights."""
    bridge = tiny_model(architecture, seed=seed)  # type: ignore[arg-type]
    plain, _ = tiny_hf_model(architecture, seed=seed)  # type: ignore[arg-type]
    return bridge, plain


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _logits_both_ways(bridge, plain, fwd_hooks, hf_context):
    ids, mask = prepare_tokens(bridge, PROMPTS)
    # Left padding: TransformerLens counts positions from the first real token; a plain forward
    # pass counts from the first column unless told (matters for GPT-2's absolute positions).
    inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": _positions(mask)}
    with torch.no_grad():
        tl_logits = bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=fwd_hooks)
        with hf_context:
            hf_logits = plain(**inputs).logits
        baseline = plain(**inputs).logits
    real = mask.bool()  # padded positions are not compared
    return tl_logits[real], hf_logits[real], baseline[real]


def _assert_same_edit(tl_logits, hf_logits, baseline) -> None:
    # float32 through a 3-layer model: both ways run the same kernels up to reassociation.
    torch.testing.assert_close(hf_logits, tl_logits, rtol=1e-4, atol=1e-4)
    # ...and the edit was not the identity (or the comparison above would prove nothing).
    assert (tl_logits - baseline).abs().max() > 1e-2


@pytest.mark.parametrize("architecture", ["qwen2", "gpt2"])
def test_transport_map_gives_the_tl_logits(architecture: str) -> None:
    bridge, plain = _pair(architecture)
    fitted = fit_ot_ablation(
        bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(PLAIN_MAP, n_components=6),
        collect=QUIET,
    )
    fitted = fitted.with_strength(3.0)  # a visible edit on a random model
    _assert_same_edit(*_logits_both_ways(bridge, plain, fitted.fwd_hooks(), fitted.hf_hooks(plain)))


@pytest.mark.parametrize("architecture", ["qwen2", "gpt2"])
def test_direction_ablation_at_every_hook_point_gives_the_tl_logits(architecture: str) -> None:
    """resid_pre, resid_mid and resid_post of every layer: resid_mid is the exact rewrite."""
    bridge, plain = _pair(architecture)
    ablation = fit_direction_ablation(
        bridge,
        HARMFUL,
        HARMLESS,
        layer=1,
        collect=QUIET,
    )
    assert any(name.endswith("hook_resid_mid") for name in ablation)
    _assert_same_edit(
        *_logits_both_ways(bridge, plain, ablation.fwd_hooks(), ablation.hf_hooks(plain))
    )


def test_resid_post_and_composed_sets_give_the_tl_logits() -> None:
    bridge, plain = _pair("qwen2")
    at_post = fit_ot_ablation(
        bridge,
        HARMFUL,
        HARMLESS,
        layers=[0],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=6),
        collect=QUIET,
        placement=Placement(hook="resid_post"),
    ).with_strength(3.0)
    at_pre = fit_ot_ablation(
        bridge,
        HARMFUL,
        HARMLESS,
        layers=[2],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=6),
        collect=QUIET,
    )
    hooks = at_post.fwd_hooks() + at_pre.with_strength(3.0).fwd_hooks()
    handles = register_hf_hooks(plain, hooks)
    try:
        tl_logits, hf_logits, _hooked = _logits_both_ways(bridge, plain, hooks, torch.no_grad())
    finally:
        handles.remove()
    # The baseline above ran with the hooks on: compare against a hook-free pass instead.
    ids, mask = prepare_tokens(bridge, PROMPTS)
    with torch.no_grad():
        clean = plain(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)).logits
    clean = clean[mask.bool()]
    _assert_same_edit(tl_logits, hf_logits, clean)


def test_generate_under_hf_hooks_matches_tl_generation() -> None:
    """Cached generation: the hooks edit every single-token pass, as TransformerLens's do."""
    bridge, plain = _pair("qwen2")
    fitted = fit_ot_ablation(
        bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=6),
        collect=QUIET,
    )
    # A random model greedily repeats one token; push its last layer towards "Z" so the
    # generated text shows whether the edit ran at every step.
    z = bridge.tokenizer.convert_tokens_to_ids("Z")
    push = ActAdd(vector=8 * plain.get_output_embeddings().weight[z].detach())
    steer = InterventionSet({"blocks.2.hook_resid_post": push}, positions="last")
    hooks = fitted.with_strength(3.0).fwd_hooks() + steer.fwd_hooks()
    ids, mask = prepare_tokens(bridge, PROMPTS)
    with hf_hooks(plain, hooks), torch.no_grad():
        tokens = plain.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=258
        )
    hf_text = bridge.tokenizer.batch_decode(tokens[:, ids.shape[1] :], skip_special_tokens=True)
    tl_text = generate(
        bridge,
        PROMPTS,
        fwd_hooks=hooks,
        max_new_tokens=6,
        options=QUIET_GENERATION,
    )
    assert hf_text == tl_text
    assert tl_text == ["ZZZZZZ"] * len(PROMPTS)
    assert (
        generate(
            bridge,
            PROMPTS,
            max_new_tokens=6,
            options=QUIET_GENERATION,
        )
        != tl_text
    )


def test_hooks_come_off_after_the_block_even_on_error() -> None:
    _, plain = _pair("qwen2")
    bridge = tiny_model(seed=3)
    fitted = fit_ot_ablation(
        bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=6),
        collect=QUIET,
    )
    layers = decoder_layers(plain)

    def n_hooks() -> int:
        return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in layers)

    with pytest.raises(KeyError), fitted.hf_hooks(plain):
        assert n_hooks() == 1
        raise KeyError("inside the block")
    assert n_hooks() == 0


def test_attach_hf_until_detach_hf() -> None:
    bridge, plain = _pair("qwen2")
    fitted = fit_ot_ablation(
        bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(PLAIN_MAP, n_components=6),
        collect=QUIET,
    )
    fitted = fitted.with_strength(3.0)
    ids, mask = prepare_tokens(bridge, PROMPTS)
    with torch.no_grad():
        clean = plain(input_ids=ids, attention_mask=mask).logits
        fitted.attach_hf(plain)
        with pytest.raises(RuntimeError, match="already attached"):
            fitted.attach_hf(plain)
        edited = plain(input_ids=ids, attention_mask=mask).logits
        fitted.detach_hf()
        again = plain(input_ids=ids, attention_mask=mask).logits
    assert not torch.equal(clean, edited)
    torch.testing.assert_close(again, clean, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="not attached"):
        fitted.detach_hf()


def test_clear_errors() -> None:
    bridge, plain = _pair("qwen2")
    fitted = fit_ot_ablation(
        bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=6),
        collect=QUIET,
    )
    with pytest.raises(TypeError, match="TransformerLens model"), fitted.hf_hooks(bridge):
        pass
    wider, _ = tiny_hf_model(d_model=64)
    with pytest.raises(ValueError, match="d_model=32"), fitted.hf_hooks(wider):
        pass
    hook = fitted.fwd_hooks()[0][1]
    with pytest.raises(ValueError, match="no plain transformers counterpart"):
        register_hf_hooks(plain, [("hook_embed", hook)])
    with pytest.raises(ValueError, match="past this model's 3 layers"):
        register_hf_hooks(plain, [("blocks.7.hook_resid_pre", hook)])
    with pytest.raises(ValueError, match="could not find the decoder layers"):
        decoder_layers(torch.nn.Linear(2, 2))
    # Nothing was left registered by the failed calls.
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in decoder_layers(plain))


def test_a_model_dispatched_by_accelerate_takes_the_hooks() -> None:
    """``device_map`` dispatch wraps each module's forward; our PyTorch hooks run around it.
    (CPU only here: the maps move to each layer's device on first use, see lens.hooks.)"""
    import accelerate  # a dependency of transformer-lens

    bridge, plain = _pair("qwen2")
    layers = {f"model.layers.{i}": "cpu" for i in range(3)}
    device_map = {"model.embed_tokens": "cpu", **layers, "model.norm": "cpu", "lm_head": "cpu"}
    device_map["model.rotary_emb"] = "cpu"
    dispatched = accelerate.dispatch_model(plain, device_map=device_map, force_hooks=True)
    assert hasattr(decoder_layers(dispatched)[1], "_hf_hook")  # accelerate's wrapper is on
    fitted = fit_ot_ablation(
        bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(PLAIN_MAP, n_components=6),
        collect=QUIET,
    )
    fitted = fitted.with_strength(3.0)
    _assert_same_edit(
        *_logits_both_ways(bridge, dispatched, fitted.fwd_hooks(), fitted.hf_hooks(dispatched))
    )


def test_an_int8_quantised_model_takes_the_hooks() -> None:
    """Weights quantised to int8 (torch's dynamic quantisation, the CPU analogue of
    bitsandbytes' 8-bit linears): the residual stream stays float, so the hooks edit it and
    generation follows the edit."""
    bridge, plain = _pair("qwen2")
    quantised = torch.ao.quantization.quantize_dynamic(plain, {torch.nn.Linear}, dtype=torch.qint8)
    assert "quantized" in type(decoder_layers(quantised)[0].self_attn.q_proj).__module__
    z = bridge.tokenizer.convert_tokens_to_ids("Z")
    push = ActAdd(vector=8 * bridge.W_U[:, z].detach())
    steer = InterventionSet({"blocks.2.hook_resid_post": push}, positions="last")
    ids, mask = prepare_tokens(bridge, PROMPTS)
    with steer.hf_hooks(quantised), torch.no_grad():
        tokens = quantised.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=258
        )
    text = bridge.tokenizer.batch_decode(tokens[:, ids.shape[1] :], skip_special_tokens=True)
    assert text == ["ZZZZ"] * len(PROMPTS)
