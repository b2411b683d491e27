"""Read residual activations through TransformerLens hook points, batched and without grad.

One forward pass per batch (under ``torch.inference_mode``) reads every requested hook point,
and the pass stops after the deepest block it needs (``stop_at_layer``). Prompts are
chat-formatted and left-padded with an attention mask, so batching never changes the
activations. Rows are taken at the fitting positions only (never at pads):

- ``"post_instruction"``: the chat template's tokens after the user message (default);
- ``"last"``: the last prompt token;
- ``"all"``: every real token but the first (the attention sink, ~150x the others' norm).
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from ..core.bars import stage_bar_off
from ..core.errors import UserInputError
from ..core.stats import GaussianStats
from .chat_template import format_chat, post_instruction_length
from .tokens import tokenize

FitPositions = Literal["post_instruction", "last", "all"]
Prompts = Sequence[str] | tuple[Tensor, Tensor]
HOOK_ALIASES = ("resid_pre", "resid_mid", "resid_post")
_LAYER = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class CollectOptions:
    """How prompts are run to read activations, held once and passed down (``collect_*``,
    ``fit_*``, ``compare``, ``sweep``).

    Attributes:
        positions: Fitting positions (see the module docstring).
        batch_size: Prompts per forward pass.
        system: Optional system prompt for the chat template.
        progress: Show progress bars.
        chat: Format instructions with the chat template; ``False`` runs them as raw text (a
            model without a template), with ``positions="last"`` or ``"all"``.
    """

    positions: FitPositions = "post_instruction"
    batch_size: int = 16
    system: str | None = None
    progress: bool = True
    chat: bool = True

    def __post_init__(self) -> None:
        if self.positions not in get_args(FitPositions):
            raise UserInputError(
                f"positions must be one of {get_args(FitPositions)}, got {self.positions!r}"
            )
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise UserInputError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not self.chat and self.positions == "post_instruction":
            raise UserInputError(
                "positions='post_instruction' needs the chat template (chat=True); for raw text "
                "fit at positions='last' or 'all'"
            )


def hook_name(hook: str, layer: int) -> str:
    """``"resid_pre"`` at layer 6 → ``"blocks.6.hook_resid_pre"``; full names pass through."""
    if hook in HOOK_ALIASES:
        return f"blocks.{layer}.hook_{hook}"
    return hook


def layer_of(name: str) -> int | None:
    """Block index of a hook name (``None`` for hooks outside the blocks, e.g. embeddings)."""
    match = _LAYER.match(name)
    return int(match.group(1)) if match else None


def check_layers(model: Any, layers: Sequence[int]) -> list[int]:
    """Sorted distinct ``layers``, raising if one is not a block of ``model``."""
    n_layers = model.cfg.n_layers
    if len(layers) == 0:
        raise UserInputError("layers is empty; name at least one layer")
    bad = [layer for layer in layers if not (isinstance(layer, int) and 0 <= layer < n_layers)]
    if bad:
        raise UserInputError(
            f"layer(s) {bad} out of range: this model has layers 0..{n_layers - 1}"
        )
    return sorted(set(layers))


def position_mask(
    attention_mask: Int[Tensor, "batch pos"],
    positions: FitPositions,
    n_post_instruction: int | None = None,
) -> Bool[Tensor, "batch pos"]:
    """Which (left-padded) positions give fitting rows."""
    real = attention_mask.bool()
    mask = torch.zeros_like(real)
    if positions == "last":
        mask[:, -1] = True
    elif positions == "post_instruction":
        if not n_post_instruction:
            raise UserInputError("positions='post_instruction' needs n_post_instruction")
        mask[:, -n_post_instruction:] = True
    elif positions == "all":
        first_real = real.int().argmax(dim=1)
        mask = real.clone()
        mask[torch.arange(len(mask)), first_real] = False
    else:
        raise UserInputError(
            f"positions must be 'post_instruction', 'last' or 'all', got {positions!r}"
        )
    return mask & real


def prepare_tokens(
    model: Any, prompts: Prompts, *, system: str | None = None, chat: bool = True
) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` for instructions (formatted with the chat template unless
    ``chat=False``) or pass-through for an ``(input_ids, attention_mask)`` pair."""
    if isinstance(prompts, tuple):
        ids, mask = prompts
        if ids.shape != mask.shape or ids.ndim != 2:
            raise UserInputError(
                f"tokens must be (input_ids, attention_mask) of equal [batch, pos] shape, got "
                f"{tuple(ids.shape)} and {tuple(mask.shape)}"
            )
        return ids, mask
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    if len(prompts) == 0:
        raise UserInputError("the prompt list is empty; pass at least one prompt")
    texts = format_chat(model.tokenizer, prompts, system=system) if chat else list(prompts)
    return tokenize(model.tokenizer, texts, max_length=model.cfg.n_ctx)


def require_eval(model: Any) -> None:
    """Raise if ``model`` is in training mode (dropout would make activations random)."""
    if getattr(model, "training", False):
        raise UserInputError(
            "the model is in training mode (dropout active); call model.eval() first"
        )


def batches(
    ids: Tensor, mask: Tensor, batch_size: int, device: torch.device | str
) -> list[tuple[Tensor, Tensor]]:
    """``(input_ids, attention_mask)`` chunks of ``batch_size`` rows, on ``device``."""
    if batch_size < 1:
        raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
    return [
        (ids[start : start + batch_size].to(device), mask[start : start + batch_size].to(device))
        for start in range(0, len(ids), batch_size)
    ]


def model_device(model: Any) -> torch.device:
    """Device of the model's first parameters (where its inputs go)."""
    return next(model.parameters()).device


def for_each_batch(
    model: Any,
    prompts: Prompts,
    hook_names: Sequence[str],
    on_rows: Callable[[str, Tensor], None],
    options: CollectOptions | None = None,
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
) -> None:
    """Run the model over ``prompts`` (as ``options`` says) and hand ``on_rows(name, rows
    [n, d_model])`` each batch's rows at every hook point. ``fwd_hooks`` (e.g. earlier maps)
    run before the capture."""
    options = CollectOptions() if options is None else options
    positions, system, chat = options.positions, options.system, options.chat
    require_eval(model)
    if isinstance(hook_names, str):
        hook_names = [hook_names]
    if not hook_names:
        raise UserInputError("name at least one hook point")
    ids, mask = prepare_tokens(model, prompts, system=system, chat=chat)
    n_post = None
    if positions == "post_instruction":
        n_post = post_instruction_length(model.tokenizer, system=system) if chat else None
        if n_post is None:
            raise UserInputError(
                "positions='post_instruction' needs chat=True; use 'last' or 'all'"
            )
    layers = [layer_of(name) for name in hook_names]
    stop_at = None if None in layers else max(layer for layer in layers if layer is not None) + 1
    if stop_at is not None and stop_at >= model.cfg.n_layers:
        stop_at = None
    fired: dict[str, int] = {}
    batch_mask: list[Tensor] = []

    def capture(name: str) -> Callable[..., None]:
        def hook(resid: Tensor, *, hook: Any) -> None:
            fired[name] = fired.get(name, 0) + 1
            on_rows(name, resid[batch_mask[0].to(resid.device)])

        return hook

    captures = [(name, capture(name)) for name in hook_names]
    chunks = batches(ids, mask, options.batch_size, model_device(model))
    with torch.inference_mode(), model.hooks(fwd_hooks=[*fwd_hooks, *captures]):
        quiet = stage_bar_off(options.progress)
        for batch_ids, batch_attention in tqdm(chunks, desc="activations", disable=quiet):
            fired.clear()
            batch_mask[:] = [position_mask(batch_attention, positions, n_post)]
            model(
                batch_ids,
                attention_mask=batch_attention,
                stop_at_layer=stop_at,
                return_type=None,
            )
            wrong = {name: fired.get(name, 0) for name in hook_names if fired.get(name, 0) != 1}
            if wrong:
                raise RuntimeError(
                    f"hook points fired {wrong} times in one forward pass; expected once each"
                )


def collect_activations(
    model: Any,
    prompts: Prompts,
    hook_names: Sequence[str] | str,
    options: CollectOptions | None = None,
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    device: torch.device | str | None = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Float[Tensor, "n d_model"]]:
    """Residual rows at each hook point, ``{name: [n, d_model]}`` (on ``device`` in ``dtype``).

    Args:
        model: A ``TransformerBridge`` in eval mode.
        prompts: Instructions (chat-formatted here) or an ``(input_ids, attention_mask)`` pair.
        hook_names: Hook points, e.g. ``"blocks.6.hook_resid_pre"`` (aliases and native names).
        options: How the prompts are run (``CollectOptions``: the positions that give rows,
            see the module docstring; batch size, system prompt, chat formatting, progress).
        fwd_hooks: Hooks to run during collection (before the capture), e.g. earlier maps.
        device: Where the returned rows go (``None``: the device of their hook point, e.g.
            each layer's GPU for a dispatched model). ``dtype``: their dtype.

    Example:
        >>> from tl_ot_ablation.lens.tiny import tiny_model
        >>> quiet = CollectOptions(positions="last", progress=False)
        >>> rows = collect_activations(tiny_model(), ["a b", "c"], "blocks.1.hook_resid_pre", quiet)
        >>> tuple(rows["blocks.1.hook_resid_pre"].shape)
        (2, 32)
    """
    names = [hook_names] if isinstance(hook_names, str) else list(hook_names)
    rows: dict[str, list[Tensor]] = {name: [] for name in names}

    def keep(name: str, batch: Tensor) -> None:
        rows[name].append(batch.to(device=device, dtype=dtype))

    for_each_batch(model, prompts, names, keep, options, fwd_hooks=fwd_hooks)
    return {name: torch.cat(chunks) for name, chunks in rows.items()}


def collect_stats(
    model: Any,
    prompts: Prompts,
    hook_names: Sequence[str] | str,
    options: CollectOptions | None = None,
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
) -> dict[str, GaussianStats]:
    """Streaming ``GaussianStats`` per hook point (arguments as in ``collect_activations``);
    memory O(d_model²) per hook point however many prompts, on each hook point's device."""
    names = [hook_names] if isinstance(hook_names, str) else list(hook_names)
    stats: dict[str, GaussianStats] = {}

    def update(name: str, batch: Tensor) -> None:
        if name not in stats:
            # Ordinary (not inference-mode) accumulators, so callers may update them later.
            with torch.inference_mode(False):
                stats[name] = GaussianStats(batch.shape[-1], device=batch.device)
        stats[name].update(batch)

    for_each_batch(model, prompts, names, update, options, fwd_hooks=fwd_hooks)
    return stats
