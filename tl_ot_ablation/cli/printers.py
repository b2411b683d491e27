"""The human summaries each command prints when its job is done (the files it wrote hold the
full record).

Kept apart from the commands so what a person reads on the terminal is in one place, and so
that model text reaches a terminal with its control characters escaped.
"""

import sys
from pathlib import Path

from ..eval.record import CompareRecord, MonitorRecord, SweepRecord
from ..eval.report_markdown import comparison_table, detection_table, verdict
from ..eval.selection import LayerChoice
from ..eval.sweep import SweepResult
from ..lens.intervention_set import InterventionSet

_BIDI_CONTROLS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_TERMINAL_ESCAPES = {
    ord(c): repr(c)[1:-1]  # as Python writes them: \x1b, \r, \x9b, \u202e
    for c in [*map(chr, [*range(0x20), *range(0x7F, 0xA0)]), *_BIDI_CONTROLS]
    if c not in "\n\t"
}


def _report_line(out: Path) -> str:
    return f"Report: {out / 'report.md'}"


def print_comparison(record: CompareRecord, out: Path) -> None:
    """``compare``: the table, the verdict, where the report is."""
    print(comparison_table(record))
    print()
    print(verdict(record))
    print(f"\n{_report_line(out)}")


def print_sweep(result: SweepResult, record: SweepRecord, out: Path) -> None:
    """``sweep``: the best placement within the budget (or that none stayed within it)."""
    best = result.best
    if best is None:
        print(f"No placement stayed within the KL budget {result.budget:.4g}.")
    else:
        judged = "" if best.compliance is None else f"judged compliance {best.compliance:.2f}, "
        print(
            f"Best within KL {result.budget:.4g}: layers {list(best.layers)}, {judged}refusal "
            f"log-odds {best.refusal_score:.2f}, KL {best.kl_harmless:.3g} "
            f"({record.sweet_spot_depth_fraction:.0%} of depth)."
        )
    print(_report_line(out))


def print_fit(fitted: InterventionSet, choice: LayerChoice, folder: Path) -> None:
    """``fit``: how the layer was chosen (when automatically), what was fitted, where it is."""
    if choice.how == "w2_relative":
        print(
            f"layer chosen from the training statistics (largest W2² / variance): {choice.layers}"
        )
    print(f"{fitted}\nSaved to {folder}")


def print_detection(record: MonitorRecord, out: Path) -> None:
    """``monitor``: the detection table, where the report is."""
    print(detection_table(record))
    print(f"\n{_report_line(out)}")


def for_terminal(text: str) -> str:
    """``text`` with its control characters written as escapes (ESC, BEL, CR, the C1 codes
    such as CSI, bidi overrides), so a prompt or completion cannot recolour, retitle, clear or
    reorder the terminal; newlines and tabs are kept."""
    return text.translate(_TERMINAL_ESCAPES)


def print_completions(
    prompts: list[str], edited: list[str], original: list[str] | None, method: str
) -> None:
    """``generate``: each prompt, its unmodified completion (if any) and its edited one;
    control characters escaped when stdout is a terminal (unchanged into a file or pipe)."""
    isatty = getattr(sys.stdout, "isatty", None)
    show = for_terminal if isatty is not None and isatty() else str
    shown_method = show(method)
    for i, prompt in enumerate(prompts):
        print(f"### {show(prompt)}")
        if original is not None:
            print(f"[unmodified] {show(original[i])}")
        print(f"[{shown_method}] {show(edited[i])}\n")
