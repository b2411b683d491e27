"""The README's code blocks run, and its numbers are the records'.

- The Quickstart and "The core on plain tensors" blocks are the demo scripts verbatim.
- Every other python block of the README is executed, as written, in README order in one
  namespace (the README says they run in order), on a tiny random-weight model standing in for
  ``tlo.load_model()``: the only substitution.
- The headline table ("What it found") is recomputed from the committed records, and the docs
  home page carries the same table.
"""

import json
import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Blocks that are demo scripts verbatim (compared, not executed here; the demos are run below).
DEMO_BLOCKS = {"Quickstart": "quickstart.py", "The core on plain tensors": "core_tensors.py"}
RESULTS = ROOT / "experiments" / "results"
PACKAGE_RUN = RESULTS / "compare-default-timed"  # the package's held-out prompts
REAL_RUN = RESULTS / "compare-shared-xstest"  # ../shared/data and XSTest
_FENCE = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _block_after(heading: str) -> str:
    text = README.read_text()
    match = re.search(rf"## {re.escape(heading)}\n\n```python\n(.*?)```", text, re.S)
    assert match, f"README.md lost its '## {heading}' python block"
    return match.group(1)


def python_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line, heading, code)`` of every fenced python block, with the ``##`` heading above it."""
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()]
        headings = re.findall(r"^## (.+)$", before, re.M)
        blocks.append((before.count("\n") + 2, headings[-1] if headings else "", match.group(1)))
    return blocks


@pytest.mark.parametrize(("heading", "script"), list(DEMO_BLOCKS.items()))
def test_readme_blocks_are_the_demo_scripts(heading: str, script: str) -> None:
    assert _block_after(heading) == (ROOT / "demos" / script).read_text()


def test_core_demo_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "demos" / "core_tensors.py"), run_name="__main__")
    assert (tmp_path / "maps" / "demo" / "config.json").is_file()
    assert "W2 mean part" in capsys.readouterr().out


def test_the_other_readme_blocks_run_on_a_tiny_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each block exactly as the README has it; ``tlo.load_model`` gives a tiny model with the
    embedded model's 28 layers (so layer numbers in the text stay valid), nothing else changes."""
    import torch

    import tl_ot_ablation
    from tl_ot_ablation.lens.tiny import tiny_model

    def load_tiny_model(*args: object, **kwargs: object) -> object:
        return tiny_model(n_layers=28, d_model=64, n_ctx=1024)

    monkeypatch.setattr(tl_ot_ablation, "load_model", load_tiny_model)
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in python_blocks(README.read_text()) if b[1] not in DEMO_BLOCKS]
    assert blocks, "the README has no python block besides the demo scripts"
    namespace: dict[str, object] = {"__name__": "__readme__"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model's small ops: seconds on 1 thread, minutes on a busy 2
    try:
        for line, heading, code in blocks:
            try:
                exec(compile(code, f"README.md:{line} ({heading})", "exec"), namespace)
            except Exception as error:
                failed = f"README.md block at line {line} ({heading}) failed"
                raise AssertionError(failed) from error
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "unmodified" in out  # the patching block printed its scores
    assert (tmp_path / "maps" / "l17" / "config.json").is_file()  # the save/load block ran


def test_every_python_block_is_a_demo_or_executed() -> None:
    """The test above executes every block that is not a demo script; a demo heading appears
    once, so no block escapes both checks."""
    headings = [heading for _, heading, _ in python_blocks(README.read_text())]
    for heading in DEMO_BLOCKS:
        assert headings.count(heading) == 1, f"'## {heading}' must hold exactly one python block"


def _load(run: Path) -> tuple[dict, dict]:
    return json.loads((run / "results.json").read_text()), json.loads(
        (run / "read.json").read_text()
    )


def _read_row(where: str, run: Path) -> list[str]:
    """Read compliance of both methods, the unmodified count and the paired difference."""
    reading = _load(run)[1]
    read = reading["methods"]
    n = read["ot_selective"]["harmful"]["n"]

    def count(method: str) -> int:
        return read[method]["harmful"]["labels"].get("compliance", 0)

    paired = reading["paired"]["ot_selective"]["difference"]
    signed = f"{paired['value']:+.2f} [{paired['ci_low']:+.2f}, {paired['ci_high']:+.2f}]"
    return [
        f"{where}, {n} harmful",
        f"read compliance (unmodified {count('none')})",
        f"{count('direction_ablation')} of {n}",
        f"{count('ot_selective')} of {n}, paired {signed}",
    ]


def _damage_rows(where: str, run: Path, moved: bool) -> list[list[str]]:
    """Mean / median harmless KL, and the shares as counts, of both methods."""
    methods = _load(run)[0]["methods"]
    n = _load(run)[0]["prompts"]["n_eval_harmless"]

    def cells(metric: str, fmt: str) -> list[str]:
        values = [methods[m][metric]["value"] for m in ("direction_ablation", "ot_selective")]
        return [format(v, fmt) if fmt else f"{round(v * n)} of {n}" for v in values]

    mean, median = cells("kl_harmless", ".3g"), cells("kl_harmless_median", ".3g")
    rows = [
        [
            where,
            "mean / median first-token KL",
            *(f"{a} / {b}" for a, b in zip(mean, median, strict=True)),
        ],
    ]
    if moved:
        rows.append(
            ["", "prompts moved by more than 0.01 nats", *cells("kl_harmless_share_above", "")]
        )
    rows.append(
        ["", "answers identical to the unmodified model's", *cells("identical_rate_harmless", "")]
    )
    return rows


def _plain_rows(run: Path) -> list[list[str]]:
    """XSTest compliance, prose perplexity and capability, the unmodified model's beside."""
    record = _load(run)[0]
    methods, prompts = record["methods"], record["prompts"]
    rows = []
    for where, metric, what, fmt in (
        (
            f"XSTest, {prompts['n_xstest_safe']} safe",
            "xstest_compliance_safe",
            "judged compliance",
            ".2f",
        ),
        (
            f"XSTest, {prompts['n_xstest_unsafe']} unsafe",
            "xstest_compliance_unsafe",
            "judged compliance",
            ".2f",
        ),
        (f"{prompts['n_texts']} prose paragraphs", "ppl_text", "perplexity", ".1f"),
        (
            f"{prompts['n_questions']} multiple-choice questions",
            "capability_accuracy",
            "accuracy",
            ".2f",
        ),
    ):
        value = {m: format(methods[m][metric]["value"], fmt) for m in methods}
        rows.append(
            [
                where,
                f"{what} (unmodified {value['none']})",
                value["direction_ablation"],
                value["ot_selective"],
            ]
        )
    return rows


def headline_rows() -> list[list[str]]:
    """The headline table's rows as the two records give them: the package's held-out prompts
    (the timed default run) and real prompts with XSTest, each with its blind reading."""
    return [
        _read_row("package", PACKAGE_RUN),
        _read_row("real", REAL_RUN),
        *_damage_rows(
            f"package, {_load(PACKAGE_RUN)[0]['prompts']['n_eval_harmless']} harmless",
            PACKAGE_RUN,
            False,
        ),
        *_damage_rows(
            f"real, {_load(REAL_RUN)[0]['prompts']['n_eval_harmless']} everyday", REAL_RUN, True
        ),
        *_plain_rows(REAL_RUN),
    ]


def table_after(text: str, heading: str) -> list[list[str]]:
    """The cells of the first table under ``## heading``, header and rule excluded."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_headline_table_is_the_records() -> None:
    assert table_after(README.read_text(), "What it found") == headline_rows()


def test_the_docs_home_page_has_the_same_table() -> None:
    home = (ROOT / "docs" / "index.md").read_text()
    assert table_after(home, "What it found") == headline_rows()


def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300, "the README is a front door: at most 300 lines"
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [target for target in targets if not re.match(r"[a-z]+://", target)]
    assert local, "the README links to no docs page"
    assert not [target for target in local if not (ROOT / target).exists()]


@pytest.mark.slow
def test_quickstart_runs_on_the_embedded_model(capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(ROOT / "demos" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.count("[none     ]") == 6 and out.count("[direction]") == 6
    assert out.count("[gated OT ]") == 6
    assert "InterventionSet(1 hook points, GaussianOTMap" in out and "strength=2.0" in out
    assert "I'm sorry" in out or "I can't" in out
