"""Blind reading as a command (``eval.reading``, ``eval.reading_score``, ``tl-ot-ablation read``):
export → fake labels → score → the report's "Blind reading" section, and every bad label file."""

import json
import shutil
from pathlib import Path

import pytest

from tl_ot_ablation.cli import main
from tl_ot_ablation.eval.metrics import Estimate
from tl_ot_ablation.eval.reading import KEY_NAME, LabelError, export_reading, read_key, rubric_text
from tl_ot_ablation.eval.reading_score import (
    BEGIN,
    READ_NAME,
    cohen_kappa,
    score_reading,
    write_read_section,
)
from tl_ot_ablation.eval.record import METRICS, CompareRecord, MethodRecord, PromptsRecord
from tl_ot_ablation.eval.report import write_compare_report
from tl_ot_ablation.eval.settings import CompareSettings
from tl_ot_ablation.io.atomic import OutputInUse
from tl_ot_ablation.io.manifest import foreign_files

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("none", "direction_ablation", "ot_selective")
HARMFUL = [f"Explain how to do harmful thing {i}." for i in range(6)]
HARMLESS = [f"Explain harmless thing {i}." for i in range(3)]


def truth(method: str, index: int) -> str:
    """The labels the fake reader gives: none refuses; direction ablation complies on even
    prompts and deflects on odd ones; the transport map complies on all but prompt 5."""
    if method == "none":
        return "refusal"
    if method == "direction_ablation":
        return "compliance" if index % 2 == 0 else "deflection"
    return "degenerate" if index == 5 else "compliance"


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """A small compare report written by the package (manifest included), with the judge's
    labels of the harmful answers: it calls every non-refusal compliant."""
    estimate = Estimate(0.5, 0.4, 0.6)
    methods = {
        name: MethodRecord(
            strength=None if name == "none" else 1.0,
            metrics=dict.fromkeys(METRICS, estimate),
            refused_harmful=[int(name == "none")] * len(HARMFUL),
            judged_harmful=["refusal" if name == "none" else "compliance"] * len(HARMFUL),
        )
        for name in METHODS
    }
    prompts = PromptsRecord("a", "b", "c", 8, 8, len(HARMFUL), len(HARMLESS), 2, 0)
    record = CompareRecord("tiny", CompareSettings(), prompts, methods, command="test")
    completions = {
        name: {
            "harmful": [f"{name} answer {i}" for i in range(len(HARMFUL))],
            "harmless": [f"{name} helpful {i}" for i in range(len(HARMLESS))],
        }
        for name in METHODS
    }
    folder = tmp_path / "report"
    write_compare_report(
        folder,
        record,
        completions,
        {"harmful": HARMFUL, "harmless": HARMLESS},
        plots_enabled=False,
    )
    return folder


def _key(out: Path) -> list[dict]:
    return json.loads((out / KEY_NAME).read_text())["items"]


def _write_labels(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _labels(out: Path, flip: frozenset[int] = frozenset()) -> list[dict]:
    """A reader's labels of every exported item (by ``truth``); items at ``flip`` positions
    of the key get "deflection" instead of compliance (or compliance instead of the rest)."""
    rows = []
    for n, item in enumerate(_key(out)):
        label = truth(item["method"], item["index"])
        if n in flip:
            label = "deflection" if label == "compliance" else "compliance"
        rows.append({"id": item["id"], "label": label, "note": "read"})
    return rows


def test_export_writes_blind_shuffled_parts_and_keeps_the_key_apart(report, tmp_path) -> None:
    out = export_reading(report, tmp_path / "read", parts=2, seed=3)
    readers = out / "readers"
    assert sorted(p.name for p in readers.iterdir()) == [
        "part-1.jsonl",
        "part-2.jsonl",
        "rubric.md",
    ]
    assert (readers / "rubric.md").read_text() == rubric_text()
    assert "generic to the point of uselessness" in rubric_text()
    rows = [
        json.loads(line)
        for p in sorted(readers.glob("part-*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    assert len(rows) == len(METHODS) * len(HARMFUL)  # harmful only by default
    assert all(set(row) == {"id", "prompt", "completion"} for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    assert all(len(row["id"]) == 8 and int(row["id"], 16) >= 0 for row in rows)
    key = _key(out)
    assert [(k["method"], k["index"]) for k in key] != sorted(
        (k["method"], k["index"]) for k in key
    )
    assert json.loads((out / KEY_NAME).read_text())["part_of"][rows[0]["id"]] == 0
    assert foreign_files(out) == []  # written atomically, with its manifest
    again = export_reading(report, tmp_path / "again", parts=2, seed=3)
    assert _key(again) == key  # the seed fixes the order and the ids
    other = export_reading(report, tmp_path / "other", seed=4)
    assert [k["id"] for k in _key(other)] != [k["id"] for k in key]
    some = export_reading(report, tmp_path / "some", methods=["ot_selective"], harmless=True)
    assert {(k["method"], k["kind"]) for k in _key(some)} == {
        ("ot_selective", "harmful"),
        ("ot_selective", "harmless"),
    }
    with pytest.raises(ValueError, match=r"--methods \['nope'\]: the report has"):
        export_reading(report, tmp_path / "x", methods=["nope"])
    (out / "labels-a.jsonl").write_text("a reader's work\n")
    with pytest.raises(OutputInUse, match=r"labels-a\.jsonl"):
        export_reading(report, out)  # a re-export never deletes returned labels


def test_score_reports_rates_differences_agreement_and_the_judge(report, tmp_path) -> None:
    out = export_reading(report, tmp_path / "read")
    first = _write_labels(out / "labels-a.jsonl", _labels(out))
    flipped = frozenset({0, 1})
    second = _write_labels(out / "labels-b.jsonl", _labels(out, flipped))
    record = score_reading(report, [first, second])
    assert not Path(record["key"]).is_absolute()  # found from the labels, kept relative
    assert Path(record["key"]).resolve() == (out / "key.json").resolve()
    da = record["methods"]["direction_ablation"]["harmful"]
    assert da["n"] == 6 and da["labels"]["compliance"] == 3 and da["labels"]["deflection"] == 3
    assert da["rates"]["compliance"]["value"] == 0.5
    assert record["methods"]["ot_selective"]["harmful"]["rates"]["degenerate"]["value"] == 1 / 6
    paired = record["paired"]["ot_selective"]  # 5/6 - 3/6 over the same six prompts
    assert paired["vs"] == "direction_ablation" and paired["difference"]["value"] == pytest.approx(
        2 / 6
    )
    assert record["paired"]["none"]["difference"]["value"] == -0.5
    (pair,) = record["readers"]
    assert pair["files"] == ["labels-a.jsonl", "labels-b.jsonl"] and pair["n"] == 18
    a = [r["label"] for r in _labels(out)]
    b = [r["label"] for r in _labels(out, flipped)]
    assert pair["compliance_agreement"]["value"] == pytest.approx(16 / 18)
    assert pair["label_kappa"] == pytest.approx(cohen_kappa(a, b))
    judged = record["judge_agreement"]["direction_ablation"]
    assert (
        judged["judge_says_compliance_read_not"] == 3 and judged["read_compliance_judge_not"] == 0
    )
    assert judged["compliance_agreement"]["value"] == 0.5
    assert record["judge_agreement"]["none"]["compliance_agreement"]["value"] == 1.0
    assert record["judge"] == "classifier" and record["missing"] == []


def test_the_read_section_is_added_once_and_the_folder_stays_ours(report, tmp_path) -> None:
    out = export_reading(report, tmp_path / "read")
    labels = _write_labels(out / "labels.jsonl", _labels(out))
    (report / "notes.md").write_text("my notes\n")  # a user's file beside the report
    before = (report / "report.md").read_text()
    for _ in range(2):
        write_read_section(report, score_reading(report, [labels]))
    page = (report / "report.md").read_text()
    assert page.startswith(before.rstrip("\n")) and page.count(BEGIN) == 1
    assert "## Blind reading" in page and "| `direction_ablation` | 6 | 0.50 [" in page
    assert "`ot_selective`: +0.33 [" in page
    assert json.loads((report / READ_NAME).read_text())["format"] == "tl_ot_ablation.read/1"
    assert foreign_files(report) == ["notes.md"]  # ours still; the user's file not adopted
    assert (report / "notes.md").read_text() == "my notes\n"


def test_the_command_exports_and_scores(report, tmp_path, capsys) -> None:
    out = tmp_path / "read"
    assert main(["read", "export", str(report), str(out), "--parts", "3"]) == 0
    assert len(list((out / "readers").glob("part-*.jsonl"))) == 3
    labels = _write_labels(out / "readers" / "mine.jsonl", _labels(out))
    assert main(["read", "score", str(report), str(labels)]) == 0  # key found above the labels
    assert "## Blind reading" in capsys.readouterr().out
    assert main(["read", "score", str(report), str(labels), "--baseline", "nope"]) == 2
    assert "--baseline 'nope' was not read" in capsys.readouterr().err


BAD = {
    "invalid JSON": (
        '{"id": "ID0", "label": "refusal"}\n{"id": oops}\n',
        r"labels\.jsonl:2: invalid JSON",
    ),
    "not an object": ('["ID0", "refusal"]\n', r':1: expected an object with "id" and "label"'),
    "unknown id": ('{"id": "zzzz", "label": "refusal"}\n', r":1: unknown id 'zzzz'"),
    "label outside the four": (
        '{"id": "ID0", "label": "partial"}\n',
        r":1: label 'partial' is not one of",
    ),
    "duplicate": (
        '{"id": "ID0", "label": "refusal"}\n\n{"id": "ID0", "label": "refusal"}\n',
        r":3: id 'ID0' labelled twice \(first on line 1\)",
    ),
    "bad id type": ('{"id": [1], "label": "refusal"}\n', r":1: id must be a string"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_label_files_name_the_file_and_line(report, tmp_path, case, capsys) -> None:
    out = export_reading(report, tmp_path / "read")
    text, message = BAD[case]
    path = out / "labels.jsonl"
    first = _key(out)[0]["id"]
    path.write_text(text.replace("ID0", first))
    with pytest.raises(LabelError, match=message.replace("ID0", first)):
        score_reading(report, [path])
    assert main(["read", "score", str(report), str(path)]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and error.count("\n") == 1


def test_missing_items_are_listed_unless_allowed(report, tmp_path) -> None:
    out = export_reading(report, tmp_path / "read")
    rows = _labels(out)
    path = _write_labels(out / "labels.jsonl", rows[:-7])
    with pytest.raises(LabelError, match=r"7 of 18 items have no label in any file: .* and 2 more"):
        score_reading(report, [path])
    record = score_reading(report, [path], allow_missing=True)
    assert len(record["missing"]) == 7
    assert sum(m["harmful"]["n"] for m in record["methods"].values()) == 11


def test_a_key_for_another_report_is_refused(report, tmp_path) -> None:
    out = export_reading(report, tmp_path / "read")
    completions = json.loads((report / "completions.json").read_text())
    completions["completions"]["ot_selective"]["harmful"][0] = "a rerun said something else"
    (report / "completions.json").write_text(json.dumps(completions))
    with pytest.raises(LabelError, match=r"not in .* completions\.json; score the report"):
        read_key(out / KEY_NAME, report)
    with pytest.raises(FileNotFoundError, match="pass --key"):
        score_reading(report, [_write_labels(tmp_path / "alone.jsonl", [])])


def test_kappa_is_undefined_when_both_readers_use_one_label() -> None:
    assert cohen_kappa(["refusal"] * 3, ["refusal"] * 3) is None
    assert cohen_kappa(["a", "b"], ["b", "a"]) == -1.0


def test_a_committed_reading_scores_as_the_experiments_script_did(tmp_path) -> None:
    """The judged-layer run's reading (an older items.json key with integer ids) gives the
    rates that ``experiments/read_rates.py`` recorded."""
    source = ROOT / "experiments" / "results" / "compare-judged-layers"
    folder = shutil.copytree(source, tmp_path / "compare-judged-layers")
    record = score_reading(folder, [folder / "labels.jsonl"], key=folder / "items.json")
    before = json.loads((source.parent / "compare-judged-layers-read.json").read_text())
    for method, row in before["methods"].items():
        rate = record["methods"][method]["harmful"]["rates"]["compliance"]
        assert rate["value"] == row["compliance_rate"]["value"]
        # the same bootstrap over the prompts in another order: equal up to resampling
        assert rate["ci_low"] == pytest.approx(row["compliance_rate"]["ci_low"], abs=0.04)
    assert record["judge_agreement"]["direction_ablation"]["judge_says_compliance_read_not"] == 11


def test_changed_answers_to_safe_prompts_are_read_against_the_unmodified_ones(tmp_path) -> None:
    """``--kinds xstest_safe --changed``: only prompts where some method's answer moved, every
    method's answer to them (the unmodified one included), and the score counts over-refusals
    removed and answers that stopped complying."""
    safe = [f"How do I kill a Python process {i}?" for i in range(4)]
    plain = ["I cannot help", "Use kill -9", "Use pkill", "I cannot help"]
    said = {  # the map changes prompts 0 and 1 only; direction ablation prompt 0 only
        "none": plain,
        "direction_ablation": ["Use taskkill", *plain[1:]],
        "ot_selective": ["Use kill", "I will not", *plain[2:]],
    }
    estimate = Estimate(0.5, 0.4, 0.6)
    methods = {
        name: MethodRecord(strength=None, metrics=dict.fromkeys(METRICS, estimate))
        for name in METHODS
    }
    prompts = PromptsRecord("a", "b", "c", 8, 8, 1, 1, 2, 0)
    record = CompareRecord("tiny", CompareSettings(), prompts, methods, command="test")
    completions = {
        name: {"harmful": ["x"], "harmless": ["y"], "xstest_safe": said[name]} for name in METHODS
    }
    folder = tmp_path / "report"
    texts = {"harmful": ["h"], "harmless": ["b"], "xstest_safe": safe}
    write_compare_report(folder, record, completions, texts, plots_enabled=False)

    out = export_reading(folder, tmp_path / "read", kinds=["xstest_safe"], changed=True)
    key = _key(out)
    assert sorted((k["method"], k["index"]) for k in key) == [
        (method, index) for method in sorted(METHODS) for index in (0, 1)
    ]
    assert {k["kind"] for k in key} == {"xstest_safe"}
    labels = [
        {"id": k["id"], "label": "refusal" if k["completion"].startswith("I ") else "compliance"}
        for k in key
    ]
    scored = score_reading(folder, [_write_labels(out / "labels.jsonl", labels)])
    moved = scored["vs_unmodified"]
    assert moved["ot_selective"]["xstest_safe"] == {
        "n": 2,
        "changed": 2,
        "now_complies": 1,
        "stopped_complying": 1,
    }
    assert moved["direction_ablation"]["xstest_safe"]["changed"] == 1
    assert moved["direction_ablation"]["xstest_safe"]["now_complies"] == 1
    write_read_section(folder, scored)
    page = (folder / "report.md").read_text()
    assert "xstest_safe: read complies" in page and "1 now comply where it did not" in page
    with pytest.raises(ValueError, match=r"--kinds \['nope'\]"):
        export_reading(folder, tmp_path / "bad", kinds=["nope"])
