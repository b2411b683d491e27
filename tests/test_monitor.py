"""The activation monitor: core scores against independent references (float64, synthetic
Gaussians), the observe-only hooks and detection on the tiny model, and the detection metrics.

Detection thresholds are derived from the null distribution of the AUROC: with exchangeable
scores and no ties, AUROC ≈ N(1/2, (n₁ + n₂ + 1) / (12 n₁ n₂)) (Mann-Whitney), so requiring
``1/2 + 5 sd`` keeps the chance of passing by luck below 3e-7.
"""

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch
from conftest import gaussian_rows, random_spd
from scipy.stats import multivariate_normal

import tl_ot_ablation as tlo
from tl_ot_ablation import (
    PLAIN_MAP,
    CollectOptions,
    GaussianOTMap,
    GenerationOptions,
    MonitorSpec,
    fit_ot_ablation,
    fwd_hooks,
    generate,
)
from tl_ot_ablation.core.monitor import GaussianMonitor
from tl_ot_ablation.core.probe import LinearProbe
from tl_ot_ablation.eval.detect import (
    DetectionOptions,
    DetectionReport,
    auroc,
    detection_result,
    evaluate_detection,
    tpr_at_fpr,
)
from tl_ot_ablation.lens.collect import prepare_tokens
from tl_ot_ablation.lens.monitor import ActivationMonitor
from tl_ot_ablation.lens.monitor_log import ScoreLog

F64 = torch.float64
QUIET = CollectOptions(progress=False)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these tiny matrices gain nothing from more, and two-thread torch
    runs 10-40x slower while another process holds the cores (shared/TL4-NOTES.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def null_sd(n_pos: int, n_neg: int) -> float:
    """Standard deviation of the AUROC of exchangeable, untied scores (Mann-Whitney)."""
    return math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))


# ---------------------------------------------------------------- core: synthetic Gaussians


def two_classes(d: int = 10, n_h: int = 300, n_b: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    mean_h = torch.linspace(-1, 1, d, dtype=F64)
    harmful = gaussian_rows(n_h, mean_h, random_spd(d, condition=20, seed=1), seed=3)
    harmless = gaussian_rows(
        n_b, torch.zeros(d, dtype=F64), random_spd(d, condition=20, seed=2), seed=4
    )
    return harmful, harmless


def numpy_subspace(harmful: torch.Tensor, harmless: torch.Tensor, k: int) -> np.ndarray:
    """Top-k eigenvectors (columns) of the pooled covariance, by numpy."""
    pooled = np.cov(torch.cat([harmful, harmless]).numpy().T)
    values, vectors = np.linalg.eigh(pooled)
    # A clear eigengap makes the subspace well determined (no ambiguity between libraries).
    assert values[-k] - values[-k - 1] > 0.01 * values[-1]
    return vectors[:, -k:]


def test_likelihood_matches_scipy_logpdf_of_the_implied_gaussians() -> None:
    """(a) is the mixture of Gaussians ``N(mean_c, Q S_c Q + σ_c² (I − Q))`` with ``Q`` the
    pooled top-k projector and ``σ_c² = tr((I − Q) S_c) / (d − k)``, all built here by numpy."""
    d, k, prior = 10, 3, 0.3
    harmful, harmless = two_classes(d)
    monitor = GaussianMonitor.fit(
        harmful, harmless, n_components=k, estimator="ridge", reg=0.0, prior=prior
    )
    v = numpy_subspace(harmful, harmless, k)
    q = v @ v.T
    perp = np.eye(d) - q

    def implied(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        cov = np.cov(rows.numpy().T)
        return rows.numpy().mean(0), q @ cov @ q + np.trace(perp @ cov) / (d - k) * perp

    x = gaussian_rows(50, torch.full((d,), 0.5, dtype=F64), torch.eye(d, dtype=F64), seed=5)
    log_h = multivariate_normal(*implied(harmful)).logpdf(x.numpy())
    log_b = multivariate_normal(*implied(harmless)).logpdf(x.numpy())
    expected = -np.logaddexp(math.log(prior) + log_h, math.log1p(-prior) + log_b)
    # float64 throughout, condition numbers <= ~100: rounding is ~1e-13 relative.
    np.testing.assert_allclose(monitor.negative_log_likelihood(x).numpy(), expected, rtol=1e-9)
    class_h, class_b = monitor.class_log_densities(x)
    np.testing.assert_allclose(class_h.numpy(), log_h, rtol=1e-9)
    np.testing.assert_allclose(class_b.numpy(), log_b, rtol=1e-9)


def test_verdicts_are_the_two_linear_discriminants_scaled_to_the_class_means() -> None:
    d, k, prior = 10, 3, 0.3
    harmful, harmless = two_classes(d)
    monitor = GaussianMonitor.fit(
        harmful, harmless, n_components=k, estimator="ridge", reg=0.0, prior=prior
    )
    x = gaussian_rows(40, torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64), seed=6).numpy()
    h, b = harmful.numpy(), harmless.numpy()
    mu = np.concatenate([h, b]).mean(0)
    v = numpy_subspace(harmful, harmless, k)
    # Subspace: LDA log-odds with the pooled within-class covariance, divided by Δ².
    zh, zb, zx = (h - mu) @ v, (b - mu) @ v, (x - mu) @ v
    n_h, n_b = len(h), len(b)
    within = ((n_h - 1) * np.cov(zh.T) + (n_b - 1) * np.cov(zb.T)) / (n_h + n_b - 2)
    gap = zh.mean(0) - zb.mean(0)
    separation_sq = gap @ np.linalg.solve(within, gap)
    lda = multivariate_normal(zh.mean(0), within).logpdf(zx) - multivariate_normal(
        zb.mean(0), within
    ).logpdf(zx)
    # Complement: position between the complement parts of the class means.
    perp = np.eye(d) - v @ v.T
    a_h, a_b = perp @ (h.mean(0) - mu), perp @ (b.mean(0) - mu)
    v_perp = (x - mu - (a_h + a_b) / 2) @ (a_h - a_b) / np.sum((a_h - a_b) ** 2)

    got_sub, got_perp = monitor.verdicts(torch.from_numpy(x))
    np.testing.assert_allclose(got_sub.numpy(), lda / separation_sq, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got_perp.numpy(), v_perp, rtol=1e-9, atol=1e-12)
    odds_sub, _ = monitor.log_odds(torch.from_numpy(x))
    np.testing.assert_allclose(odds_sub.numpy(), lda + math.log(prior / (1 - prior)), rtol=1e-9)
    # Linear reads: over the training rows, each class's mean verdict is exactly ±1/2 and
    # its mean disagreement exactly 0 (float64 rounding of O(1) sums: ~1e-15).
    for rows, sign in ((harmful, 0.5), (harmless, -0.5)):
        v_sub, v_perp_rows = monitor.verdicts(rows)
        assert v_sub.mean().item() == pytest.approx(sign, abs=1e-12)
        assert v_perp_rows.mean().item() == pytest.approx(sign, abs=1e-12)
        assert monitor.disagreement(rows).mean().item() == pytest.approx(0, abs=1e-12)


def test_disagreement_flags_an_edit_confined_to_the_subspace() -> None:
    """Classes differ along axis 0 (variance 10, inside the top-4 subspace) and axis 8
    (variance 1, mostly outside it). An OT map in the monitor's own subspace moves harmful
    rows' subspace coordinates onto the harmless ones and leaves the complement alone: the
    complement still reads harmful (v_perp ≈ +½), the subspace harmless (v_sub ≈ −½)."""
    d, k = 16, 4
    cov = torch.diag(torch.tensor([10.0] * 4 + [1.0] * 12, dtype=F64))
    shift = torch.zeros(d, dtype=F64)
    shift[0], shift[8] = 6.0, 4.0
    harmful = gaussian_rows(2000, shift, cov, seed=1)
    harmless = gaussian_rows(2000, torch.zeros(d, dtype=F64), cov, seed=2)
    monitor = GaussianMonitor.fit(harmful, harmless, n_components=k)
    ot = GaussianOTMap.fit(harmful, harmless, n_components=k, basis=monitor.basis)
    held_h = gaussian_rows(400, shift, cov, seed=3)
    held_b = gaussian_rows(400, torch.zeros(d, dtype=F64), cov, seed=4)
    edited = ot(held_h)
    moved = edited - held_h
    basis = monitor.basis.components
    # The complement of the monitor's subspace is untouched (float64 rounding of O(10) values).
    assert (moved - moved @ basis.mT @ basis).abs().max() < 1e-10
    v_sub, v_perp = monitor.verdicts(edited)
    assert v_sub.mean().item() < -0.4 and v_perp.mean().item() > 0.4
    positive = monitor.disagreement(edited)
    negative = torch.cat([monitor.disagreement(held_h), monitor.disagreement(held_b)])
    assert auroc(positive, negative) > 0.5 + 5 * null_sd(400, 800)
    assert all(torch.isfinite(s).all() for s in monitor.scores(edited).values())


def test_batched_monitor_equals_one_per_layer() -> None:
    harmful, harmless = two_classes(8, 100, 120)
    stacked_h, stacked_b = torch.stack([harmful, 2 * harmful]), torch.stack([harmless, harmless])
    batched = GaussianMonitor.fit(stacked_h, stacked_b, n_components=3)
    x = torch.randn(2, 5, 8, dtype=F64)
    scores = batched.scores(x)
    for i in range(2):
        alone = GaussianMonitor.fit(stacked_h[i], stacked_b[i], n_components=3).scores(x[i])
        for name, value in alone.items():
            torch.testing.assert_close(scores[name][i], value, rtol=1e-10, atol=1e-10)
    assert batched[1].batch_shape == () and len(batched) == 2


def test_monitor_scores_keep_leading_dims_and_take_float32() -> None:
    harmful, harmless = two_classes(8, 50, 60)
    monitor = GaussianMonitor.fit(harmful.float(), harmless.float(), n_components=2)
    x = torch.randn(3, 4, 8)
    scores = monitor.scores(x)
    assert {name: tuple(v.shape) for name, v in scores.items()} == {
        "likelihood": (3, 4),
        "disagreement": (3, 4),
    }
    assert all(v.dtype == F64 and torch.isfinite(v).all() for v in scores.values())
    assert monitor.dtype == F64 and monitor.n_components == 2 and monitor.d_model == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"harmful": torch.randn(20, 5, dtype=F64)}, "share d_model"),
        ({"harmful": torch.randn(1, 8, dtype=F64)}, "at least 2 samples in harmful"),
        ({"harmless": torch.full((20, 8), math.nan, dtype=F64)}, "non-finite"),
        ({"harmful": torch.ones(20, 8, dtype=F64)}, "zero variance"),
        ({"n_components": 8}, "below d_model"),
        ({"n_components": 0}, "n_components must be in"),
        ({"prior": 1.0}, "prior must be a probability"),
        ({"estimator": "ledoit_wolf"}, "estimator must be"),
        ({"reg": -1.0}, "reg must be"),
    ],
)
def test_monitor_fit_rejects_bad_input(change: dict, message: str, as_user: None) -> None:
    harmful, harmless = two_classes(8, 30, 30)
    kwargs = {"harmful": harmful, "harmless": harmless, "n_components": 3, **change}
    with pytest.raises(ValueError, match=message):
        GaussianMonitor.fit(**kwargs)


def test_monitor_scoring_rejects_bad_input(as_user: None) -> None:
    monitor = GaussianMonitor.fit(*two_classes(8, 30, 30), n_components=3)
    with pytest.raises(ValueError, match="d_model=8"):
        monitor.scores(torch.randn(4, 9))
    with pytest.raises(ValueError, match="non-finite"):
        monitor.scores(torch.full((2, 8), math.inf))
    with pytest.raises(ValueError, match="floating-point"):
        monitor.scores(torch.ones(2, 8, dtype=torch.long))


def test_probe_separates_linearly_separable_data() -> None:
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(6, generator=g, dtype=F64)
    direction /= direction.norm()

    def side(n: int, sign: float) -> torch.Tensor:
        rows = torch.randn(n, 6, generator=g, dtype=F64)
        rows -= (rows @ direction).unsqueeze(-1) * direction  # off the separating direction
        margin = 0.5 + torch.rand(n, generator=g, dtype=F64)
        return rows + sign * margin.unsqueeze(-1) * direction

    probe = LinearProbe.fit(side(100, -1), side(100, 1), l2=1e-3)
    held_clean, held_edited = side(200, -1), side(200, 1)
    assert bool((probe(held_edited) > 0).all() and (probe(held_clean) < 0).all())
    assert auroc(probe(held_edited), probe(held_clean)) == 1.0


def test_probe_matches_scikit_learn() -> None:
    """Same objective as scikit-learn's L2 logistic regression on the standardised features
    with sample weights ``α_i / l2`` (α: ½ per class, spread over its rows) and ``C = 1``."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(80, 10, generator=g, dtype=F64)
    edited = 1.5 * torch.randn(60, 10, generator=g, dtype=F64) + 0.4
    l2 = 0.05
    probe = LinearProbe.fit(clean, edited, l2=l2)
    features = ((torch.cat([clean, edited]) - probe.mean) / probe.scale).numpy()
    labels = np.r_[np.zeros(80), np.ones(60)]
    weights = np.r_[np.full(80, 0.5 / 80), np.full(60, 0.5 / 60)] / l2
    reference = sklearn.LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000)
    reference.fit(features, labels, sample_weight=weights)
    # Both stop at gradients <= ~1e-10; the objective is l2-strongly convex, so the weights
    # agree to about gradient / l2 ~ 1e-9 (1e-6 leaves margin for sklearn's own stopping rule).
    np.testing.assert_allclose(probe.weight.numpy(), reference.coef_[0], atol=1e-6)
    assert probe.bias.item() == pytest.approx(reference.intercept_[0], abs=1e-6)


def test_probe_rejects_bad_input(as_user: None) -> None:
    rows = torch.randn(10, 4)
    with pytest.raises(ValueError, match="share d_model"):
        LinearProbe.fit(rows, torch.randn(10, 5))
    with pytest.raises(ValueError, match="l2 must be"):
        LinearProbe.fit(rows, rows + 1, l2=0.0)
    with pytest.raises(ValueError, match=r"\[n, d_model\]"):
        LinearProbe.fit(torch.randn(4), rows)
    with pytest.raises(ValueError, match="non-finite"):
        LinearProbe.fit(rows, torch.full((3, 4), math.nan))
    with pytest.raises(ValueError, match="constant"):
        LinearProbe.fit(torch.ones(3, 4), torch.ones(3, 4))
    probe = LinearProbe.fit(rows, rows + 1)
    with pytest.raises(ValueError, match="d_model=4"):
        probe(torch.randn(2, 5))


# ---------------------------------------------------------------- eval: detection metrics


def test_auroc_is_the_pairwise_win_rate_with_ties_counting_half() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 50).astype(float)
    pairs = pos[:, None] - neg[None, :]
    expected = (pairs > 0).mean() + 0.5 * (pairs == 0).mean()
    assert auroc(pos, neg) == pytest.approx(expected, abs=1e-12)


def test_tpr_threshold_keeps_the_false_positive_rate_at_most_one_percent() -> None:
    negatives = np.arange(200.0)
    tpr, threshold = tpr_at_fpr([198.0, 198.5, 199.0, 300.0], negatives)
    assert threshold == 198.0 and np.mean(negatives > threshold) <= 0.01
    assert tpr == 0.75  # the positive tied with the threshold is a miss
    # Fewer than 100 negatives: the threshold is the largest clean score.
    assert tpr_at_fpr([10.0, 60.0], np.arange(50.0)) == (0.5, 49.0)


def test_detection_result_has_cis_around_the_estimates() -> None:
    rng = np.random.default_rng(0)
    result = detection_result(rng.normal(1, 1, 60), rng.normal(0, 1, 120), n_resamples=500)
    for estimate in (result.auroc, result.tpr_at_1pct_fpr):
        assert 0 <= estimate.ci_low <= estimate.value <= estimate.ci_high <= 1
    assert result.n_positive == 60 and result.n_negative == 120
    with pytest.raises(ValueError, match="at least 2"):
        detection_result([1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        detection_result([1.0, math.nan], [0.0, 1.0])


# ---------------------------------------------------------------- lens: the tiny model


def prompts(n: int, seed: int, words: list[str]) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(n)]


HARMFUL_WORDS = "lock car steal weapon poison hack fraud bomb".split()
HARMLESS_WORDS = "poem tree river cake sky blue sum numbers".split()
N = 40  # prompts per split and class


class Shift:
    """A known edit: add a fixed vector."""

    def __init__(self, vector: torch.Tensor) -> None:
        self.vector = vector

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.vector.to(x.dtype)


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


def test_score_log_groups_generated_tokens_by_batch() -> None:
    """Two generation batches (3 then 2 prompts); the second stopped after one token."""
    log = ScoreLog()
    scores = lambda *v: {"likelihood": torch.tensor(v, dtype=F64)}  # noqa: E731
    log.entries += [
        (1, False, scores(1, 2, 3)),
        (1, True, scores(10, 20, 30)),
        (1, True, scores(11, 21, 31)),
        (1, False, scores(4, 5)),
        (1, True, scores(40, 50)),
    ]
    torch.testing.assert_close(
        log.prompt_scores()["likelihood"][1], scores(1, 2, 3, 4, 5)["likelihood"]
    )
    expected = torch.tensor(
        [[10, 11], [20, 21], [30, 31], [40, math.nan], [50, math.nan]], dtype=F64
    )
    torch.testing.assert_close(log.token_scores()["likelihood"][1], expected, equal_nan=True)
    log.clear()
    assert log.prompt_scores() == {} and log.token_scores() == {}


def test_a_known_edit_is_detected_and_a_no_op_is_not(tiny_bridge) -> None:
    """Harmful and harmless prompts drawn from one word list, so clean traffic is exchangeable
    and a no-op's positives (copies of the clean harmful runs) sit at AUROC 1/2 up to the
    harmful/harmless sampling difference: AUROC = ¼ + ½ A(harmful vs harmless), whose spread
    (½ · null_sd(40, 40) ≈ 0.032) is well inside the bootstrap CI's half-width (~0.1)."""
    words = HARMFUL_WORDS + HARMLESS_WORDS
    train_h, train_b = prompts(N, 1, words), prompts(N, 2, words)
    eval_h, eval_b = prompts(N, 3, words), prompts(N, 4, words)
    monitor = ActivationMonitor.fit(
        tiny_bridge,
        train_h,
        train_b,
        layers=[1, 2],
        spec=MonitorSpec(n_components=4),
        collect=QUIET,
    )
    # A large known edit at layer 1's resid_pre: 3x the RMS distance of a clean row from the mean.
    size = 3 * monitor.monitors[1].basis.total_variance.sqrt().item()
    direction = torch.randn(32, generator=torch.Generator().manual_seed(0))
    shift = Shift(size * direction / direction.norm())
    edit = fwd_hooks(
        shift,
        "blocks.1.hook_resid_pre",
        positions="post_instruction",
        n_post_instruction=monitor.n_post_instruction,
    )
    report = evaluate_detection(
        tiny_bridge,
        monitor,
        {"shift": edit, "noop": []},
        eval_h,
        eval_b,
        probe_training=(train_h, train_b),
        options=DetectionOptions(n_resamples=1000),
    )
    assert isinstance(report, DetectionReport) and report.methods == ["shift", "noop"]
    assert len(report.results) == 2 * 2 * 3
    json.dumps(report.to_dict())
    threshold = 0.5 + 5 * null_sd(N, 2 * N)
    for layer in (1, 2):
        for score in ("likelihood", "probe"):
            found = report.get("shift", layer, score)
            assert found.auroc.value > threshold and found.auroc.ci_low > 0.5
            assert found.tpr_at_1pct_fpr.value >= 0.9
            assert found.n_positive == N and found.n_negative == 2 * N
        for score in ("likelihood", "disagreement", "probe"):
            noop = report.get("noop", layer, score).auroc
            assert noop.ci_low <= 0.5 <= noop.ci_high, (layer, score, noop)


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
