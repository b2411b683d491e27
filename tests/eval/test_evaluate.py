"""Next-token distributions, completion and plain-text NLL under interventions
(``eval.evaluate``), against direct computation."""

import dataclasses

import pytest
import torch

import tl_ot_ablation as tlo
from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation import RECOMMENDED_MAP, ActAdd, CollectOptions, InterventionSet, fit_ot_ablation
from tl_ot_ablation.eval.evaluate import (
    completion_nll,
    next_token_logprobs,
    scoring_hooks,
    text_hooks,
    text_nll,
)
from tl_ot_ablation.lens.collect import prepare_tokens


def test_next_token_logprobs_equal_single_prompt_runs(tiny_bridge) -> None:
    batched = next_token_logprobs(tiny_bridge, HARMLESS, batch_size=5)
    for i, prompt in enumerate(HARMLESS):
        ids, _ = prepare_tokens(tiny_bridge, [prompt])
        single = tiny_bridge(ids)[0, -1].log_softmax(-1)
        torch.testing.assert_close(batched[i], single, rtol=1e-5, atol=1e-5)


def test_completion_nll_equals_direct_computation(tiny_bridge) -> None:
    prompts, completions = ["hi", "tell me a story"], ["hello there", "once"]
    nll = completion_nll(tiny_bridge, prompts, completions, batch_size=2)
    tok = tiny_bridge.tokenizer
    for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        p_ids, _ = prepare_tokens(tiny_bridge, [prompt])
        c_ids = tok(completion, add_special_tokens=False, return_tensors="pt")["input_ids"]
        logits = tiny_bridge(torch.cat([p_ids, c_ids], 1))[0].log_softmax(-1)
        start = p_ids.shape[1]
        direct = -torch.stack(
            [logits[start - 1 + j, c_ids[0, j]] for j in range(c_ids.shape[1])]
        ).mean()
        torch.testing.assert_close(nll[i], direct, rtol=1e-5, atol=1e-5)


def test_scoring_applies_interventions_where_generation_did(tiny_bridge) -> None:
    """Teacher-forcing a greedy completion under the scoring hooks reproduces its tokens."""
    fitted = fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=8),
        collect=CollectOptions(progress=False),
    )
    push = ActAdd(vector=torch.randn(32, generator=torch.Generator().manual_seed(0)) * 4)
    # The tiny random model says "\n" whatever happens: push it hard at the same positions.
    strong = InterventionSet(
        {**fitted, "blocks.2.hook_resid_pre": push},
        positions=fitted.positions,
        n_post_instruction=fitted.n_post_instruction,
    )
    p_ids, p_mask = prepare_tokens(tiny_bridge, ["tell me a story"])

    def greedy(hooks):  # ids and per-step logits straight from cached generation
        with torch.no_grad(), tiny_bridge.hooks(fwd_hooks=hooks):
            out = tiny_bridge.original_model.generate(
                input_ids=p_ids,
                attention_mask=p_mask,
                max_new_tokens=6,
                do_sample=False,
                pad_token_id=258,
                output_logits=True,
                return_dict_in_generate=True,
            )
        return out.sequences[:, p_ids.shape[1] :], torch.stack(out.logits, 1)

    c_ids, step_logits = greedy(strong.fwd_hooks())
    assert not torch.equal(c_ids, greedy([])[0])  # the intervention matters for this check
    sequence = torch.cat([p_ids, c_ids], 1)
    logits = tiny_bridge.run_with_hooks(sequence, fwd_hooks=scoring_hooks(strong, p_ids.shape[1]))
    teacher_forced = logits[:, p_ids.shape[1] - 1 : -1]
    torch.testing.assert_close(teacher_forced, step_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(teacher_forced[0].argmax(-1), c_ids[0])


def test_completion_nll_bad_input(tiny_bridge) -> None:
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        completion_nll(tiny_bridge, ["a", "b"], ["x"])
    with pytest.raises(ValueError, match=r"completions \[1\] are empty"):
        completion_nll(tiny_bridge, ["a", "b"], ["x", ""])


# --- plain-text NLL and first-step log-probs ----------------------------------------------------


def test_text_nll_equals_direct_computation_and_ignores_padding(tiny_bridge) -> None:
    texts = ["The cat sat on the mat.", "Rain.", "A much longer sentence about rivers and hills."]
    batched = text_nll(tiny_bridge, texts, batch_size=3)
    for i, text in enumerate(texts):
        ids = tiny_bridge.tokenizer(text, add_special_tokens=False, return_tensors="pt")[
            "input_ids"
        ]
        logprobs = tiny_bridge(ids)[0, :-1].log_softmax(-1)
        direct = -logprobs.gather(-1, ids[0, 1:, None]).mean()
        torch.testing.assert_close(batched[i], direct, rtol=1e-5, atol=1e-5)


def test_text_hooks_skip_the_first_position_for_maps_fitted_on_the_template(tiny_bridge) -> None:
    fitted = tlo.fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(tlo.RECOMMENDED_MAP, n_components=4),
        collect=tlo.CollectOptions(progress=False),
    )
    ((_, hook),) = text_hooks(fitted)
    assert hook.positions == slice(1, None)
    ablation = tlo.fit_direction_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layer=1,
        collect=tlo.CollectOptions(progress=False),
    )
    assert {h.positions for _, h in text_hooks(ablation)} == {"all"}
    with pytest.raises(ValueError, match="at least two tokens"):
        text_nll(tiny_bridge, ["a"])
