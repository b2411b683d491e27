"""The record codec (``eval.record_codec``): fields written in order and read back, errors that
name the field. No model."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from tl_ot_ablation.eval.metrics import Estimate
from tl_ot_ablation.eval.record import RecordError
from tl_ot_ablation.eval.record_codec import Record, decode


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
