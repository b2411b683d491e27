"""The prompts a job runs on (``eval.prompt_sets``): overlaps found, over-refusal prompts only when
asked, questions recorded as asked."""

import json
from pathlib import Path

import pytest

import tl_ot_ablation as tlo
from tl_ot_ablation.eval.jobs import JobPrompts, PromptFiles
from tl_ot_ablation.eval.prompt_sets import overlap
from tl_ot_ablation.eval.settings import CompareSettings


def test_overlap_is_case_and_space_insensitive() -> None:
    assert overlap(["Bake a cake", "x"], ["  bake a CAKE ", "y"]) == ["  bake a CAKE "]


def test_over_refusal_prompts_are_off_unless_asked(tmp_path: Path) -> None:
    settings = CompareSettings(n_xstest=3)
    assert JobPrompts.shipped(settings).held_out.xstest is None
    asked = JobPrompts.shipped(settings, PromptFiles(xstest="shipped")).held_out
    assert asked.xstest is not None and len(asked.xstest.safe) == len(asked.xstest.unsafe) == 3
    assert list(asked.sets()) == ["harmful", "harmless", "xstest_safe", "xstest_unsafe"]
    with pytest.raises(FileNotFoundError):
        JobPrompts.shipped(settings, PromptFiles(xstest=tmp_path / "nope.csv"))


def test_a_byte_order_mark_does_not_hide_an_overlap(tmp_path: Path) -> None:
    from tl_ot_ablation.eval.jobs import JobPrompts, PromptFiles
    from tl_ot_ablation.eval.settings import FitSettings

    train, held_out = tmp_path / "train.txt", tmp_path / "eval.txt"
    train.write_bytes(b"\xef\xbb\xbfsteal a car\nrob a bank\n")
    held_out.write_text("steal a car\nforge a passport\n")
    with pytest.raises(ValueError, match="also appear in the training prompts"):
        files = PromptFiles(harmful=train, eval_harmful=held_out)
        JobPrompts.shipped(FitSettings(n_train=2), files)


def test_fewer_questions_than_asked_are_recorded_as_asked(tmp_path: Path) -> None:
    """A file of 2 questions with n_questions=4 ran 2 while results.json said 4."""
    from tl_ot_ablation.eval.jobs import JobPrompts, PromptFiles
    from tl_ot_ablation.eval.settings import CompareSettings
    from tl_ot_ablation.lens.tiny import tiny_model

    question = {"question": "2 + 2?", "choices": ["3", "4", "5", "6"], "answer": "B"}
    path = tmp_path / "q.json"
    path.write_text(json.dumps([question, {**question, "question": "3 + 3?"}]))
    settings = CompareSettings.preset(
        n_questions=4, n_train=4, n_eval=2, n_texts=1, methods=("none", "direction_ablation"),
        layers=[1], n_components=4, match_kl=None, select="kl", max_new_tokens=2, detect=False,
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"hold\(s\) 2 questions, fewer than n_questions=4"):
        prompts = JobPrompts.shipped(settings, PromptFiles(questions=path))
    record = tlo.compare(tiny_model(n_ctx=512), settings=settings, prompts=prompts, progress=False)
    assert record.settings.n_questions == 4 and record.prompts.n_questions == 2
