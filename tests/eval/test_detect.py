"""Detection metrics (``eval.detect``): AUROC, TPR at 1 % FPR and their intervals, and a known
edit detected (a no-op not) by a monitor on the tiny model."""

import json
import math

import numpy as np
import pytest
import torch

from tests.helpers import Shift, null_sd, prompts
from tl_ot_ablation import CollectOptions, MonitorSpec, fwd_hooks
from tl_ot_ablation.eval.detect import (
    DetectionOptions,
    DetectionReport,
    auroc,
    detection_result,
    evaluate_detection,
    tpr_at_fpr,
)
from tl_ot_ablation.lens.monitor import ActivationMonitor

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = CollectOptions(progress=False)


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


HARMFUL_WORDS = "lock car steal weapon poison hack fraud bomb".split()
HARMLESS_WORDS = "poem tree river cake sky blue sum numbers".split()
N = 40  # prompts per split and class


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
