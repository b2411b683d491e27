"""The record codec (``eval.record_codec``), the typed records built on it (``eval.record``) and
the verdict policy's thresholds (``eval.verdict``): round trips, errors that name the field, and
each threshold's edge. No model."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from tl_ot_ablation.eval.damage import DAMAGE_METRICS
from tl_ot_ablation.eval.metrics import Estimate
from tl_ot_ablation.eval.record import METRICS, CompareRecord, MethodRecord, RecordError
from tl_ot_ablation.eval.record_codec import Record, decode
from tl_ot_ablation.eval.report_markdown import verdict
from tl_ot_ablation.eval.verdict import (
    DEGENERATE_SHARE,
    KL_SLACK,
    Outcome,
    compare_verdict,
)
from tl_ot_ablation.eval.xstest import XSTEST_METRICS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "experiments" / "results").glob("*/results.json"))


@dataclass(frozen=True)
class Part:
    name: str
    span: tuple[int, int]
    score: Estimate | None = None


@dataclass
class Toy(Record):
    FORMAT = "tl_ot_ablation.toy/2"
    FILE = "toy.json"
    DERIVED: ClassVar[dict[str, str]] = {"n_parts": "parts"}

    parts: list[Part]
    weights: dict[str, int | float] = field(default_factory=dict)
    note: str | None = None

    @property
    def n_parts(self) -> int:
        return len(self.parts)


def test_the_codec_writes_fields_in_order_and_reads_them_back(tmp_path: Path) -> None:
    toy = Toy([Part("a", (0, 2), Estimate(0.5, 0.25, 0.75))], {"x": 1, "y": 0.5})
    data = toy.to_json()
    assert list(data) == ["format", "parts", "n_parts", "weights", "note"]
    assert data["parts"][0] == {
        "name": "a",
        "span": [0, 2],
        "score": {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75},
    }
    assert Toy.read(toy.write(tmp_path / "toy.json")) == toy
    again = Toy.from_json(json.loads(json.dumps(data)))
    assert type(again.weights["x"]) is int and type(again.weights["y"]) is float  # kept as given


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "tl_ot_ablation.toy/3"}, r"record version 3; this package reads version 2"),
        ({"format": "tl_ot_ablation.other/2"}, r"format is 'tl_ot_ablation.other/2'"),
        ({"surprise": 1}, r"toy.json has unknown key\(s\) \['surprise'\]"),
        ({"parts": [{"name": "a"}]}, r"toy.json: parts\[0\] lacks \['span'\]"),
        ({"parts": [{"name": "a", "span": [0]}]}, r"parts\[0\].span must have 2 entries"),
        ({"parts": [{"name": 3, "span": [0, 1]}]}, r"parts\[0\].name must be str, got 3"),
        ({"weights": {"x": "heavy"}}, r"toy.json: weights.x must be int or float"),
        ({"parts": [{"name": "a", "span": [0, 1], "score": {"value": 1}}]}, r"score lacks"),
    ],
)
def test_codec_errors_name_the_field(change: dict, message: str) -> None:
    data = {"format": "tl_ot_ablation.toy/2", "parts": [], **change}
    with pytest.raises(RecordError, match=message):
        Toy.from_json(data)


def test_a_bool_is_not_a_number_and_an_int_is_a_float() -> None:
    with pytest.raises(RecordError, match="must be float"):
        decode(float, True, "x")
    assert decode(float, 2, "x") == 2.0 and type(decode(float, 2, "x")) is float
    with pytest.raises(RecordError, match="must be int"):
        decode(int, 2.0, "x")


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
