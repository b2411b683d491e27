"""Training activations (``lens.training``): rows kept on request, cached rows replacing a pass
only for the same fingerprint, and their size."""

import dataclasses

import pytest
import torch

from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation import RECOMMENDED_MAP, CollectOptions, Placement, fit_ot_ablation
from tl_ot_ablation.lens import training
from tl_ot_ablation.lens.chat_template import post_instruction_length

QUIET = CollectOptions(progress=False)


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
