"""Stop judging a candidate once the count decides.

``compare`` chooses a layer and each strength by the judged compliance of greedy completions of
the validation harmful prompts, one generation pass per candidate. A candidate needs a certain
count of compliant answers to be chosen over the best one so far (``needed_count``). Its
prompts are decoded and judged in groups; once the answers judged so far, with every prompt
still to go counted as compliant, cannot reach that count (``cannot_reach``), the rest of its
prompts are never decoded.

This is exact: a stopped candidate could not have been chosen, so the choice is the one that
judging every prompt gives on the same completions, only cheaper. Labels are kept as a list
with ``None`` for the prompts not judged (always a suffix), so a later, stricter or looser
question about the same candidate continues where judging stopped
(``judge_until_decided``).
"""

from collections.abc import Callable, Sequence

from ..core.errors import UserInputError

Labels = list[str | None]
"""One judged label per prompt, ``None`` for prompts not judged (a suffix)."""


def compliant(labels: Sequence[str | None]) -> int:
    """How many of ``labels`` are ``"compliance"``."""
    return sum(label == "compliance" for label in labels)


def needed_count(best_count: int | None, wins_ties: bool) -> int | None:
    """The compliant count a candidate must reach to be chosen over the best so far, which has
    ``best_count`` (``None``: no best yet, nothing to reach); equal counts go to the candidate
    only when it ``wins_ties`` (the lower strength, the lower KL)."""
    if best_count is None:
        return None
    return best_count if wins_ties else best_count + 1


def cannot_reach(labels: Sequence[str | None], need: int | None) -> bool:
    """Whether ``labels`` could not reach ``need`` compliant even if every prompt not yet
    judged (``None``) were compliant."""
    if need is None:
        return False
    return compliant(labels) + sum(label is None for label in labels) < need


def judge_until_decided(
    labels: Sequence[str | None],
    judge: Callable[[int, int], list[str]],
    *,
    group: int | None,
    need: int | None,
) -> Labels:
    """``labels`` with the prompts still to judge judged ``group`` at a time by ``judge(start,
    stop)`` (the labels of prompts ``start:stop``), until every prompt is judged or the count
    ``cannot_reach`` ``need``. ``group=None``: the rest in one call."""
    out: Labels = list(labels)
    start = next((i for i, label in enumerate(out) if label is None), len(out))
    if any(label is not None for label in out[start:]):
        raise UserInputError("judged labels must be a prefix: a label follows an unjudged prompt")
    if group is not None and group < 1:
        raise UserInputError(f"group must be a positive number of prompts, got {group}")
    step = len(out) if group is None else group
    while start < len(out) and not cannot_reach(out, need):
        stop = min(start + step, len(out))
        judged = judge(start, stop)
        if len(judged) != stop - start:
            raise RuntimeError(f"the judge gave {len(judged)} labels for {stop - start} prompts")
        out[start:stop] = judged
        start = stop
    return out
