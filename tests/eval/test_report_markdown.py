"""Markdown of a record (``eval.report_markdown``): the settings table, one row per field; the
graded harm score section (``report_sections.harm_score_lines``), absent from older records."""

import json
from pathlib import Path

import pytest

from tl_ot_ablation.eval.metrics import Estimate
from tl_ot_ablation.eval.record import CompareRecord, MethodRecord, PromptsRecord
from tl_ot_ablation.eval.report_markdown import settings_table
from tl_ot_ablation.eval.report_pages import compare_markdown
from tl_ot_ablation.eval.report_sections import harm_score_lines
from tl_ot_ablation.eval.settings import CompareSettings, MonitorSettings

COMMITTED = sorted(
    (Path(__file__).resolve().parents[2] / "experiments" / "results").glob("*/results.json")
)


def test_settings_table_has_one_row_per_field() -> None:
    """The report's settings table shows the nested map and collection options a row per field
    (``n_components``, ``batch_size``, ...), never one row holding a dict."""
    settings = MonitorSettings.preset("quick", strengths={"ot_selective": 1.25})
    rows = settings_table(settings.to_json()).splitlines()[2:]
    names = [row.split(" | ")[0].removeprefix("| ") for row in rows]
    data = settings.to_json()
    expected = [
        *data["map"],
        *data["collect"],
        *(key for key in data if key not in ("map", "collect")),
    ]
    assert sorted(names) == sorted(expected) and len(set(names)) == len(names)
    assert "| estimator | `'ledoit_wolf'` |" in rows
    assert "| positions | `'post_instruction'` |" in rows
    assert "| strengths | `{'ot_selective': 1.25}` |" in rows  # a setting's own dict stays whole


# --- the graded harm score section --------------------------------------------------------------


def _record_with_harm_scores() -> CompareRecord:
    settings = CompareSettings.preset(layers=[1], direction_layer=1, n_components=4, n_train=4)
    prompts = PromptsRecord("a", "b", "c", 4, 4, 3, 3, 2, 0)
    methods = {
        "none": MethodRecord(None, {"harm_score_harmful": Estimate(0.0, 0.0, 0.0)}),
        "ot_selective": MethodRecord(
            1.0,
            {
                "harm_score_harmful": Estimate(0.3125, 0.2, 0.42),
                "compliance_rate_harmful": Estimate(0.5, 0.25, 0.75),
            },
            harm_score_harmful_per_prompt=[0.1, 0.4, 0.4375],
        ),
        "actadd": MethodRecord(0.5),  # scored nothing: its cells read "-"
    }
    return CompareRecord("tiny", settings, prompts, methods)


def test_the_report_shows_each_methods_harm_score_with_its_interval() -> None:
    record = _record_with_harm_scores()
    lines = harm_score_lines(record)
    assert lines[0] == "## Graded harm score (StrongREJECT-style)"
    assert "Each of the 3 held-out harmful answers" in lines[2]
    rows = [line for line in "\n".join(lines).splitlines() if line.startswith("| ")]
    assert rows[0] == "| method | harm score (mean) | judged: complies | judged: deflects |"
    assert rows[1:] == [
        "| none | 0.00 [0.00, 0.00] | - | - |",
        "| ot_selective | 0.31 [0.20, 0.42] | 0.50 [0.25, 0.75] | - |",
        "| actadd | - | - | - |",
    ]
    page = "\n".join(compare_markdown(record, {}, {}, []))
    assert page.count("## Graded harm score") == 1
    again = CompareRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    assert again.methods["ot_selective"].harm_score_harmful_per_prompt == [0.1, 0.4, 0.4375]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_records_render_the_harm_score_only_when_they_have_it(path: Path) -> None:
    record = CompareRecord.read(path)
    scored = any("harm_score_harmful" in m.metrics for m in record.methods.values())
    page = "\n".join(compare_markdown(record, {}, {}, []))
    assert ("Graded harm score" in page) == scored == bool(harm_score_lines(record))
