"""Whether a stage's own progress bar is drawn: not while a whole job's bar runs.

``eval.job_progress.JobProgress`` draws one bar for a whole job; the bars of the passes inside
it (generation, activation collection, the judge) would otherwise print one finished bar per
pass under it. Their log lines still print.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_JOB_BAR = ContextVar("tl_ot_ablation_job_bar", default=False)


def stage_bar_off(progress: bool) -> bool:
    """``tqdm``'s ``disable`` for a stage's bar: off unless ``progress`` and no job bar runs."""
    return not progress or _JOB_BAR.get()


@contextmanager
def job_bar_running() -> Iterator[None]:
    """Within this block, stage bars are off (``stage_bar_off``)."""
    token = _JOB_BAR.set(True)
    try:
        yield
    finally:
        _JOB_BAR.reset(token)
