"""Multiple-choice capability: the shipped questions, the loaders, and logit scoring."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from tl_ot_ablation.eval.capability import (
    LETTERS,
    Question,
    answers,
    capability_accuracy,
    letter_token_ids,
    load_questions,
    shipped_questions,
)
from tl_ot_ablation.eval.evaluate import next_token_logprobs


def test_shipped_questions_are_balanced_and_well_formed() -> None:
    questions = shipped_questions()
    assert len(questions) >= 200
    assert len({q.question for q in questions}) == len(questions)
    letters = Counter(q.answer for q in questions)
    assert set(letters) == set(LETTERS) and max(letters.values()) - min(letters.values()) <= 10
    assert set(Counter(q.topic for q in questions)) == {"arithmetic", "code", "science", "everyday"}


def test_mmlu_csv_with_and_without_header(tmp_path: Path) -> None:
    rows = ["What is 2+2?,3,4,5,6,B", '"Capital of France?",Paris,Rome,Oslo,Bern,a']
    plain, headed = tmp_path / "plain.csv", tmp_path / "headed.csv"
    plain.write_text("\n".join(rows) + "\n")
    headed.write_text("question,A,B,C,D,answer\n" + "\n".join(rows) + "\n")
    for path in (plain, headed):
        questions = load_questions(path)
        assert [q.answer for q in questions] == ["B", "A"]
        assert questions[1].choices == ("Paris", "Rome", "Oslo", "Bern")
    shipped = tmp_path / "q.json"
    shipped.write_text(json.dumps([{"question": "x?", "choices": list("abcd"), "answer": "D"}]))
    assert load_questions(shipped)[0].answer == "D"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("q,1,2,3,4,E\n", r"row 1: answer must be one of"),
        ("q,1,2\n", "row 1: expected"),
        ("", "no questions"),
    ],
)
def test_bad_question_files_name_the_row(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_questions(path)


def test_answers_are_the_argmax_letter_of_the_next_token(tiny_bridge) -> None:
    questions = shipped_questions()[:6]
    correct = answers(tiny_bridge, questions, batch_size=4)
    logprobs = next_token_logprobs(tiny_bridge, [q.prompt() for q in questions])
    chosen = logprobs[:, letter_token_ids(tiny_bridge.tokenizer)].argmax(-1)
    expected = [float(LETTERS[int(i)] == q.answer) for i, q in zip(chosen, questions, strict=True)]
    assert correct.tolist() == expected
    estimate = capability_accuracy(tiny_bridge, questions, batch_size=4)
    assert estimate.value == pytest.approx(sum(expected) / len(expected))
    assert estimate.ci_low <= estimate.value <= estimate.ci_high


def test_hooks_change_the_answers_only_through_the_logits(tiny_bridge) -> None:
    questions = shipped_questions()[:4]

    def flip(resid, *, hook):
        return -resid

    hooked = answers(tiny_bridge, questions, fwd_hooks=[("blocks.1.hook_resid_pre", flip)])
    assert hooked.shape == (4,) and set(hooked.tolist()) <= {0.0, 1.0}
    assert torch.equal(answers(tiny_bridge, questions), answers(tiny_bridge, questions))


def test_a_question_needs_four_choices_and_a_letter() -> None:
    with pytest.raises(ValueError, match="four non-empty choices"):
        Question("q?", ("a", "b", "c", ""), "A")
    with pytest.raises(ValueError, match="answer must be"):
        Question("q?", ("a", "b", "c", "d"), "E")
