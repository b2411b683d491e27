"""What the monitor's hooks record (``lens.monitor_log``): scores grouped by generation batch."""

import math

import pytest
import torch

from tl_ot_ablation.lens.monitor_log import ScoreLog

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


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
