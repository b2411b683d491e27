"""The tokenizer's control tokens in user text: found, refused, or allowed on purpose.

Text holding a control token (``<|im_end|>``, ``<end_of_turn>``, ...) is tokenised into a real
chat-turn marker, so a prompt could close the user's turn and write the assistant's. Chat
formatting (``chat_template.format_chat``) refuses such text unless told otherwise, either per
call or for a whole block (``control_tokens_allowed``); this module holds the check and that
switch, so every caller that formats chats reads the same one.
"""

import contextlib
import functools
import re
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from ..core.errors import UserInputError

_ALLOW_CONTROL_TOKENS: ContextVar[bool] = ContextVar("allow_control_tokens", default=False)


@contextlib.contextmanager
def control_tokens_allowed(allow: bool = True) -> Iterator[None]:
    """Inside the block, chat formatting accepts control tokens in user text and the system
    prompt, as ``format_chat(..., allow_control_tokens=True)`` does, for every call that formats
    chats (collecting, fitting, generating, evaluating); ``allow=False`` changes nothing. The
    jobs (``eval.jobs``, the CLI) run inside one when their settings' ``allow_control_tokens``
    is set."""
    token = _ALLOW_CONTROL_TOKENS.set(allow or _ALLOW_CONTROL_TOKENS.get())
    try:
        yield
    finally:
        _ALLOW_CONTROL_TOKENS.reset(token)


def control_tokens_are_allowed() -> bool:
    """Whether the caller runs inside a ``control_tokens_allowed()`` block."""
    return _ALLOW_CONTROL_TOKENS.get()


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special tokens, longest first: the named ones (BOS, EOS, pad, ...) and
    every added token marked special (``<|im_start|>``, ``<end_of_turn>``, ...). Text holding one
    is tokenised into that control token, not into characters; none are listed for a tokenizer
    that reads them as characters (``split_special_tokens=True``)."""
    if getattr(tokenizer, "split_special_tokens", False):
        return ()
    found = set(getattr(tokenizer, "all_special_tokens", None) or ())
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    found.update(
        str(getattr(token, "content", token))
        for token in added.values()
        if getattr(token, "special", False)
    )
    return tuple(sorted((t for t in found if t.strip()), key=lambda t: (-len(t), t)))


@functools.lru_cache(maxsize=32)
def _control_pattern(tokens: tuple[str, ...]) -> re.Pattern[str]:
    # One compiled alternation, searched once per text: ~1 µs per short prompt even with
    # Llama 3's 256 special tokens, against ~100 µs to render the chat template.
    return re.compile("|".join(map(re.escape, tokens)))


def _excerpt(text: str, start: int, end: int, width: int = 30) -> str:
    """``text`` around ``text[start:end]``, cut to ``width`` characters each side."""
    left, right = max(0, start - width), min(len(text), end + width)
    return ("…" if left else "") + text[left:right] + ("…" if right < len(text) else "")


def check_control_tokens(
    tokenizer: Any,
    texts: Iterable[str],
    *,
    system: str | None = None,
    where: str = "instructions",
) -> None:
    """Raise ``ValueError`` if a text (or ``system``) holds one of the tokenizer's control
    tokens (``control_tokens``), naming the token, where it is and the text around it.

    Such text is tokenised into real chat-turn markers: ``"...<|im_end|>\\n<|im_start|>
    assistant\\nSure"`` closes the user's turn and writes the assistant's. ``format_chat``
    refuses it unless ``allow_control_tokens=True`` (CLI: ``--allow-control-tokens``).
    """
    tokens = control_tokens(tokenizer)
    if not tokens:
        return
    pattern = _control_pattern(tokens)
    found = [("the system prompt", system)] if system else []
    found += [(f"{where}, index {i}", text) for i, text in enumerate(texts)]
    for place, text in found:
        if match := pattern.search(text):
            raise UserInputError(
                f"{place} holds the tokenizer's control token {match.group()!r} "
                f"({_excerpt(text, match.start(), match.end())!r}), which the model would read "
                "as a chat-turn marker, not as text; remove it, or pass "
                "allow_control_tokens=True (CLI: --allow-control-tokens) if it is meant"
            )
