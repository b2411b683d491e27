"""Multiple-choice capability (``eval.capability``): the shipped questions, the loaders and their
errors, and logit scoring."""

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


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_a_question_file_with_a_byte_order_mark(tmp_path: Path, suffix: str) -> None:
    from tl_ot_ablation.eval.capability import load_questions

    path = tmp_path / f"q{suffix}"
    if suffix == ".json":
        text = json.dumps([{"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": "B"}])
    else:
        text = "question,A,B,C,D,answer\n2+2?,3,4,5,6,B\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    [question] = load_questions(path)
    assert question.question == "2+2?" and question.answer == "B"


# --- question files: empty, or with a string where a list belongs -------------------------------


def test_an_empty_question_file_is_refused(tmp_path: Path) -> None:
    from tl_ot_ablation.eval.capability import load_questions
    from tl_ot_ablation.eval.jobs import JobPrompts, PromptFiles
    from tl_ot_ablation.eval.settings import CompareSettings

    path = tmp_path / "q.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match=r"q\.json holds no questions.*--n-questions 0"):
        load_questions(path)
    with pytest.raises(ValueError, match="holds no questions"):
        JobPrompts.shipped(CompareSettings(n_questions=4, n_train=4), PromptFiles(questions=path))
    skipped = JobPrompts.shipped(
        CompareSettings(n_questions=0, n_train=4), PromptFiles(questions=path)
    )
    assert skipped.held_out.questions == []


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"question": "q?", "choices": "ABCD", "answer": "A"},
            r"index 1: 'choices' must be a list of 4 strings, got a string \('ABCD'\)",
        ),
        (
            {"question": "q?", "choices": ["a", "b", "c"], "answer": "A"},
            r"index 1: 'choices' must be a list of 4 strings, got \['a', 'b', 'c'\]",
        ),
        (
            {"question": "q?", "choices": ["a", "b", "c", 4], "answer": "A"},
            r"index 1: 'choices' must be a list of 4 strings",
        ),
        ({"question": 7, "choices": list("abcd"), "answer": "A"}, r"index 1: 'question' must"),
        ({"question": "q?", "choices": list("abcd"), "answer": 1}, r"index 1: 'answer' must"),
        ({"question": "q?", "answer": "A"}, r"index 1: no field 'choices'"),
        (
            {"question": "q?", "choices": ["a", "b", "c", " "], "answer": "A"},
            r"index 1: a question needs four non-empty choices",
        ),
        ("just text", r"index 1: expected an object"),
    ],
)
def test_bad_json_questions_name_the_index(tmp_path: Path, row: object, message: str) -> None:
    from tl_ot_ablation.eval.capability import load_questions

    good = {"question": "ok?", "choices": ["a", "b", "c", "d"], "answer": "C"}
    path = tmp_path / "q.json"
    path.write_text(json.dumps([good, row]))
    with pytest.raises(ValueError, match=rf"q\.json, {message}"):
        load_questions(path)


def test_a_json_question_file_that_is_not_a_list(tmp_path: Path) -> None:
    from tl_ot_ablation.eval.capability import load_questions

    path = tmp_path / "q.json"
    path.write_text('{"question": "q?"}')
    with pytest.raises(ValueError, match=r"q\.json: expected a JSON list of questions, got dict"):
        load_questions(path)
