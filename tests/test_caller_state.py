"""The package leaves the caller's state as it found it: tokenizer padding side, global RNG."""

import torch
from conftest import HARMFUL, HARMLESS

import tl_ot_ablation as tlo
from tl_ot_ablation.eval.evaluate import completion_nll, text_nll
from tl_ot_ablation.lens.testing import tiny_model


def test_padding_side_is_restored(tiny_bridge) -> None:
    tokenizer = tiny_bridge.tokenizer
    before = tokenizer.padding_side
    try:
        tokenizer.padding_side = "right"  # the caller's choice
        tlo.collect_activations(
            tiny_bridge,
            HARMFUL,
            "blocks.0.hook_resid_pre",
            tlo.CollectOptions(progress=False),
        )
        tlo.generate(
            tiny_bridge,
            HARMLESS[:2],
            max_new_tokens=2,
            options=tlo.GenerationOptions(progress=False),
        )
        completion_nll(tiny_bridge, HARMLESS[:2], ["yes", "no"])
        text_nll(tiny_bridge, ["The cat sat on the mat.", "Rain falls."])
        assert tokenizer.padding_side == "right"
    finally:
        tokenizer.padding_side = before


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
