"""Chat formatting with the tokenizer's own template, and the post-instruction positions.

Instructions are wrapped in the tokenizer's chat template; the template tokens after the
user message (``<|im_end|>\\n<|im_start|>assistant\\n`` for Qwen) are the *post-instruction*
positions where Arditi et al. (2024) read the refusal direction and where this package fits and
applies its maps by default. ``post_instruction_length`` finds them for any template, or raises
saying which ``positions=`` to use instead; thinking templates take ``template_kwargs``
(``docs/models.md``), or have them bound into the template (``bind_template_kwargs``).
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import UserInputError
from .control_tokens import check_control_tokens, control_tokens_are_allowed
from .prompts import check_prompts


def _require_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise UserInputError(
            "the tokenizer has no chat template, so instructions cannot be formatted as chat "
            "turns; use a chat (instruct) model, set tokenizer.chat_template, or pass "
            "chat=False to use the raw text"
        )


TemplateKwargs = Mapping[str, Any]
"""Extra variables for the chat template, e.g. ``{"enable_thinking": False}`` (Qwen3) or
``{"date_string": "1 Jan 2025"}`` (Llama 3.1); a template ignores those it does not use."""

_RESERVED = frozenset(
    {"conversation", "messages", "tokenize", "add_generation_prompt", "continue_final_message"}
)


def _render(tokenizer: Any, messages: list[dict[str, str]], template_kwargs: TemplateKwargs) -> str:
    """``apply_chat_template`` with a generation prompt; a template's own exception (e.g.
    Gemma 2's "System role not supported") becomes a ``ValueError`` saying what to change."""
    from jinja2 import TemplateError

    try:
        return str(
            tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **template_kwargs
            )
        )
    except TemplateError as err:
        fix = (
            "this model's template takes no system prompt: pass system=None (or put the "
            "instructions in the user message)"
            if messages[0]["role"] == "system"
            else "check the template and the template_kwargs"
        )
        raise UserInputError(f"the chat template rejected the conversation ({err}); {fix}") from err


def format_chat(
    tokenizer: Any,
    instructions: Sequence[str],
    *,
    system: str | None = None,
    template_kwargs: TemplateKwargs | None = None,
    allow_control_tokens: bool = False,
) -> list[str]:
    """Wrap each instruction as a user turn followed by the assistant's turn header.

    Args:
        tokenizer: A tokenizer with a chat template.
        instructions: The user messages, one chat each.
        system: Optional system prompt (templates without a system role, such as Gemma 2's or
            Mistral v0.1/v0.2's, raise; Gemma 3's folds it into the user turn).
        template_kwargs: Extra template variables, passed to ``apply_chat_template``, e.g.
            ``{"enable_thinking": False}`` for Qwen3 (see ``bind_template_kwargs`` to make
            them part of the template itself).
        allow_control_tokens: Accept the tokenizer's control tokens (``<|im_end|>``, ...) in
            the instructions and the system prompt, where they act as real chat-turn markers
            (also inside a ``control_tokens_allowed()`` block).

    Raises:
        TypeError: if ``instructions`` is one string rather than a list.
        ValueError: if it is empty or holds an entry that is not a non-empty string (see
            ``check_prompts``), an instruction or the system prompt holds a control token
            (see ``check_control_tokens``), the tokenizer has no chat template,
            ``template_kwargs`` names an argument this function sets itself, or the template
            raises (naming its message).
    """
    _require_template(tokenizer)
    texts = check_prompts(instructions, where="instructions")
    if not (allow_control_tokens or control_tokens_are_allowed()):
        check_control_tokens(tokenizer, texts, system=system)
    kwargs = dict(template_kwargs or {})
    if clash := sorted(_RESERVED & set(kwargs)):
        raise UserInputError(f"template_kwargs may not set {clash}: format_chat sets them itself")
    prefix = [{"role": "system", "content": system}] if system else []
    return [
        _render(tokenizer, [*prefix, {"role": "user", "content": text}], kwargs) for text in texts
    ]


_POSITIONS_FIX = (
    "fit at positions='last' (or 'all') and apply at positions='last' or a slice such as "
    "slice(-k, None) for the last k prompt tokens"
)


_PROBES = ("first", "the second one?")
"""Two user messages that share neither their first nor their last character."""


def _common_suffix(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _squeeze(text: str) -> str:
    """``text`` without whitespace, which some decoders add (between special tokens) or drop
    (SentencePiece's leading space)."""
    return "".join(text.split())


def _template_suffix(texts: Sequence[str]) -> str:
    """The text the template puts after the user message, checked to be the same for both
    probes (the texts are ``prefix + probe + suffix`` with the probe kept verbatim)."""
    a, b = texts
    n_prefix = _common_suffix(a[::-1], b[::-1])
    n_suffix = _common_suffix(a[n_prefix:], b[n_prefix:])
    middles = (a[n_prefix : len(a) - n_suffix], b[n_prefix : len(b) - n_suffix])
    if middles != _PROBES:
        raise UserInputError(
            "could not locate the user message in the chat template's output (the template "
            f"does not keep it verbatim, or puts text that depends on it after it: {middles!r} "
            f"where {_PROBES!r} was expected), so there are no post-instruction positions; "
            + _POSITIONS_FIX
        )
    return a[len(a) - n_suffix :]


def post_instruction_length(
    tokenizer: Any,
    *,
    system: str | None = None,
    template_kwargs: TemplateKwargs | None = None,
    allow_control_tokens: bool = False,
) -> int:
    """Number of template tokens after the user's message: the *post-instruction* positions.

    Two chats are formatted, with different user messages, and tokenised; the span is their
    common token suffix, checked to decode to the text the template puts after the user message
    (up to whitespace, which some decoders add or drop), so it never includes a token that merges
    with the message. For a thinking template it depends on
    ``template_kwargs`` (Qwen3 with ``enable_thinking=False`` adds an empty think block).
    ``allow_control_tokens`` lets ``system`` hold control tokens (see ``format_chat``).

    Raises:
        ValueError: if the tokenizer has no chat template, ``system`` holds a control token,
            the template rejects the conversation, or the span cannot be located: the template
            puts nothing after the user message, changes the message, puts text that depends on
            it after it, or its first tokens after the message merge with the message's last
            one. Each message says what to pass instead (a ``positions=`` of ``"last"`` or a
            slice).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise UserInputError(
            "the tokenizer has no chat template, so there are no post-instruction positions; "
            "pass chat=False to read the raw text, and " + _POSITIONS_FIX
        )
    texts = format_chat(
        tokenizer,
        _PROBES,
        system=system,
        template_kwargs=template_kwargs,
        allow_control_tokens=allow_control_tokens,
    )
    suffix = _template_suffix(texts)
    if not suffix:
        raise UserInputError(
            "the chat template puts nothing after the user message (no generation prompt), so "
            "there are no post-instruction positions; " + _POSITIONS_FIX
        )
    a, b = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts)
    n = _common_suffix(a, b)
    span = tokenizer.decode(
        a[len(a) - n :], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    if n == 0 or _squeeze(span) != _squeeze(suffix):
        raise UserInputError(
            f"the chat template's text after the user message, {suffix!r}, does not tokenise on "
            f"its own: its first tokens merge with the end of the message (the tokens common to "
            f"every chat decode to {span!r}), so the post-instruction positions would depend on "
            "the prompt; " + _POSITIONS_FIX
        )
    return n


def bind_template_kwargs(template: str, template_kwargs: TemplateKwargs) -> str:
    """A chat template that sets ``template_kwargs`` itself, prepended as ``{%- set ... %}``.

    Assign it to ``tokenizer.chat_template`` and every call that formats chats (collecting,
    fitting, generating, the CLI) renders as if the variables were passed, and the training
    fingerprint, which hashes the template, tells the two settings apart. The bound values win
    over any passed to ``apply_chat_template``.

    Example:
        >>> t = "{% if enable_thinking is defined and not enable_thinking %}off{% endif %}"
        >>> bind_template_kwargs(t, {"enable_thinking": False})[:37]
        '{%- set enable_thinking = false %}{% '

    Raises:
        ValueError: if a name is not an identifier or a value is not a bool, int, float, str
            or None.
    """
    lines = []
    for name, value in template_kwargs.items():
        if not (isinstance(name, str) and name.isidentifier()):
            raise UserInputError(f"template variable names must be identifiers, got {name!r}")
        if value is None or isinstance(value, bool):
            literal = {None: "none", True: "true", False: "false"}[value]
        elif isinstance(value, int | float | str):
            literal = json.dumps(value)
        else:
            raise UserInputError(
                f"template variable {name!r} must be a bool, int, float, str or None, got "
                f"{type(value).__name__}"
            )
        lines.append(f"{{%- set {name} = {literal} %}}")
    return "".join(lines) + template
