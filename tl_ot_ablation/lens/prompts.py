"""Prompt sets, chat formatting and left-padded tokenisation.

The package ships instruction sets that it wrote itself (``default_prompts``), in three
disjoint splits per class: ``train`` (256 harmful requests covering the range of public
red-teaming sets, 256 everyday instructions) for fitting, ``validation`` (64 + 64) for choices
such as a method's strength, and ``eval`` (32 + 32) for held-out results; and a few paragraphs
of plain prose (``plain_text``) for perplexity. ``load_prompts`` reads user files.
Instructions are wrapped in the tokenizer's own chat template; the template tokens after the
user message (``<|im_end|>\\n<|im_start|>assistant\\n`` for Qwen) are the *post-instruction*
positions where Arditi et al. (2024) read the refusal direction and where this package fits and
applies its maps by default. ``post_instruction_length`` finds them for any template, or raises
saying which ``positions=`` to use instead; thinking templates take ``template_kwargs``
(``docs/models.md``).
"""

import contextlib
import csv
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ..core.errors import UserInputError

PromptKind = Literal["harmful", "harmless"]
Split = Literal["train", "validation", "eval"]
SPLITS: tuple[str, ...] = get_args(Split)


def _read_data(filename: str) -> list[str]:
    return list(
        json.loads(resources.files("tl_ot_ablation").joinpath("data", filename).read_text())
    )


def default_prompts(kind: PromptKind, split: Split = "train") -> list[str]:
    """The package's own instructions of one class and split: 256 for fitting (``"train"``),
    64 for choosing settings (``"validation"``), 32 for held-out results (``"eval"``); the
    splits are disjoint. (Runs recorded before the training split grew to 256 fitted on
    today's ``"validation"`` set.)"""
    if kind not in ("harmful", "harmless"):
        raise UserInputError(f"kind must be 'harmful' or 'harmless', got {kind!r}")
    if split not in SPLITS:
        raise UserInputError(f"split must be one of {SPLITS}, got {split!r}")
    return _read_data(f"{kind}_{split}.json")


def plain_text() -> list[str]:
    """Eight short paragraphs of everyday prose (no chat template) for perplexity checks."""
    return _read_data("plain_text.json")


def _problem(value: object) -> str | None:
    """What makes ``value`` unusable as a prompt, or ``None`` if it is a non-empty string."""
    if value is None:
        return "None"
    if not isinstance(value, str):
        return f"of type {type(value).__name__} ({value!r:.40}), not a string"
    if not value.strip():
        return "empty" if not value else "only whitespace"
    return None


Entries = list[tuple[str, Any]]
"""``(location, value)`` pairs, e.g. ``("line 3", "how do I ...")``, to check as prompts."""


def _check_entries(entries: Entries, where: str) -> list[str]:
    """The values, after raising ``ValueError`` naming ``where`` and the first bad entry's
    location, unless there is at least one entry and every one is a non-empty string."""
    if not entries:
        raise UserInputError(
            f"{where} holds no prompts (the prompt list is empty); pass at least one"
        )
    bad = [(at, problem) for at, value in entries if (problem := _problem(value)) is not None]
    if bad:
        at, problem = bad[0]
        raise UserInputError(
            f"{where}: {len(bad)} of {len(entries)} entries are not non-empty strings; the "
            f"first, at {at}, is {problem}. Fix or drop it"
        )
    return [value for _, value in entries]


def check_prompts(prompts: object, *, where: str = "prompts") -> list[str]:
    """Return ``prompts`` as a list, checked to hold non-empty strings only.

    Catches what would otherwise turn into empty or nonsense chat turns: ``None``, ``""``,
    whitespace, numbers. ``load_prompts`` checks files with the same rule, naming the line.

    Raises:
        TypeError: if ``prompts`` is one string, or not a list (or other iterable) at all.
        ValueError: if it is empty, or an entry is not a non-empty string (naming ``where``
            and the entry's index).

    Example:
        >>> check_prompts(("how do I bake bread?",))
        ['how do I bake bread?']
        >>> check_prompts(["ok", None], where="harmful")
        Traceback (most recent call last):
        ValueError: harmful: 1 of 2 entries are not non-empty strings; the first, at index 1, \
is None. Fix or drop it
    """
    if isinstance(prompts, str | bytes):
        raise TypeError(f"{where} must be a list of strings, not one string; wrap it in a list")
    if isinstance(prompts, Mapping) or not isinstance(prompts, Iterable):
        raise TypeError(f"{where} must be a list of strings, got {type(prompts).__name__}")
    return _check_entries([(f"index {i}", value) for i, value in enumerate(prompts)], where)


def _read_text(path: Path) -> str:
    # utf-8-sig: a byte-order mark (Notepad, Excel) is not part of the first prompt.
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path} is not UTF-8 text ({err})") from err


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(f"{where} is not valid JSON ({err})") from err


def _entry(at: str, item: Any, field: str, path: Path) -> tuple[str, Any]:
    """``(location, value)`` of one JSON item: a JSON object's ``field``, else the item."""
    if not isinstance(item, dict):
        return at, item
    if field not in item:
        raise UserInputError(
            f"{path}, {at}: the object has no field {field!r} (its keys: {sorted(item)[:10]}); "
            "pass field=<the key that holds the instruction> to load_prompts"
        )
    return f"{at}, field {field!r}", item[field]


def _read_json(path: Path, field: str) -> Entries:
    data = _parse_json(_read_text(path), str(path))
    if not isinstance(data, list):
        raise UserInputError(f"{path}: expected a JSON list, got {type(data).__name__}")
    return [_entry(f"index {i}", item, field, path) for i, item in enumerate(data)]


def _lines(path: Path) -> list[tuple[str, str]]:
    """``("line N", text)`` of every non-blank line, numbered from 1."""
    lines = enumerate(_read_text(path).splitlines(), start=1)
    return [(f"line {number}", line) for number, line in lines if line.strip()]


def _read_jsonl(path: Path, field: str) -> Entries:
    return [
        _entry(at, _parse_json(line, f"{path}, {at}"), field, path) for at, line in _lines(path)
    ]


def _read_csv(path: Path, field: str) -> Entries:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or field not in reader.fieldnames:
            raise UserInputError(f"{path}: no column {field!r}; columns are {reader.fieldnames}")
        return [(f"line {reader.line_num}, column {field!r}", row[field]) for row in reader]


def load_prompts(path: str | Path, *, field: str = "instruction") -> list[str]:
    """Read instructions from a file, by its suffix: ``.json`` (a list of strings, or of objects
    with ``field``), ``.jsonl`` (one JSON string or object with ``field`` per line), ``.csv``
    (column ``field``) or anything else as text (one instruction per non-blank line).

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        ValueError: naming the file and the line (``.jsonl``, ``.csv``, text) or index
            (``.json``) of the first problem: invalid JSON, an object without ``field``, or an
            entry that is not a non-empty string (see ``check_prompts``); or no prompts at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        entries = _read_json(path, field)
    elif suffix == ".jsonl":
        entries = _read_jsonl(path, field)
    elif suffix == ".csv":
        entries = _read_csv(path, field)
    else:
        entries = [(at, line.strip()) for at, line in _lines(path)]
    return _check_entries(entries, str(path))


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
    if not (allow_control_tokens or _ALLOW_CONTROL_TOKENS.get()):
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
