"""Does an intervention fit this model? Hook names, and what a fit recorded about its model.

A fit records the model's name, layer count, width and chat template (``model_signature``);
a set applied to another model is refused with the differences named (``mismatches``), since
a map fitted where the template has 13 post-instruction tokens would edit 4 tokens of the
user's message on a model whose template has 9. Hook names are checked against the model before
any forward pass, with the nearest valid name suggested for a typo.
"""

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ..core.errors import UserInputError
from .chat_template import format_chat, post_instruction_length


def hook_names(model: Any) -> set[str]:
    """Every hook name ``model`` accepts: its hook points and their aliases."""
    names = set(getattr(model, "hook_dict", {}))
    names |= set(getattr(model, "hook_aliases", {}) or {})
    return names


def check_hook_names(model: Any, names: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the first hook name ``model`` lacks, with the closest valid
    names (a typo such as ``hook_resid_pr`` fails here, not deep inside a forward pass)."""
    valid = hook_names(model)
    if not valid:
        return  # not a hooked model (e.g. a stand-in in a test): nothing to check against
    for name in names:
        if not isinstance(name, str):  # a filter function, as run_with_hooks also takes
            continue
        if name not in valid:
            close = difflib.get_close_matches(name, sorted(valid), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise UserInputError(f"this model has no hook named {name!r}{hint}")


def template_signature(tokenizer: Any, *, system: str | None = None) -> dict[str, Any]:
    """The chat template's post-instruction span: its length and text (``{}`` without a chat
    template)."""
    if not getattr(tokenizer, "chat_template", None):
        return {}
    n = post_instruction_length(tokenizer, system=system)
    text = format_chat(tokenizer, ["x"], system=system)[0]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return {"n_post_instruction": n, "post_instruction_text": tokenizer.decode(ids[-n:])}


def model_signature(model: Any, *, system: str | None = None) -> dict[str, Any]:
    """What a fit records about its model, so a later ``load(model=...)`` can compare."""
    signature: dict[str, Any] = {
        "model": getattr(model.cfg, "model_name", None),
        "d_model": model.cfg.d_model,
        "n_layers": model.cfg.n_layers,
    }
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        try:
            template = template_signature(tokenizer, system=system)
        except ValueError:  # a template without a post-instruction span: nothing to record
            template = {}
        signature["post_instruction_text"] = template.get("post_instruction_text")
    return signature


def mismatches(
    recorded: Mapping[str, Any], model: Any, *, n_post_instruction: int | None
) -> list[str]:
    """How ``model`` differs from what a fit recorded (``recorded``: its metadata), each as a
    short phrase; ``n_post_instruction`` is the set's span, compared when it edits by it."""
    found = []
    name = getattr(model.cfg, "model_name", None)
    if recorded.get("model") not in (None, name):
        found.append(f"it was fitted on model {recorded['model']!r}, this is {name!r}")
    if recorded.get("n_layers") not in (None, model.cfg.n_layers):
        found.append(f"{recorded['n_layers']} layers there, {model.cfg.n_layers} here")
    if recorded.get("d_model") not in (None, model.cfg.d_model):
        found.append(f"d_model {recorded['d_model']} there, {model.cfg.d_model} here")
    if n_post_instruction is not None:
        found += _template_mismatches(recorded, model, n_post_instruction)
    return found


def _template_mismatches(
    recorded: Mapping[str, Any], model: Any, n_post_instruction: int
) -> list[str]:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return []
    try:
        here = template_signature(tokenizer, system=recorded.get("system"))
    except ValueError as err:
        return [f"its chat template has no post-instruction span here ({err})"]
    if not here:
        return ["it edits the chat template's post-instruction tokens; this model has no template"]
    if here["n_post_instruction"] != n_post_instruction:
        return [
            f"it edits the last {n_post_instruction} tokens (the chat template's "
            f"post-instruction span when fitted); this model's template has "
            f"{here['n_post_instruction']}, so the edit would reach into the user's message"
            if here["n_post_instruction"] < n_post_instruction
            else f"it edits the last {n_post_instruction} tokens; this model's template has "
            f"{here['n_post_instruction']} post-instruction tokens"
        ]
    text = recorded.get("post_instruction_text")
    if text is not None and text != here["post_instruction_text"]:
        return [
            f"its template's post-instruction text was {text!r}, here it is "
            f"{here['post_instruction_text']!r}"
        ]
    return []
