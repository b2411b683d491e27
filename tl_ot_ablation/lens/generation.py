"""Batched generation under any list of hooks, returning completions as text.

Generation goes through the Hugging Face ``generate`` of the model the bridge wraps (booting
rewired its layers, so every TransformerLens hook fires), with left padding, an attention mask
and the KV cache: the hooks see each prompt once, then ``[batch, 1, d_model]`` per new token.
TransformerLens 4.3 with transformers >= 5.24 silently breaks cached generation (the cache is
passed as ``cache=``, which the attention bridge ignores), so ``generate`` refuses to run there.
How the prompts are run (batch size, sampling, chat formatting) is one ``GenerationOptions``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..core.bars import stage_bar_off
from .collect import Prompts, batches, model_device, prepare_tokens, require_eval
from .compatibility import check_hook_names
from .control_tokens import control_tokens_allowed


def check_generation_stack() -> None:
    """Raise on the TransformerLens / transformers combination that garbles cached generation."""
    major, minor = (int(part) for part in version("transformers").split(".")[:2])
    tl_major, tl_minor = (int(part) for part in version("transformer-lens").split(".")[:2])
    if (major, minor) >= (5, 24) and (tl_major, tl_minor) <= (4, 3):
        raise RuntimeError(
            f"transformers {version('transformers')} with transformer-lens "
            f"{version('transformer-lens')} produces garbage after the first generated token "
            "(the KV cache is never filled); install 'transformers>=5.9,<5.24'"
        )


@dataclass(frozen=True)
class GenerationOptions:
    """How ``generate`` runs the prompts, held once and passed down (the jobs, the CLI).

    Attributes:
        batch_size: Prompts per ``generate`` call.
        do_sample: Sample at ``temperature`` (seeded by ``seed``) instead of greedy decoding.
        temperature: Sampling temperature (``do_sample`` only).
        seed: Seed of the sampling generator (``do_sample`` only).
        system: Optional system prompt for the chat template.
        chat: Format the prompts with the chat template (``False``: use them as raw text).
        progress: Show a progress bar.
        allow_control_tokens: Accept the tokenizer's control tokens (``<|im_end|>``, ...) in a
            prompt or ``system`` (see ``format_chat``); otherwise they raise ``ValueError``.
    """

    batch_size: int = 8
    do_sample: bool = False
    temperature: float = 1.0
    seed: int = 0
    system: str | None = None
    chat: bool = True
    progress: bool = True
    allow_control_tokens: bool = False


def generate_with_first_logprobs(
    model: Any,
    prompts: Prompts,
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    max_new_tokens: int = 32,
    options: GenerationOptions | None = None,
) -> tuple[list[str], Float[Tensor, "n vocab"]]:
    """``generate``, plus the log-probabilities of the first generated token (float32, CPU).

    The first decoding step is a plain forward pass over the prompts, so these are the
    ``next_token_logprobs`` of the prompts, obtained without a second pass.
    """
    run = GenerationOptions() if options is None else options
    require_eval(model)
    check_generation_stack()
    check_hook_names(model, (name for name, _ in fwd_hooks))
    with control_tokens_allowed(run.allow_control_tokens):
        ids, mask = prepare_tokens(model, prompts, system=run.system, chat=run.chat)
    sampling = (
        {"do_sample": True, "temperature": run.temperature}
        if run.do_sample
        else {"do_sample": False}
    )
    device = model_device(model)
    chunks = batches(ids, mask, run.batch_size, device)
    # Sampling draws from torch's global generator (Hugging Face takes no generator): seed it
    # inside fork_rng, so the caller's random state is the same afterwards.
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, enabled=run.do_sample), torch.no_grad():
        if run.do_sample:
            torch.manual_seed(run.seed)
        completions, first_logprobs = _generate_batches(
            model, chunks, fwd_hooks, max_new_tokens, sampling, run.progress
        )
    return completions, torch.cat(first_logprobs)


def _generate_batches(
    model: Any,
    chunks: Sequence[tuple[Tensor, Tensor]],
    fwd_hooks: Sequence[tuple[str, Any]],
    max_new_tokens: int,
    sampling: dict[str, Any],
    progress: bool,
) -> tuple[list[str], list[Tensor]]:
    """Completions and first-step log-probs of each ``(input_ids, attention_mask)`` chunk."""
    tokenizer = model.tokenizer
    completions: list[str] = []
    first_logprobs: list[Tensor] = []
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        for batch_ids, batch_mask in tqdm(chunks, desc="generate", disable=stage_bar_off(progress)):
            out = model.original_model.generate(
                input_ids=batch_ids,
                attention_mask=batch_mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                top_p=None,
                top_k=None,
                output_logits=True,
                return_dict_in_generate=True,
                **sampling,
            )
            new_tokens = out.sequences[:, batch_ids.shape[1] :]
            completions.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
            first_logprobs.append(out.logits[0].float().log_softmax(-1).cpu())
    return completions, first_logprobs


def generate(
    model: Any,
    prompts: Prompts,
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    max_new_tokens: int = 32,
    options: GenerationOptions | None = None,
) -> list[str]:
    """Completions (text, special tokens stripped) of ``prompts`` under ``fwd_hooks``.

    Args:
        model: A ``TransformerBridge`` in eval mode.
        prompts: Instructions (chat-formatted here) or an ``(input_ids, attention_mask)`` pair.
        fwd_hooks: ``(hook_name, hook)`` pairs installed while generating.
        max_new_tokens: Tokens to generate per prompt.
        options: How to run (``GenerationOptions``): greedy by default, or
            ``GenerationOptions(do_sample=True)`` to sample at ``temperature`` from a seeded
            generator. A prompt or ``system`` holding one of the tokenizer's control tokens
            (``<|im_end|>``, ...) raises ``ValueError`` unless ``allow_control_tokens=True``.

    Example:
        >>> from tl_ot_ablation.lens.tiny import tiny_model
        >>> quiet = GenerationOptions(progress=False)
        >>> len(generate(tiny_model(), ["hi", "there"], max_new_tokens=2, options=quiet))
        2
    """
    completions, _ = generate_with_first_logprobs(
        model, prompts, fwd_hooks=fwd_hooks, max_new_tokens=max_new_tokens, options=options
    )
    return completions
