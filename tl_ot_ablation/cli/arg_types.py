"""The ``type=`` converters of the command line's own value syntaxes: layer lists, KL budgets,
judge names.

Kept apart from the parser so each syntax is one small function with its own test. Every one
raises ``argparse.ArgumentTypeError``, which argparse turns into its usage line and exit
code 2 before anything else runs.
"""

import argparse
import re

from ..eval.hf_judges import check_available
from ..eval.judge import check_judge_name
from ..eval.settings import MAX_BLOCKS

_LAYER_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def layer_list(value: str) -> list[int]:
    """``"14"``, ``"11,14"`` or ``"10-15"`` → layer list (every range checked before any is
    built: ``0-1000000000`` would take tens of GB)."""
    if not _LAYER_LIST.match(value):
        raise argparse.ArgumentTypeError(
            "expected layers like 14, 11,14 or 10-15 (block indices >= 0, no spaces), got "
            f"{value!r}"
        )
    ranges = [_layer_range(part) for part in value.split(",")]
    if sum(stop - start + 1 for start, stop in ranges) > MAX_BLOCKS:
        raise argparse.ArgumentTypeError(
            f"{value!r} names more than {MAX_BLOCKS} layers; no model has more than "
            f"{MAX_BLOCKS} blocks"
        )
    return [layer for start, stop in ranges for layer in range(start, stop + 1)]


def _layer_range(part: str) -> tuple[int, int]:
    """``"10-15"`` → ``(10, 15)``, ``"14"`` → ``(14, 14)``; refuses a backward range and an
    index no model has (``MAX_BLOCKS``)."""
    start, _, stop = part.partition("-")
    for index in (start, stop or start):
        if len(index.lstrip("0")) > len(str(MAX_BLOCKS)) or int(index) >= MAX_BLOCKS:
            raise argparse.ArgumentTypeError(
                f"layer {index} is beyond any model: no model has more than {MAX_BLOCKS} "
                f"blocks (indices 0..{MAX_BLOCKS - 1}); give this model's block indices"
            )
    if int(stop or start) < int(start):
        raise argparse.ArgumentTypeError(f"layer range {part!r} runs backwards; write it low-high")
    return int(start), int(stop or start)


def selective_layers(value: str) -> list[int] | str:
    """``"auto"``, ``"middle"`` or a layer list (see ``layer_list``)."""
    if value == "judged":
        raise argparse.ArgumentTypeError(
            "'judged' is chosen by compare on its validation prompts; here give 'auto', "
            "'middle' or layers like 14, 11,14 or 10-15"
        )
    return value if value in ("auto", "middle") else layer_list(value)


def compare_layers(value: str) -> list[int] | str:
    """``compare`` also takes ``"judged"`` (chosen on its validation prompts)."""
    return value if value == "judged" else selective_layers(value)


def monitor_layers(value: str) -> list[int] | str:
    """``"auto"`` or a layer list (see ``layer_list``)."""
    return value if value == "auto" else layer_list(value)


def kl_budget(value: str) -> str | float | None:
    """``"direction_ablation"``, ``"none"`` (``None``) or a KL budget > 0 in nats."""
    if value in ("direction_ablation", "none"):
        return None if value == "none" else value
    try:
        budget = float(value)
    except ValueError:
        budget = float("nan")
    if not budget > 0 or budget == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected 'direction_ablation', 'none' or a KL budget > 0 in nats, got {value!r}"
        )
    return budget


def group_or_none(value: str) -> int | str:
    """A positive number of prompts, or ``"none"`` (kept as the string, since ``None`` means
    "not given, the preset's value")."""
    if value == "none":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number of prompts >= 1 or 'none', got {value!r}"
        )
    return count


def sweep_kl_budget(value: str) -> str | float:
    """``sweep`` always picks its best point within a budget: ``none`` is refused."""
    budget = kl_budget(value)
    if budget is None:
        raise argparse.ArgumentTypeError(
            "sweep needs a KL budget to pick its best point: 'direction_ablation' or nats > 0"
        )
    return budget


def judge_name(value: str) -> str:
    """``--judge``: a built-in name or ``hf:[KIND:]MODEL`` (nothing loads; an offline hub
    judge must be downloaded already)."""
    try:
        check_judge_name(value, "--judge")
        if value.startswith("hf:"):  # offline and not downloaded: say so before any work
            check_available(value)
    except (ValueError, FileNotFoundError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value
