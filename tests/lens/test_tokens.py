"""Tokenisation (``lens.tokens``) leaves the caller's tokenizer padding side as it found it."""

import tl_ot_ablation as tlo
from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation.eval.evaluate import completion_nll, text_nll


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
