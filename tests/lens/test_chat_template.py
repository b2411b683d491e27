"""Chat formatting and the post-instruction span (``lens.chat_template``)."""

import pytest

from tl_ot_ablation import format_chat, post_instruction_length
from tl_ot_ablation.lens.tiny import tiny_tokenizer


def test_chat_formatting_and_post_instruction_span() -> None:
    tokenizer = tiny_tokenizer()
    [text] = format_chat(tokenizer, ["hi"], system="be brief")
    assert (
        text == "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    suffix = "<|im_end|>\n<|im_start|>assistant\n"
    assert post_instruction_length(tokenizer) == len(
        tokenizer(suffix, add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize("bad", [None, "", "   ", 123])
def test_format_chat_rejects_what_would_become_an_empty_turn(bad: object, as_user: None) -> None:
    with pytest.raises(ValueError, match=r"instructions: 1 of 2 entries are not non-empty"):
        format_chat(tiny_tokenizer(), ["hello", bad])  # type: ignore[list-item]
