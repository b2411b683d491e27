"""The typed records (``eval.record``): committed records round-trip and load without newer
fields, metrics written flat, the compare format that ``--strengths-from`` reads."""

import json
from pathlib import Path

import pytest

from tests.helpers import compare_record
from tl_ot_ablation.eval.damage import DAMAGE_METRICS
from tl_ot_ablation.eval.metrics import Estimate
from tl_ot_ablation.eval.record import (
    COMPARE_FORMAT,
    METRICS,
    CompareRecord,
    MethodRecord,
    RecordError,
    SweepRecord,
)
from tl_ot_ablation.eval.report_sections import damage_lines, gate_lines, harm_score_lines
from tl_ot_ablation.eval.xstest import XSTEST_METRICS

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "experiments" / "results").glob("*/results.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_records_round_trip(path: Path) -> None:
    record = CompareRecord.read(path)
    data = record.to_json()
    assert CompareRecord.from_json(json.loads(json.dumps(data))) == record
    assert list(data)[:3] == ["format", "model", "seed"]


def test_metrics_are_written_flat_in_metrics_order() -> None:
    assert METRICS[-len(DAMAGE_METRICS) - len(XSTEST_METRICS) :] == (
        *DAMAGE_METRICS,
        *XSTEST_METRICS,
    )
    estimate = Estimate(0.1, 0.0, 0.2)
    method = MethodRecord(1.0, {"kl_harmless": estimate, "compliance_rate_harmful": estimate})
    keys = list(method.to_json())
    assert keys[:3] == ["strength", "compliance_rate_harmful", "kl_harmless"]
    with pytest.raises(RecordError, match="unknown metric"):
        MethodRecord(1.0, {"vibes": estimate})


# --- committed records written before these fields still load -------------------------------


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments" / "results").glob("*/results.json")), ids=str
)
def test_committed_records_load_and_render_with_or_without_the_new_fields(path: Path) -> None:
    """Every committed record round-trips; one written before the per-prompt damage, the gate
    report and the harm score renders without their sections, a newer one with all three."""
    record = CompareRecord.read(path)
    data = record.to_json()
    assert CompareRecord.from_json(json.loads(json.dumps(data))).to_json() == data
    newer = any(method.kl_harmless_per_prompt for method in record.methods.values())
    if newer:
        assert damage_lines(record) and gate_lines(record) and harm_score_lines(record)
        return
    for method in record.methods.values():
        assert method.kl_harmless_per_prompt == [] and method.gate is None
        assert method.harm_score_harmful_per_prompt == []
        assert "harm_score_harmful" not in method.metrics
    assert damage_lines(record) == [] and gate_lines(record) == []
    assert harm_score_lines(record) == []


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments" / "results").glob("*/sweep.json")), ids=str
)
def test_committed_sweeps_load_without_the_distribution(path: Path) -> None:
    record = SweepRecord.read(path)
    assert all(p.kl_harmless_median is None for p in record.points)
    assert SweepRecord.from_json(record.to_json()).to_json() == record.to_json()


def test_compare_record_format_is_what_strengths_from_reads(tmp_path: Path) -> None:
    path = compare_record(tmp_path, {"ot_full": 0.75})
    assert json.loads(path.read_text())["format"] == COMPARE_FORMAT
