"""Tiny random-weight chat models, built offline in well under a second, for tests and demos.

A byte-level BPE tokenizer with no merges (every byte is a token) plus ChatML special tokens and
a ChatML chat template, and a randomly initialised Qwen2 (Llama-style) or GPT-2 model from a
local config, wrapped as a ``TransformerBridge``. Nothing is downloaded.
"""

from typing import Any, Literal

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(*, chat_template: str | None = CHAT_TEMPLATE) -> Any:
    """A byte-level tokenizer (259 tokens) with a ChatML template and, like Qwen's, no BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([*alphabet, *SPECIAL_TOKENS])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        chat_template=chat_template,
        name_or_path="tiny-chat",
        padding_side="left",
    )


def tiny_model(
    architecture: Literal["qwen2", "gpt2"] = "qwen2",
    *,
    n_layers: int = 3,
    d_model: int = 32,
    n_ctx: int = 256,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    chat_template: str | None = CHAT_TEMPLATE,
) -> Any:
    """A random-weight chat model as a ``TransformerBridge`` (eval mode, CPU)."""
    from .models import bridge_from_hf

    hf_model, tokenizer = tiny_hf_model(
        architecture,
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=n_ctx,
        dtype=dtype,
        seed=seed,
        chat_template=chat_template,
    )
    return bridge_from_hf(hf_model, tokenizer, f"tiny-{architecture}", dtype=dtype)


def tiny_hf_model(
    architecture: Literal["qwen2", "gpt2"] = "qwen2",
    *,
    n_layers: int = 3,
    d_model: int = 32,
    n_ctx: int = 256,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    chat_template: str | None = CHAT_TEMPLATE,
) -> tuple[Any, Any]:
    """``(hf_model, tokenizer)`` before booting: the same seed gives the same weights."""
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny_tokenizer(chat_template=chat_template)
    # Seeded inside fork_rng: the caller's global random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config: Any
        if architecture == "qwen2":
            config = Qwen2Config(
                vocab_size=len(tokenizer),
                hidden_size=d_model,
                intermediate_size=2 * d_model,
                num_hidden_layers=n_layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=n_ctx,
                tie_word_embeddings=True,
            )
            hf_model: Any = Qwen2ForCausalLM(config)
        elif architecture == "gpt2":
            config = GPT2Config(
                vocab_size=len(tokenizer),
                n_embd=d_model,
                n_layer=n_layers,
                n_head=4,
                n_positions=n_ctx,
            )
            hf_model = GPT2LMHeadModel(config)
        else:
            raise ValueError(f"architecture must be 'qwen2' or 'gpt2', got {architecture!r}")
    config._attn_implementation = "eager"  # what TransformerLens switches to anyway
    return hf_model.to(dtype).eval(), tokenizer
