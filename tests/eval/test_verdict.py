"""The verdict (``eval.verdict`` and its text in ``eval.report_markdown``): each threshold's edge,
honest about ties, losses and gibberish, judged compliance."""

from pathlib import Path

from tl_ot_ablation.eval.metrics import Estimate, with_ci
from tl_ot_ablation.eval.record import CompareRecord, MethodRecord
from tl_ot_ablation.eval.report_markdown import verdict
from tl_ot_ablation.eval.verdict import DEGENERATE_SHARE, KL_SLACK, Outcome, compare_verdict

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "experiments" / "results").glob("*/results.json"))


def _method(compliance: float, kl: float, degenerate: float = 0.0) -> MethodRecord:
    def e(v: float) -> Estimate:
        return Estimate(v, v, v)

    metrics = {
        "compliance_rate_harmful": e(compliance),
        "deflection_rate_harmful": e(0.0),
        "degenerate_rate_harmful": e(degenerate),
        "refusal_rate_harmful": e(1 - compliance),
        "kl_harmless": e(kl),
    }
    return MethodRecord(1.0, metrics)


def test_the_kl_slack_and_degenerate_share_are_the_edges_of_the_verdict() -> None:
    reference = _method(0.5, 0.1)

    def outcome(method: MethodRecord) -> Outcome:
        found = compare_verdict(
            {"none": _method(0.0, 0.0), "direction_ablation": reference, "ot_full": method}
        )
        return found.methods[0].outcome

    assert outcome(_method(0.6, 0.1 * KL_SLACK)) is Outcome.MATCHES_OR_BEATS
    assert outcome(_method(0.6, 0.1 * KL_SLACK * 1.01)) is Outcome.HIGHER_KL
    assert outcome(_method(0.6, 0.05, DEGENERATE_SHARE)) is Outcome.MATCHES_OR_BEATS
    assert outcome(_method(0.6, 0.05, DEGENERATE_SHARE + 0.01)) is Outcome.DEGENERATE
    assert outcome(_method(0.4, 0.05)) is Outcome.WORSE


def test_verdict_reads_a_record_or_its_methods_json() -> None:
    record = CompareRecord.read(COMMITTED[0])
    as_json = {"methods": {n: m.to_json() for n, m in record.methods.items()}}
    assert verdict(record) == verdict(as_json)


def _record(
    ot_refused: list[int],
    ot_kl: float,
    degenerate: float = 0.0,
    da_refused: list[int] | None = None,
) -> dict:
    def method(refused: list[int], kl: float, degenerate: float = 0.0) -> dict:
        rate = with_ci([float(r) for r in refused]).to_dict()
        return {
            "refusal_rate_harmful": rate,
            "refused_harmful": refused,
            "kl_harmless": {"value": kl, "ci_low": kl, "ci_high": kl},
            "degenerate_rate_harmful": {"value": degenerate, "ci_low": 0.0, "ci_high": 1.0},
        }

    return {
        "methods": {
            "none": method([1] * 20, 0.0),
            "direction_ablation": method(da_refused or [0] * 19 + [1], 0.05),
            "ot_full": method(ot_refused, ot_kl, degenerate),
        }
    }


def test_verdict_is_honest_about_ties_losses_and_gibberish() -> None:
    from tl_ot_ablation.eval.report_markdown import verdict

    # One prompt ahead of 20 is a tie, not a win; ten ahead is a win.
    assert "matches direction ablation (ahead or level" in verdict(_record([0] * 20, 0.01))
    won = verdict(_record([0] * 20, 0.01, da_refused=[1] * 10 + [0] * 10))
    assert "beats direction ablation" in won and "interval" not in won.split(":")[0]
    assert "not significantly" in verdict(_record([0] * 18 + [1, 1], 0.01))
    assert "NOT beat" in verdict(_record([1] * 10 + [0] * 10, 0.01))
    assert "degenerate" in verdict(_record([0] * 20, 0.01, degenerate=0.9))
    assert "higher KL" in verdict(_record([0] * 20, 0.5))
    none_refuses = _record([0] * 20, 0.01)
    none_refuses["methods"]["none"]["refusal_rate_harmful"]["value"] = 0.0
    assert "nothing to remove" in verdict(none_refuses)
    fluent = _record([0] * 20, 0.01)
    assert "less fluent" not in verdict(fluent)  # no fluency figures, no claim
    for name, ppl in (("direction_ablation", 2.0), ("ot_full", 2.1)):
        fluent["methods"][name]["ppl_harmful_base"] = {"value": ppl, "ci_low": 1.8, "ci_high": 2.2}
    assert "less fluent" not in verdict(fluent)
    fluent["methods"]["ot_full"]["ppl_harmful_base"]["value"] = 3.9
    assert "less fluent" in verdict(fluent) and "3.9" in verdict(fluent)


def test_judged_verdict_compares_compliance_and_says_to_read() -> None:
    from tl_ot_ablation.eval.report_markdown import JUDGE_CAVEAT, verdict

    record = _record([0] * 20, 0.01)
    assert JUDGE_CAVEAT not in verdict(record)  # marker verdicts say nothing about the judge
    judged = {"none": ["refusal"] * 20, "direction_ablation": ["compliance"] * 20}
    judged["ot_full"] = ["compliance"] * 8 + ["deflection"] * 12
    for name, labels in judged.items():
        method = record["methods"][name]
        method["judged_harmful"] = labels
        for label in ("compliance", "deflection", "degenerate"):
            method[f"{label}_rate_harmful"] = with_ci([float(x == label) for x in labels]).to_dict()
    lines = verdict(record).splitlines()
    assert lines[0].startswith("- `ot_full` does NOT beat") and "judged compliance 0.40" in lines[0]
    assert "deflects on 0.60" in lines[0]
    assert lines[-1] == JUDGE_CAVEAT and "completions.json" in lines[-1]
