"""Collecting activations through TransformerLens hook points on tiny offline bridges."""

import pytest
import torch

from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation import (
    CollectOptions,
    collect_activations,
    collect_stats,
    post_instruction_length,
)
from tl_ot_ablation.lens.collect import prepare_tokens

QUIET = CollectOptions(progress=False)

HOOK = "blocks.1.hook_resid_pre"


@pytest.mark.parametrize("fixture", ["tiny_bridge", "tiny_gpt2"])
def test_collected_rows_equal_run_with_cache(request: pytest.FixtureRequest, fixture: str) -> None:
    model = request.getfixturevalue(fixture)
    prompt = ["what is two plus two"]
    rows = collect_activations(model, prompt, HOOK, QUIET)[HOOK]
    ids, mask = prepare_tokens(model, prompt)
    _, cache = model.run_with_cache(ids, attention_mask=mask, names_filter=HOOK)
    n_post = post_instruction_length(model.tokenizer)
    torch.testing.assert_close(rows, cache[HOOK][0, -n_post:].float())


def test_left_padded_batches_equal_one_by_one(tiny_bridge) -> None:
    names = [HOOK, "blocks.2.hook_resid_post"]
    batched = collect_activations(
        tiny_bridge,
        HARMFUL,
        names,
        CollectOptions(batch_size=5, positions="all", progress=False),
    )
    single = collect_activations(
        tiny_bridge,
        HARMFUL,
        names,
        CollectOptions(batch_size=1, positions="all", progress=False),
    )
    for name in names:
        torch.testing.assert_close(batched[name], single[name], rtol=1e-5, atol=1e-5)


def test_position_choices_give_the_expected_row_counts(tiny_bridge) -> None:
    _, mask = prepare_tokens(tiny_bridge, HARMFUL)
    n_post = post_instruction_length(tiny_bridge.tokenizer)
    counts = {
        "last": len(HARMFUL),
        "post_instruction": len(HARMFUL) * n_post,
        "all": int(mask.sum()) - len(HARMFUL),  # every real token but the first
    }
    for positions, expected in counts.items():
        rows = collect_activations(
            tiny_bridge,
            HARMFUL,
            HOOK,
            CollectOptions(positions=positions, progress=False),
        )[HOOK]
        assert rows.shape == (expected, tiny_bridge.cfg.d_model)


def test_collect_stats_equals_statistics_of_rows(tiny_bridge) -> None:
    rows = collect_activations(
        tiny_bridge,
        HARMLESS,
        HOOK,
        QUIET,
        dtype=torch.float64,
    )[HOOK]
    stats = collect_stats(
        tiny_bridge,
        HARMLESS,
        HOOK,
        CollectOptions(batch_size=2, progress=False),
    )[HOOK]
    assert stats.count == len(rows)
    torch.testing.assert_close(stats.mean, rows.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats.cov, torch.cov(rows.T), rtol=1e-4, atol=1e-6)


def test_forward_pass_stops_after_the_deepest_hook(tiny_bridge) -> None:
    fired = []
    spy = ("blocks.2.hook_resid_pre", lambda resid, hook: fired.append(hook.name))
    collect_activations(
        tiny_bridge,
        HARMFUL,
        "blocks.0.hook_resid_post",
        QUIET,
        fwd_hooks=[spy],
    )
    assert fired == []
    collect_activations(
        tiny_bridge,
        HARMFUL,
        "blocks.2.hook_resid_pre",
        QUIET,
        fwd_hooks=[spy],
    )
    assert len(fired) == 1


def test_native_hook_names_work_too(tiny_bridge) -> None:
    alias = collect_activations(tiny_bridge, HARMFUL, HOOK, QUIET)[HOOK]
    native = collect_activations(
        tiny_bridge,
        HARMFUL,
        "blocks.1.hook_in",
        QUIET,
    )["blocks.1.hook_in"]
    torch.testing.assert_close(alias, native)


class TestBadInput:
    def test_unknown_hook_name(self, tiny_bridge) -> None:
        with pytest.raises(KeyError, match=r"blocks\.1\.hook_resid_prex"):
            collect_activations(
                tiny_bridge,
                HARMFUL,
                "blocks.1.hook_resid_prex",
                QUIET,
            )

    def test_empty_prompt_list(self, tiny_bridge) -> None:
        with pytest.raises(ValueError, match="prompt list is empty"):
            collect_activations(tiny_bridge, [], HOOK, QUIET)

    def test_prompt_longer_than_the_context(self, tiny_bridge) -> None:
        with pytest.raises(ValueError, match=r"more than the model's context of 256 tokens"):
            collect_activations(tiny_bridge, ["word " * 100], HOOK, QUIET)

    def test_model_without_chat_template(self) -> None:
        from tl_ot_ablation.lens.tiny import tiny_model

        plain = tiny_model(chat_template=None)
        with pytest.raises(ValueError, match="no chat template"):
            collect_activations(plain, HARMFUL, HOOK, QUIET)
        rows = collect_activations(
            plain,
            HARMFUL,
            HOOK,
            CollectOptions(chat=False, positions="last", progress=False),
        )
        assert rows[HOOK].shape == (len(HARMFUL), 32)

    def test_training_mode(self, tiny_bridge) -> None:
        tiny_bridge.train()
        try:
            with pytest.raises(ValueError, match=r"model.eval\(\)"):
                collect_activations(tiny_bridge, HARMFUL, HOOK, QUIET)
        finally:
            tiny_bridge.eval()

    def test_one_string_instead_of_a_list(self, tiny_bridge) -> None:
        with pytest.raises(TypeError, match="list of strings"):
            collect_activations(tiny_bridge, "just one", HOOK, QUIET)


def test_collection_runs_in_inference_mode_but_returns_ordinary_tensors(tiny_bridge) -> None:
    seen = []
    name = "blocks.1.hook_resid_pre"
    spy = [(name, lambda resid, hook: seen.append(torch.is_inference_mode_enabled()))]
    stats = collect_stats(
        tiny_bridge,
        HARMFUL[:3],
        name,
        QUIET,
        fwd_hooks=spy,
    )
    assert seen == [True]
    # Callers can keep updating the statistics and editing the rows in place afterwards.
    stats[name].update(torch.randn(2, tiny_bridge.cfg.d_model))
    rows = collect_activations(tiny_bridge, HARMFUL[:3], name, QUIET)[name]
    rows -= rows.mean(0)
    assert not rows.is_inference()
