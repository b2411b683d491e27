"""Left-padded tokenisation of already formatted text, never changing the user's tokenizer.

Left padding with an attention mask keeps batched activations equal to unbatched ones (the
last position is every row's last real token); no special tokens are added, since chat
templates carry their own; and text longer than the model's context raises rather than being
silently truncated.
"""

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from ..core.errors import UserInputError


@contextlib.contextmanager
def padding_side(tokenizer: Any, side: Literal["left", "right"]) -> Iterator[Any]:
    """Pad on ``side`` inside the block, then restore the caller's setting (the tokenizer is
    the user's object: the package never leaves it changed)."""
    before = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = before


def padded(tokenizer: Any, texts: Sequence[str], side: Literal["left", "right"]) -> Any:
    """``tokenizer(texts)`` padded on ``side``, no special tokens added, as tensors."""
    with padding_side(tokenizer, side):
        return tokenizer(list(texts), add_special_tokens=False, padding=True, return_tensors="pt")


def tokenize(
    tokenizer: Any, texts: Sequence[str], *, max_length: int | None = None
) -> tuple[Tensor, Tensor]:
    """Left-padded ``(input_ids, attention_mask)`` for already formatted texts.

    No special tokens are added (chat templates carry their own). Raises if a text is longer
    than ``max_length`` (the model's context), rather than silently truncating it.
    """
    if len(texts) == 0:
        raise UserInputError("the prompt list is empty; pass at least one prompt")
    encoded = padded(tokenizer, texts, "left")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if max_length is not None and ids.shape[1] > max_length:
        longest = int(mask.sum(1).argmax())
        raise UserInputError(
            f"prompt {longest} is {int(mask[longest].sum())} tokens long, more than the model's "
            f"context of {max_length} tokens; shorten it or drop it"
        )
    return ids, mask.to(torch.long)
