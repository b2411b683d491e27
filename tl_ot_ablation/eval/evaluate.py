"""Model-level measurements under interventions: next-token distributions and completion NLL.

The damage an intervention does on harmless prompts is measured two ways (issue 4): the KL
divergence of the next-token distribution at the first generated position from the unmodified
model's, and the cross-entropy (perplexity) of given completions, teacher-forced. For the
latter, prompt and completion sit in one sequence ``[left-padded prompt | right-padded
completion]``, so an ``InterventionSet`` applied "where it was fitted, plus every generated
token" is applied here at the same tokens as during generation: its position spec is shifted
to the prompt/completion boundary (``scoring_hooks``).
"""

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..core.errors import UserInputError
from ..lens.collect import Prompts, batches, model_device, prepare_tokens, require_eval
from ..lens.hooks import PositionSpec
from ..lens.intervention_set import InterventionSet
from ..lens.tokens import padded


def next_token_logprobs(
    model: Any,
    prompts: Prompts,
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    batch_size: int = 16,
    system: str | None = None,
) -> Float[Tensor, "n vocab"]:
    """Log-probabilities of the first generated token, ``[n_prompts, vocab]`` (float32, CPU)."""
    require_eval(model)
    ids, mask = prepare_tokens(model, prompts, system=system)
    out = []
    with torch.no_grad(), model.hooks(fwd_hooks=list(fwd_hooks)):
        for batch_ids, batch_mask in batches(ids, mask, batch_size, model_device(model)):
            logits = model(batch_ids, attention_mask=batch_mask)
            out.append(logits[:, -1].float().log_softmax(-1).cpu())
    return torch.cat(out)


def scoring_positions(positions: PositionSpec, prompt_len: int, n_post: int | None) -> PositionSpec:
    """The position spec that edits, in a ``[prompt | completion]`` sequence, the tokens that
    generation would have edited (prompt positions as fitted, then every completion token)."""
    if positions == "post_instruction":
        assert n_post is not None
        return slice(prompt_len - n_post, None)
    if positions == "last":
        return slice(prompt_len - 1, None)
    return positions


def scoring_hooks(interventions: InterventionSet, prompt_len: int) -> list[tuple[str, Any]]:
    """``interventions``' hooks at ``scoring_positions`` for a ``[prompt | completion]`` pass."""
    where = scoring_positions(interventions.positions, prompt_len, interventions.n_post_instruction)
    return interventions.fwd_hooks(positions=where)


def _right_padded(tokenizer: Any, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` of raw texts, right-padded, no special tokens added."""
    encoded = padded(tokenizer, texts, "right")
    return encoded["input_ids"], encoded["attention_mask"]


def _mean_nll(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Per-row mean negative log-likelihood of ``targets`` over the unmasked positions (CPU)."""
    logprobs = logits.float().log_softmax(-1)
    token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    weights = mask.float()
    return (-(token_logprobs * weights).sum(1) / weights.sum(1)).cpu()


def completion_nll(
    model: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    interventions: Sequence[InterventionSet] = (),
    batch_size: int = 8,
    system: str | None = None,
) -> Float[Tensor, " n"]:
    """Mean negative log-likelihood (nats per token) of each completion given its prompt.

    ``exp`` of the mean over prompts is the perplexity. ``interventions`` are applied (in list
    order) where generation would apply them. Every completion needs at least one token.
    """
    require_eval(model)
    if len(prompts) != len(completions):
        raise UserInputError(f"got {len(prompts)} prompts but {len(completions)} completions")
    prompt_ids, prompt_mask = prepare_tokens(model, prompts, system=system)
    comp_ids, comp_mask = _right_padded(model.tokenizer, completions)
    empty = (comp_mask.sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        raise UserInputError(
            f"completions {empty} are empty; every completion needs at least one token"
        )
    prompt_len = prompt_ids.shape[1]
    ids = torch.cat([prompt_ids, comp_ids], 1)
    mask = torch.cat([prompt_mask, comp_mask], 1)
    if ids.shape[1] > model.cfg.n_ctx:
        raise UserInputError(
            f"prompt + completion is {ids.shape[1]} tokens, more than the context {model.cfg.n_ctx}"
        )
    hooks = [pair for group in interventions for pair in scoring_hooks(group, prompt_len)]
    out = []
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for batch_ids, batch_mask in batches(ids, mask, batch_size, model_device(model)):
            logits = model(batch_ids, attention_mask=batch_mask)
            # Positions prompt_len - 1 ... end - 2 predict the completion tokens.
            out.append(
                _mean_nll(
                    logits[:, prompt_len - 1 : -1],
                    batch_ids[:, prompt_len:],
                    batch_mask[:, prompt_len:],
                )
            )
    return torch.cat(out)


def text_nll(
    model: Any,
    texts: Sequence[str],
    *,
    fwd_hooks: Sequence[tuple[str, Any]] = (),
    batch_size: int = 8,
) -> Float[Tensor, " n"]:
    """Mean NLL (nats per token) of each plain text (no chat template), under ``fwd_hooks``.

    Texts are right-padded, so a position spec such as ``slice(1, None)`` ("every token but the
    first") means the same tokens in every row.
    """
    require_eval(model)
    if isinstance(texts, str) or len(texts) == 0:
        raise UserInputError("texts must be a non-empty list of strings")
    ids, mask = _right_padded(model.tokenizer, texts)
    if int(mask.sum(1).min()) < 2:
        raise UserInputError("every text needs at least two tokens")
    if ids.shape[1] > model.cfg.n_ctx:
        raise UserInputError(
            f"a text is {ids.shape[1]} tokens, more than the context {model.cfg.n_ctx}"
        )
    out = []
    with torch.no_grad(), model.hooks(fwd_hooks=list(fwd_hooks)):
        for batch_ids, batch_mask in batches(ids, mask, batch_size, model_device(model)):
            logits = model(batch_ids, attention_mask=batch_mask)
            out.append(_mean_nll(logits[:, :-1], batch_ids[:, 1:], batch_mask[:, 1:]))
    return torch.cat(out)


def text_hooks(interventions: InterventionSet) -> list[tuple[str, Any]]:
    """Hooks for plain text: a set fitted on chat-template positions applies to every token but
    the first (the attention sink); a set applied everywhere keeps its own spec."""
    where = interventions.positions
    if where in ("post_instruction", "last"):
        where = slice(1, None)
    return interventions.fwd_hooks(positions=where)
