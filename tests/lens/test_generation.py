"""Generation (``lens.generation``): greedy equals plain transformers, sampling is seeded by its
own argument and leaves the global RNG alone, the first step's log-probabilities."""

import dataclasses

import torch

import tl_ot_ablation as tlo
from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation import GenerationOptions, generate
from tl_ot_ablation.eval.evaluate import next_token_logprobs
from tl_ot_ablation.lens.collect import prepare_tokens
from tl_ot_ablation.lens.generation import generate_with_first_logprobs
from tl_ot_ablation.lens.tiny import tiny_model

QUIET_GENERATION = GenerationOptions(progress=False)


def test_generation_matches_plain_transformers_greedy() -> None:
    """Same tokens as Hugging Face greedy decoding on an un-booted copy of the same weights."""
    from tl_ot_ablation.lens.tiny import tiny_hf_model, tiny_model

    bridge = tiny_model(seed=3)
    plain_hf, _ = tiny_hf_model(seed=3)  # same weights, never booted
    prompts = ["tell me a story", "hi"]
    ids, mask = prepare_tokens(bridge, prompts)
    with torch.no_grad():
        reference = plain_hf.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=258
        )
    expected = bridge.tokenizer.batch_decode(reference[:, ids.shape[1] :], skip_special_tokens=True)
    assert (
        generate(
            bridge,
            prompts,
            max_new_tokens=6,
            options=QUIET_GENERATION,
        )
        == expected
    )


def test_sampling_is_seeded(tiny_bridge) -> None:
    prompts = ["tell me a story", "hi"]

    def sample(seed: int) -> list[str]:
        options = GenerationOptions(do_sample=True, seed=seed, progress=False)
        return generate(tiny_bridge, prompts, max_new_tokens=6, options=options)

    first = sample(1)
    assert first == sample(1)
    assert first != sample(2)


def test_sampling_and_tiny_models_leave_the_global_rng_alone(tiny_bridge) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tlo.generate(
        tiny_bridge,
        HARMLESS[:2],
        max_new_tokens=3,
        options=tlo.GenerationOptions(do_sample=True, progress=False),
    )
    tiny_model(n_layers=1, d_model=16)
    assert torch.equal(torch.rand(3), expected)


def test_sampling_is_seeded_by_its_own_argument(tiny_bridge) -> None:
    def sample(seed: int) -> list[str]:
        return tlo.generate(
            tiny_bridge,
            HARMLESS[:2],
            max_new_tokens=4,
            options=tlo.GenerationOptions(do_sample=True, seed=seed, progress=False),
        )

    assert sample(1) == sample(1)


def test_first_generated_logprobs_equal_next_token_logprobs(tiny_bridge) -> None:
    fitted = tlo.fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(tlo.RECOMMENDED_MAP, n_components=4),
        collect=tlo.CollectOptions(progress=False),
    )
    hooks = fitted.with_strength(1.0).fwd_hooks()
    completions, first = generate_with_first_logprobs(
        tiny_bridge,
        HARMLESS,
        fwd_hooks=hooks,
        max_new_tokens=3,
        options=GenerationOptions(batch_size=5, progress=False),
    )
    direct = next_token_logprobs(tiny_bridge, HARMLESS, fwd_hooks=hooks, batch_size=5)
    torch.testing.assert_close(first, direct, rtol=1e-5, atol=1e-5)
    assert len(completions) == len(HARMLESS)
    assert (
        completions[0]
        == tlo.generate(
            tiny_bridge,
            HARMLESS[:1],
            fwd_hooks=hooks,
            max_new_tokens=3,
            options=tlo.GenerationOptions(progress=False),
        )[0]
    )
