"""The activation monitor on a model (``lens.monitor``): fit and score shapes, observe-only hooks,
scores token by token during generation, detection of OT ablation, and its input checks."""

import dataclasses

import pytest
import torch

import tl_ot_ablation as tlo
from tests.helpers import Shift, null_sd, prompts
from tl_ot_ablation import (
    PLAIN_MAP,
    CollectOptions,
    GenerationOptions,
    MonitorSpec,
    fit_ot_ablation,
    fwd_hooks,
    generate,
)
from tl_ot_ablation.eval.detect import auroc
from tl_ot_ablation.lens.collect import prepare_tokens
from tl_ot_ablation.lens.monitor import ActivationMonitor

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
QUIET = CollectOptions(progress=False)


HARMFUL_WORDS = "lock car steal weapon poison hack fraud bomb".split()
HARMLESS_WORDS = "poem tree river cake sky blue sum numbers".split()
N = 40  # prompts per split and class


def test_fit_and_score_shapes(tiny_bridge) -> None:
    harmful, harmless = prompts(12, 1, HARMFUL_WORDS), prompts(12, 2, HARMLESS_WORDS)
    monitor = ActivationMonitor.fit(
        tiny_bridge,
        harmful,
        harmless,
        layers=[2, 1],
        spec=MonitorSpec(n_components=4),
        collect=QUIET,
    )
    assert monitor.layers == [1, 2] and monitor.hook == "resid_post"
    assert monitor.hook_names == {1: "blocks.1.hook_resid_post", 2: "blocks.2.hook_resid_post"}
    assert monitor.metadata["n_components"] == 4 and monitor.metadata["n_harmful"] == 12
    scores = monitor.score(tiny_bridge, harmful[:5])
    assert set(scores) == {"likelihood", "disagreement"}
    for by_layer in scores.values():
        assert set(by_layer) == {1, 2}
        assert all(v.shape == (5,) and torch.isfinite(v).all() for v in by_layer.values())
    rows = monitor.collect_rows(tiny_bridge, harmful[:5])
    assert rows[1].shape == (5, monitor.n_post_instruction, 32) and rows[1].dtype == F64
    per_row = monitor.score_activations({"blocks.1.hook_resid_post": rows[1]})
    torch.testing.assert_close(per_row["likelihood"][1].mean(-1), scores["likelihood"][1])
    assert tlo.ActivationMonitor is ActivationMonitor


def test_hooks_observe_only_and_match_score(tiny_bridge) -> None:
    harmful, harmless = prompts(12, 1, HARMFUL_WORDS), prompts(12, 2, HARMLESS_WORDS)
    monitor = ActivationMonitor.fit(
        tiny_bridge,
        harmful,
        harmless,
        layers=[1, 2],
        spec=MonitorSpec(n_components=4),
        collect=QUIET,
    )
    ids, mask = prepare_tokens(tiny_bridge, harmful)
    with torch.no_grad():
        plain = tiny_bridge(ids, attention_mask=mask)
        with monitor.watch(tiny_bridge) as log:
            watched = tiny_bridge(ids, attention_mask=mask)
    assert torch.equal(plain, watched)
    assert tiny_bridge.list_hooks() == {}
    assert len(log.entries) == 2 and all(not single for _, single, _ in log.entries)
    # The same batch through score(): the same float32 activations, scored the same way.
    scored = monitor.score(tiny_bridge, harmful, batch_size=len(harmful))
    recorded = log.prompt_scores()
    for name in scored:
        for layer in (1, 2):
            assert torch.equal(recorded[name][layer], scored[name][layer])


def test_generation_is_scored_token_by_token(tiny_bridge) -> None:
    harmful, harmless = prompts(12, 1, HARMFUL_WORDS), prompts(12, 2, HARMLESS_WORDS)
    monitor = ActivationMonitor.fit(
        tiny_bridge,
        harmful,
        harmless,
        layers=[1],
        spec=MonitorSpec(n_components=4),
        collect=QUIET,
    )
    seen: list[torch.Tensor] = []

    def spy(resid: torch.Tensor, *, hook) -> None:
        if resid.shape[1] == 1:
            seen.append(resid.detach().clone())

    log = monitor.log
    hooks = [*monitor.fwd_hooks(), ("blocks.1.hook_resid_post", spy)]
    generate(
        tiny_bridge,
        harmful[:3],
        fwd_hooks=hooks,
        max_new_tokens=4,
        options=GenerationOptions(progress=False),
    )
    tokens = log.token_scores()
    # The prompt pass yields token 1; tokens 1..3 are fed back as single-token passes.
    assert tokens["likelihood"][1].shape == (3, 3)
    expected = monitor.score_activations({1: torch.cat(seen, dim=1)})
    for name in ("likelihood", "disagreement"):
        # The same rows, exactly converted to float64; only the summation order of the
        # batched float64 products differs (~1e-16 relative per term, d = 32 terms).
        torch.testing.assert_close(tokens[name][1], expected[name][1], rtol=1e-12, atol=1e-12)
    assert log.prompt_scores()["likelihood"][1].shape == (3,)


def test_disagreement_detects_ot_ablation_on_the_model(tiny_bridge) -> None:
    """An OT map at layer 1's resid_pre with the monitor's k, monitored at the same hook point
    (registered after the edit): its subspace is the monitor's, so the edit is confined to it.
    Each comparison is against clean runs of one class (null: AUROC 1/2 ± null_sd(40, 40))."""
    train_h, train_b = prompts(N, 1, HARMFUL_WORDS), prompts(N, 2, HARMLESS_WORDS)
    eval_h, eval_b = prompts(N, 3, HARMFUL_WORDS), prompts(N, 4, HARMLESS_WORDS)
    ot = fit_ot_ablation(
        tiny_bridge,
        train_h,
        train_b,
        layers=[1],
        spec=dataclasses.replace(PLAIN_MAP, n_components=4),
        collect=QUIET,
    )
    monitor = ActivationMonitor.fit(
        tiny_bridge,
        train_h,
        train_b,
        layers=[1],
        hook="resid_pre",
        spec=MonitorSpec(n_components=4),
        collect=QUIET,
    )
    edited = monitor.score(tiny_bridge, eval_h, fwd_hooks=ot)["disagreement"][1]
    threshold = 0.5 + 5 * null_sd(N, N)
    for clean in (eval_h, eval_b):
        assert auroc(edited, monitor.score(tiny_bridge, clean)["disagreement"][1]) > threshold


def test_a_monitor_before_the_edit_warns(tiny_bridge) -> None:
    harmful, harmless = prompts(8, 1, HARMFUL_WORDS), prompts(8, 2, HARMLESS_WORDS)
    monitor = ActivationMonitor.fit(
        tiny_bridge,
        harmful,
        harmless,
        layers=[0],
        spec=MonitorSpec(n_components=4),
        collect=QUIET,
    )
    edit = fwd_hooks(Shift(torch.ones(32)), "blocks.1.hook_resid_pre")
    with pytest.warns(UserWarning, match="cannot see the edit"):
        monitor.score(tiny_bridge, harmful[:2], fwd_hooks=edit)


def test_lens_monitor_rejects_bad_settings(tiny_bridge, as_user: None) -> None:
    harmful, harmless = prompts(8, 1, HARMFUL_WORDS), prompts(8, 2, HARMLESS_WORDS)
    spec, every = MonitorSpec(n_components=4), CollectOptions(positions="all", progress=False)

    def fit(layer: int, collect: CollectOptions = QUIET) -> ActivationMonitor:
        return ActivationMonitor.fit(
            tiny_bridge, harmful, harmless, [layer], spec=spec, collect=collect
        )

    with pytest.raises(ValueError, match="positions"):
        fit(1, every)
    with pytest.raises(ValueError, match="out of range"):
        fit(7)
    with pytest.raises(ValueError, match="hook must be"):
        ActivationMonitor({1: None}, hook="attn_out")  # type: ignore[dict-item]
    monitor = fit(1)
    with pytest.raises(KeyError, match="not a monitored layer"):
        monitor.score_activations({2: torch.randn(3, 32)})
    with pytest.raises(ValueError, match="probes cover"):
        ActivationMonitor(monitor.monitors, n_post_instruction=13, probes={2: None})  # type: ignore[dict-item]


def test_probes_share_clean_rows_without_changing(tiny_bridge) -> None:
    """``with_probe(clean=...)`` (what evaluate_detection passes for every method) trains the
    same probe as collecting the clean rows itself."""
    words = HARMFUL_WORDS + HARMLESS_WORDS
    train_h, train_b = prompts(8, 1, words), prompts(8, 2, words)
    monitor = ActivationMonitor.fit(
        tiny_bridge,
        train_h,
        train_b,
        layers=[2],
        spec=MonitorSpec(n_components=4),
        collect=QUIET,
    )
    edit = fwd_hooks(Shift(torch.ones(32)), "blocks.1.hook_resid_pre", positions="last")
    alone = monitor.with_probe(tiny_bridge, train_h, train_b, fwd_hooks=edit)
    clean = (monitor.collect_rows(tiny_bridge, train_h), monitor.collect_rows(tiny_bridge, train_b))
    shared = monitor.with_probe(tiny_bridge, train_h, train_b, fwd_hooks=edit, clean=clean)
    torch.testing.assert_close(shared.probes[2].weight, alone.probes[2].weight, rtol=0, atol=0)
