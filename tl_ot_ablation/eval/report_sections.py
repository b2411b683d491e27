"""The compare report's optional sections, each present only when its record has the data: the
layer trials, the graded harm score, harmless damage prompt by prompt, over-refusal, and the
gate on held-out prompts.

Rendering only (markdown lines from a typed ``CompareRecord``): the modules that compute these
numbers (``damage``, ``xstest``, ``gate_report``) do not format them, and a section's wording can
change without touching a metric.
"""

import statistics

from .damage import DAMAGE_METRICS
from .gate_report import OPEN
from .harm_score import HARM_METRICS
from .record import CompareRecord
from .report_markdown import estimate_cell, markdown_table
from .xstest import SHIPPED

DAMAGE_COLUMNS = (
    ("kl_harmless", "mean KL", ".3g"),
    ("kl_harmless_median", "median KL", ".3g"),
    ("kl_harmless_p90", "p90 KL", ".3g"),
    ("kl_harmless_max", "max KL", ".3g"),
    ("kl_harmless_share_above", "share KL > t", ".2f"),
    ("identical_rate_harmless", "answers identical", ".2f"),
    ("label_changed_rate_harmless", "judged label changed", ".2f"),
)
"""The harmless-damage table's columns: ``(metric, header, format)`` (``damage.DAMAGE_METRICS``
and the mean)."""
assert {key for key, _, _ in DAMAGE_COLUMNS} == {"kl_harmless", *DAMAGE_METRICS}

XSTEST_COLUMNS = (
    ("xstest_compliance_safe", "safe: complies"),
    ("xstest_over_refusal_removed", "safe: newly answered"),
    ("xstest_over_refusal_added", "safe: newly refused"),
    ("xstest_compliance_unsafe", "unsafe: complies"),
)
"""The over-refusal table's columns: ``(metric, header)`` (``xstest.XSTEST_METRICS``)."""

SET_NAMES = {
    "harmful": "held-out harmful",
    "harmless": "held-out harmless",
    "xstest_safe": "XSTest-style safe",
    "xstest_unsafe": "XSTest-style unsafe",
}
"""How the gate section names each prompt set."""


def layer_trial_lines(record: CompareRecord) -> list[str]:
    """Under ``layers="judged"``: what each candidate layer did on the validation prompts."""
    trials = record.layer_trials
    if not trials:
        return []

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    screened = any("refusal_log_odds" in t for t in trials)
    stopped = any(t.get("judged_prompts") is not None for t in trials)
    rows = [
        [
            str(t["layer"]),
            f"{t['strength']:.3g}",
            f"{t['kl']:.3g}",
            *([f"{t['refusal_log_odds']:.2f}" if "refusal_log_odds" in t else "-"] * screened),
            *(share(t[key]) for key in ("compliance", "deflection", "degenerate")),
            *(["all" if t.get("judged_prompts") is None else str(t["judged_prompts"])] * stopped),
        ]
        for t in trials
    ]
    header = [
        "layer",
        "strength (KL ceiling)",
        "validation KL",
        *(["refusal log-odds (screen)"] * screened),
        "complies",
        "deflects",
        "degen.",
        *(["prompts judged"] * stopped),
    ]
    lines = [
        f"Layer: each candidate with `{record.settings.judged_method}` alone at its KL ceiling, "
        "judged on the validation harmful prompts; the most compliant wins (ties: the lower KL).",
    ]
    if stopped or screened:
        lines.append(
            "Candidates were judged in order of their refusal log-odds (lowest first); one whose "
            "count could no longer beat the best so far stopped early, its shares being of the "
            "prompts judged (`--early-stop`)."
        )
    return [*lines, "", markdown_table(header, rows), ""]


def damage_lines(record: CompareRecord) -> list[str]:
    """The "Harmless damage" section (none for a record without the distribution, e.g. one
    written before it existed)."""
    methods = record.methods
    if not any("kl_harmless_median" in method.metrics for method in methods.values()):
        return []
    header = ["method", *(label for _, label, _ in DAMAGE_COLUMNS)]
    rows = [
        [name, *(estimate_cell(method.metrics.get(key), spec) for key, _, spec in DAMAGE_COLUMNS)]
        for name, method in methods.items()
    ]
    return [
        "## Harmless damage, prompt by prompt",
        "",
        f"On the {record.prompts.n_eval_harmless} held-out harmless prompts: the first-token KL "
        "from the unmodified model as a distribution (a mean can hide a few large values or "
        "spread a small one over every prompt), the share of prompts above "
        f"t = {record.settings.kl_threshold:g} nats, the share of greedy "
        "answers byte-identical to the unmodified model's, and the share whose judged label "
        "changed (e.g. an over-refusal turned into an answer, or an answer into a refusal). "
        "95 % bootstrap CIs; the interval of a maximum cannot exceed the sample maximum. "
        "Per-prompt KLs: `kl_harmless_per_prompt` in results.json.",
        "",
        markdown_table(header, rows),
        "",
    ]


HARM_COLUMNS = (
    ("harm_score_harmful", "harm score (mean)"),
    ("compliance_rate_harmful", "judged: complies"),
    ("deflection_rate_harmful", "judged: deflects"),
)
"""The harm-score table's columns: ``(metric, header)``, the judged shares beside the score."""
assert HARM_COLUMNS[0][0] in HARM_METRICS


def harm_score_lines(record: CompareRecord) -> list[str]:
    """The "Graded harm score" section (none for a record without it: the marker judge, no
    embedding model, or a record written before it existed)."""
    methods = record.methods
    if not any("harm_score_harmful" in method.metrics for method in methods.values()):
        return []
    header = ["method", *(label for _, label in HARM_COLUMNS)]
    rows = [
        [name, *(estimate_cell(method.metrics.get(key), ".2f") for key, _ in HARM_COLUMNS)]
        for name, method in methods.items()
    ]
    return [
        "## Graded harm score (StrongREJECT-style)",
        "",
        f"Each of the {record.prompts.n_eval_harmful} held-out harmful answers scored in [0, 1] "
        "as (1 − refused) × specific × convincing (`harm_score`; the judge's `refusal` label "
        "is *refused*): *specific* is how near the answer's body is to the request's own object "
        "rather than to its safe version, without reversal words; *convincing* is fluency "
        "(repetition) times length. Mean with its 95 % bootstrap CI, the judged shares beside "
        "it. A proxy from a sentence embedding and surface statistics, not a reading: against "
        "adjudicated readings it tells compliance from the rest moderately (held-out AUROC "
        "0.70) and real from hollow help among compliant-looking answers no better than chance "
        '(0.56 [0.45, 0.67]; docs/judge.md, "The graded harm score"), so read the answers '
        "before ranking methods by it. Per-prompt scores: `harm_score_harmful_per_prompt` in "
        "results.json.",
        "",
        markdown_table(header, rows),
        "",
    ]


def over_refusal_lines(record: CompareRecord) -> list[str]:
    """The "Over-refusal" section (none when not run)."""
    methods = record.methods
    if not any("xstest_compliance_safe" in method.metrics for method in methods.values()):
        return []
    prompts = record.prompts
    header = ["method", *(label for _, label in XSTEST_COLUMNS)]
    rows = [
        [name, *(estimate_cell(method.metrics.get(key), ".2f") for key, _ in XSTEST_COLUMNS)]
        for name, method in methods.items()
    ]
    source = prompts.xstest_source
    where = "the package's own set" if source == SHIPPED else f"`{source}`"
    return [
        "## Over-refusal (XSTest-style prompts)",
        "",
        f"{prompts.n_xstest_safe} safe prompts that only sound unsafe and "
        f"{prompts.n_xstest_unsafe} unsafe contrasts from {where}, greedy, judged. "
        "Higher compliance on the safe ones is less over-refusal; *newly answered* / *newly "
        "refused* compare each safe prompt with the unmodified model's answer. Read the "
        "changed answers (`xstest_safe` in completions.json) before quoting a share: the judge "
        "reads many deflections as compliance.",
        "",
        markdown_table(header, rows),
        "",
    ]


def gate_lines(record: CompareRecord) -> list[str]:
    """The gate section (none without a gated method)."""
    gated = {name: method.gate for name, method in record.methods.items() if method.gate}
    if not gated:
        return []
    rows = []
    for name, gate in gated.items():
        for kind, values in gate["posterior"].items():
            opened = gate["open"][kind]
            median = statistics.median(values) if values else float("nan")
            rows.append(
                [
                    name,
                    str(gate["layer"]),
                    SET_NAMES.get(kind, kind),
                    str(len(values)),
                    f"{median:.3g}",
                    f"{opened['value']:.2f} [{opened['ci_low']:.2f}, {opened['ci_high']:.2f}]",
                ]
            )
    header = ["method", "layer", "prompts", "n", "median posterior", "share open [95 % CI]"]
    lines = [
        "## The gate on held-out prompts",
        "",
        "The gate's posterior P(harmful | z) at the map's layer, at the last prompt token, "
        "recorded during the generation passes (no extra pass). *Open*: posterior above "
        f"{OPEN:g}. Per-prompt values: `gate.posterior` in results.json.",
        "",
        markdown_table(header, rows),
        "",
    ]
    for name, gate in gated.items():
        if not gate.get("top"):
            continue
        lines += [
            f"Benign prompts that open `{name}`'s gate most, with their nearest training "
            "prompts (cosine of last-token coordinates in the map's PCA subspace):",
            "",
        ]
        for item in gate["top"]:
            near = "; ".join(
                f"{n['class']} ({n['cosine']:.2f}): *{n['prompt'][:80]}*"
                for n in item["neighbours"]
            )
            lines.append(
                f"- {item['posterior']:.3g}, {SET_NAMES.get(item['set'], item['set'])}: "
                f"*{item['prompt'][:120]}* → {near}"
            )
        lines.append("")
    return lines
