"""Markdown of a record (``eval.report_markdown``): the settings table, one row per field."""

from tl_ot_ablation.eval.report_markdown import settings_table
from tl_ot_ablation.eval.settings import MonitorSettings


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
