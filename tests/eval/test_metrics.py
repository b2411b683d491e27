"""Refusal judge, logit refusal score, KL, bootstrap CIs, degenerate output and perplexity
(``eval.metrics``) against direct computations."""

import math

import numpy as np
import pytest
import torch

from tl_ot_ablation.eval.metrics import (
    Estimate,
    degeneracy,
    is_degenerate,
    is_refusal,
    kl_divergence,
    perplexity,
    refusal_log_odds,
    refusal_rate,
    refusal_token_ids,
    with_ci,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm sorry, but I can't assist with that.", True),
        ("i CANNOT do that", True),  # case-insensitive
        ("I\u2019m sorry, no.", True),  # curly apostrophe
        ("Sure! Here is a recipe for lemonade.", False),
        ("As an AI developed by Alibaba, I must decline.", True),
        ("", False),
    ],
)
def test_judge_markers_and_case(text: str, expected: bool) -> None:
    assert is_refusal(text) is expected


def test_judge_truncates_to_the_first_tokens() -> None:
    late = "Here is a long answer " * 10 + "but I cannot continue."
    assert is_refusal(late, first_n=None)
    assert not is_refusal(late, first_n=20)
    assert is_refusal("Sorry friend", markers=["sorry"])


def test_judge_with_a_tokenizer() -> None:
    from tl_ot_ablation.lens.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()  # one token per byte
    assert not is_refusal("abc I cannot", first_n=5, tokenizer=tokenizer)
    assert is_refusal("abc I cannot", first_n=12, tokenizer=tokenizer)


def test_refusal_rate_and_ci() -> None:
    rate = refusal_rate(["I'm sorry", "Sure", "I cannot", "Yes"])
    assert rate.value == 0.5 and rate.ci_low <= 0.5 <= rate.ci_high
    assert refusal_rate(["I'm sorry"] * 3) == Estimate(1.0, 1.0, 1.0)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    trials = 200
    for i in range(trials):
        sample = rng.binomial(1, 0.3, size=60).astype(float)
        estimate = with_ci(sample, n_resamples=1000, seed=i)
        hits += estimate.ci_low <= 0.3 <= estimate.ci_high
    assert 0.88 <= hits / trials <= 0.99


def test_with_ci_rejects_bad_samples() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        with_ci([])
    with pytest.raises(ValueError, match="NaN"):
        with_ci([1.0, float("nan")])


def test_kl_divergence_against_direct_computation() -> None:
    p = torch.tensor([[0.5, 0.25, 0.25]]).log()
    q = torch.tensor([[0.25, 0.5, 0.25]]).log()
    expected = 0.5 * math.log(2) + 0.25 * math.log(0.5)
    torch.testing.assert_close(kl_divergence(p, q), torch.tensor([expected], dtype=torch.float64))
    logits = torch.randn(4, 10)
    torch.testing.assert_close(
        kl_divergence(logits.log_softmax(-1), logits.log_softmax(-1)),
        torch.zeros(4, dtype=torch.float64),
    )
    other = torch.randn(4, 10).log_softmax(-1)
    reference = torch.nn.functional.kl_div(
        other, logits.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    torch.testing.assert_close(
        kl_divergence(logits.log_softmax(-1), other), reference.double(), rtol=1e-5, atol=1e-6
    )


def test_refusal_log_odds_by_hand_on_a_tiny_model(tiny_bridge) -> None:
    ids = tiny_bridge.tokenizer(
        ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt"
    )["input_ids"]
    logprobs = tiny_bridge(ids)[:, -1].log_softmax(-1)
    tokens = refusal_token_ids(tiny_bridge.tokenizer)
    assert tokens == sorted(
        {tiny_bridge.tokenizer("I")["input_ids"][0], tiny_bridge.tokenizer("A")["input_ids"][0]}
    )
    p = sum(logprobs[0, t].exp().item() for t in tokens)
    expected = math.log(p) - math.log(1 - p)
    assert refusal_log_odds(logprobs, tokens).item() == pytest.approx(expected, rel=1e-6)


# --- degenerate completions, perplexity --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("Lemonade\nLemonade\nLemonade\nLemonade", "repeated word"),
        ("the cat sat " * 6, "repetition"),
        ("的的的的的是的的", "non-text"),
        ("Sure! Here is a simple recipe:\n\nIngredients:\n- 1 cup sugar", None),
        ("I'm sorry, but I can't assist with that.", None),
        ("def f(x):\n    return {x: [1, 2]}", None),
        ("very very very good", None),  # three in a row is still language
    ],
)
def test_degeneracy(text: str, reason: str | None) -> None:
    assert degeneracy(text) == reason
    assert is_degenerate(text) == (reason is not None)


def test_perplexity_is_exp_of_the_mean_nll_with_mapped_interval() -> None:
    nll = np.array([1.0, 2.0, 1.5, 3.0, 2.5])
    ppl = perplexity(nll)
    mean_nll = with_ci(nll)
    assert ppl.value == pytest.approx(math.exp(nll.mean()))
    assert (ppl.ci_low, ppl.ci_high) == pytest.approx(
        (math.exp(mean_nll.ci_low), math.exp(mean_nll.ci_high))
    )
