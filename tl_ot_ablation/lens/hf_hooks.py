"""The same interventions on a plain ``transformers`` model, without TransformerLens.

A user who generates with ``model.generate`` (or who will later serve the model elsewhere) can
apply a fitted ``InterventionSet`` through PyTorch's own module hooks on the decoder layers. Each
TransformerLens hook point has an exact counterpart:

| hook point | PyTorch hook | edits |
|---|---|---|
| ``blocks.{l}.hook_resid_pre`` | forward pre-hook on decoder layer ``l`` | the layer's input |
| ``blocks.{l}.hook_resid_post`` | forward hook on decoder layer ``l`` | the layer's output |
| ``blocks.{l}.hook_resid_mid`` | forward hook on the layer's attention part | see below |

``resid_mid`` is not a module output in ``transformers``: the layer computes
``residual + attention_part`` inline. The hook on the attention part (``self_attn`` / ``attn``,
or Gemma's ``post_attention_layernorm``, which normalises the attention output before the
addition) returns ``f(residual + attention_part) - residual``, where ``residual`` is the layer's
input as the layer saw it (after any ``resid_pre`` edit), so the stream after the addition is
exactly ``f(resid_mid)``.

Positions follow the TransformerLens hooks' rule (``lens.hooks``): the same
``InterventionHook`` objects do the editing, so a set gives the same logits both ways (tested
against ``TransformerBridge.run_with_hooks`` on the same weights). Decoder layers are found at
the usual attribute paths (``model.layers``, ``transformer.h``, ...); the families tested are
listed in ``docs/models.md``.
"""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..core.errors import UserInputError
from .collect import layer_of
from .hooks import InterventionHook

LAYER_PATHS = (
    "model.layers",  # Llama, Qwen2/3, Mistral, Gemma 2, Phi-3, ...
    "model.language_model.layers",  # Gemma 3 and other multimodal wrappers
    "model.decoder.layers",  # OPT
    "transformer.h",  # GPT-2, GPT-J, Falcon
    "gpt_neox.layers",  # Pythia
)
"""Where decoder layers live in ``transformers`` causal LMs, tried in this order."""

POST_ATTENTION_NORM_FAMILIES = frozenset({"gemma2", "gemma3", "gemma3_text", "olmo2"})
"""Families that normalise the attention output before adding it to the residual stream."""

HOOK_KINDS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")


def _resolve(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def decoder_layers(hf_model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a ``transformers`` causal LM, in order.

    Raises:
        TypeError: for a TransformerLens bridge (use its ``fwd_hooks`` instead).
        ValueError: if none of ``LAYER_PATHS`` holds a list of layers.
    """
    if hasattr(hf_model, "run_with_hooks"):
        raise TypeError(
            "this is a TransformerLens model; use its hook API (InterventionSet.fwd_hooks()) "
            "rather than the plain transformers hooks"
        )
    for path in LAYER_PATHS:
        layers = _resolve(hf_model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    raise UserInputError(
        f"could not find the decoder layers of {type(hf_model).__name__} (looked at "
        f"{', '.join(LAYER_PATHS)}); these hooks support transformers causal LMs with one of them"
    )


def _model_type(hf_model: nn.Module) -> str:
    config = getattr(hf_model, "config", None)
    text_config = getattr(config, "text_config", None)
    return str(getattr(text_config or config, "model_type", ""))


def attention_output_module(hf_model: nn.Module, layer: nn.Module) -> nn.Module:
    """The module of ``layer`` whose output is added to the residual stream after attention."""
    names = (
        ("post_attention_layernorm",)
        if _model_type(hf_model) in POST_ATTENTION_NORM_FAMILIES
        else ("self_attn", "attn", "attention")
    )
    for name in names:
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    raise UserInputError(
        f"hook_resid_mid: no attention module ({' / '.join(names)}) in "
        f"{type(layer).__name__}; fit at resid_pre or resid_post for this model"
    )


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple | list) else output


def _with_first(output: Any, value: Tensor) -> Any:
    if isinstance(output, tuple):
        return (value, *output[1:])
    if isinstance(output, list):
        return [value, *output[1:]]
    return value


def _hidden_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _replace_hidden_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], value: Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": value}


@dataclass
class HFHookHandles:
    """PyTorch hook handles registered by ``register_hf_hooks``; ``remove()`` takes them off."""

    handles: list[Any] = field(default_factory=list)

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        while self.handles:
            self.handles.pop().remove()


def _split_name(name: str, n_layers: int) -> tuple[int, str]:
    layer = layer_of(name)
    kind = name.rsplit(".", 1)[-1]
    if layer is None or kind not in HOOK_KINDS:
        raise UserInputError(
            f"hook point {name!r} has no plain transformers counterpart; supported: "
            "blocks.{l}.hook_resid_pre / hook_resid_mid / hook_resid_post"
        )
    if layer >= n_layers:
        raise UserInputError(f"hook point {name!r} is past this model's {n_layers} layers")
    return layer, kind


def _pre_hook(hook: InterventionHook) -> Callable[..., Any]:
    def edit_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        edited = hook(_hidden_input(args, kwargs), hook=None)
        return _replace_hidden_input(args, kwargs, edited)

    return edit_input


def _post_hook(hook: InterventionHook) -> Callable[..., Any]:
    def edit_output(module: nn.Module, args: Any, output: Any) -> Any:
        return _with_first(output, hook(_first(output), hook=None))

    return edit_output


def _mid_hooks(hooks: list[InterventionHook]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(pre-hook on the layer that remembers its input, hook on the attention part)."""
    seen: dict[str, Tensor] = {}

    def remember_input(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen["residual"] = _hidden_input(args, kwargs)

    def edit_attention_part(module: nn.Module, args: Any, output: Any) -> Any:
        residual = seen.pop("residual")
        part = _first(output)
        stream = residual + part
        for hook in hooks:
            stream = hook(stream, hook=None)
        return _with_first(output, stream - residual)

    return remember_input, edit_attention_part


def register_hf_hooks(
    hf_model: nn.Module, fwd_hooks: Sequence[tuple[str, InterventionHook]]
) -> HFHookHandles:
    """Register ``(hook_name, hook)`` pairs (``InterventionSet.fwd_hooks()``) on a plain
    ``transformers`` model; they stay until ``.remove()`` on the returned handles.

    Hooks at one hook point compose in list order, as in TransformerLens. Everything is checked
    before the first hook is registered, so a bad name leaves the model untouched. Register sets
    that edit ``resid_pre`` and ``resid_mid`` of one layer in one call (``a.fwd_hooks() +
    b.fwd_hooks()``): a ``resid_mid`` hook remembers the layer's input as the pre-hooks
    registered before it left it.
    """
    layers = decoder_layers(hf_model)
    by_point: dict[tuple[int, str], list[InterventionHook]] = {}
    for name, hook in fwd_hooks:
        by_point.setdefault(_split_name(name, len(layers)), []).append(hook)
    attention = {
        layer: attention_output_module(hf_model, layers[layer])
        for layer, kind in by_point
        if kind == "hook_resid_mid"
    }
    handles = HFHookHandles()
    try:
        for (layer, kind), hooks in sorted(
            by_point.items(), key=lambda item: HOOK_KINDS.index(item[0][1])
        ):
            module = layers[layer]
            if kind == "hook_resid_pre":
                for hook in hooks:
                    handles.handles.append(
                        module.register_forward_pre_hook(_pre_hook(hook), with_kwargs=True)
                    )
            elif kind == "hook_resid_post":
                for hook in hooks:
                    handles.handles.append(module.register_forward_hook(_post_hook(hook)))
            else:
                remember, edit = _mid_hooks(hooks)
                # Registered after every resid_pre edit, so it remembers the edited input.
                handles.handles.append(module.register_forward_pre_hook(remember, with_kwargs=True))
                handles.handles.append(attention[layer].register_forward_hook(edit))
    except BaseException:
        handles.remove()
        raise
    return handles


@contextlib.contextmanager
def hf_hooks(
    hf_model: nn.Module, fwd_hooks: Sequence[tuple[str, InterventionHook]]
) -> Iterator[nn.Module]:
    """``register_hf_hooks`` for the duration of a ``with`` block (removed even on error)."""
    handles = register_hf_hooks(hf_model, fwd_hooks)
    try:
        yield hf_model
    finally:
        handles.remove()
