"""Tiny random-weight chat models of every common family, built offline in well under a second:
what ``--model tiny`` runs, for trying the pipeline, the demos and the tests.

Each pairs a randomly initialised Hugging Face model of the family's architecture (a local
config: a few layers, ``d_model`` 32) with a byte-level BPE tokenizer with no merges (every byte
is a token) that carries the family's special tokens, its BOS / EOS / pad conventions and the
real chat template of its instruct models (``tl_ot_ablation/data/chat_templates``), and boots
it as a ``TransformerBridge``. Nothing is downloaded.

Families (``FAMILIES``; the name is the ``architecture`` argument):

- ``"qwen2"`` (the default): Qwen2 with a minimal ChatML template (``CHAT_TEMPLATE``: no
  system prompt), the package's long-standing test model;
- ``"qwen2.5"``, ``"qwen3"``, ``"llama3"``, ``"llama3.1"``, ``"gemma2"``, ``"gemma3"``,
  ``"mistral"``, ``"phi3"``: the architecture with its instruct models' real template;
- ``"gpt2"``: GPT-2 has no chat template; the tiny one carries ``CHAT_TEMPLATE`` so it can stand
  in for a chat model, and ``chat_template=None`` gives the real situation.
"""

import enum
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, TypedDict, Unpack

import torch

from ..core.errors import UserInputError

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

Architecture = Literal[
    "qwen2", "qwen2.5", "qwen3", "llama3", "llama3.1", "gemma2", "gemma3", "mistral", "phi3", "gpt2"
]


class _Template(enum.Enum):
    FAMILY = "the family's own chat template"


FAMILY_TEMPLATE = _Template.FAMILY
"""Default of ``chat_template=``: the family's template (``Family.template``)."""
TemplateChoice = str | Literal[_Template.FAMILY] | None
"""``chat_template=``: a template, ``FAMILY_TEMPLATE`` (the family's), or ``None`` (none)."""


@dataclass(frozen=True)
class Family:
    """How one family's tiny model and tokenizer are built.

    Attributes:
        architecture: The Hugging Face model class, e.g. ``"LlamaForCausalLM"``.
        template: File name (without ``.jinja``) of its chat template in
            ``data/chat_templates``, or ``None`` for the minimal ``CHAT_TEMPLATE``.
        special_tokens: Control tokens: one token each, dropped by ``skip_special_tokens``.
        added_tokens: Other single tokens, which decoding keeps (Qwen3's ``<think>``).
        bos: BOS token, or ``None`` (Qwen and the tiny GPT-2 have none).
        eos: EOS token.
        pad: Pad token, or ``None`` (Llama and Mistral have none; ``bridge_from_hf`` then
            pads with EOS, as for the real models).
        add_bos: Whether ``tokenizer(text)`` prepends BOS. The package never lets a tokenizer
            add special tokens (chat templates write their own BOS); TransformerLens 4.3 reloads
            a tokenizer that has a BOS token but does not add it from the hub, which a tiny
            offline tokenizer cannot survive, so every tiny tokenizer with a BOS adds it.
        config_token_ids: Put the token ids in the model config (as real configs do, so
            generation stops at EOS). Off for ``"qwen2"`` and ``"gpt2"``, whose configs are
            kept as they always were so that seeded weights and outputs do not change.
    """

    architecture: str
    template: str | None
    special_tokens: tuple[str, ...]
    added_tokens: tuple[str, ...] = ()
    bos: str | None = None
    eos: str = "<|im_end|>"
    pad: str | None = "<|im_end|>"
    add_bos: bool = False
    config_token_ids: bool = True

    @property
    def chat_template(self) -> str:
        """The template text."""
        return CHAT_TEMPLATE if self.template is None else load_chat_template(self.template)


_CHATML = tuple(SPECIAL_TOKENS)
_LLAMA3 = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
_GEMMA = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
_PHI3 = (
    "<unk>",
    "<s>",
    "</s>",
    "<|endoftext|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
    "<|user|>",
)

FAMILIES: dict[str, Family] = {
    "qwen2": Family("Qwen2ForCausalLM", None, _CHATML, config_token_ids=False),
    "qwen2.5": Family("Qwen2ForCausalLM", "qwen2.5", _CHATML, pad="<|endoftext|>"),
    "qwen3": Family(
        "Qwen3ForCausalLM", "qwen3", _CHATML, ("<think>", "</think>"), pad="<|endoftext|>"
    ),
    "llama3": Family(
        "LlamaForCausalLM",
        "llama-3",
        _LLAMA3,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        add_bos=True,
    ),
    "llama3.1": Family(
        "LlamaForCausalLM",
        "llama-3.1",
        (*_LLAMA3, "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"),
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        add_bos=True,
    ),
    "gemma2": Family(
        "Gemma2ForCausalLM", "gemma-2", _GEMMA, bos="<bos>", eos="<eos>", pad="<pad>", add_bos=True
    ),
    "gemma3": Family(
        "Gemma3ForCausalLM",
        "gemma-3",
        (*_GEMMA, "<start_of_image>"),
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        add_bos=True,
    ),
    "mistral": Family(
        "MistralForCausalLM",
        "mistral-v0.2",
        ("<unk>", "<s>", "</s>"),  # [INST] is plain text before v0.3
        bos="<s>",
        eos="</s>",
        pad=None,
        add_bos=True,
    ),
    "phi3": Family(
        "Phi3ForCausalLM",
        "phi-3",
        _PHI3,
        bos="<s>",
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        add_bos=True,
    ),
    "gpt2": Family("GPT2LMHeadModel", None, _CHATML, config_token_ids=False),
}

# Decoder-only architectures built from a Llama-style config:
# (config class, tied embeddings, head_dim given explicitly rather than d_model / n_heads).
_DECODERS = {
    "Qwen2ForCausalLM": ("Qwen2Config", True, False),
    "Qwen3ForCausalLM": ("Qwen3Config", True, True),
    "LlamaForCausalLM": ("LlamaConfig", False, False),
    "MistralForCausalLM": ("MistralConfig", False, False),
    "Phi3ForCausalLM": ("Phi3Config", False, False),
    "Gemma2ForCausalLM": ("Gemma2Config", True, True),
    "Gemma3ForCausalLM": ("Gemma3TextConfig", True, True),
}
_N_HEADS, _N_KV_HEADS = 4, 2


def load_chat_template(name: str) -> str:
    """A shipped chat template by file name, e.g. ``"llama-3.1"`` (see its folder's README)."""
    folder = resources.files("tl_ot_ablation").joinpath("data", "chat_templates")
    names = sorted(
        p.name.removesuffix(".jinja") for p in folder.iterdir() if p.name.endswith(".jinja")
    )
    if name not in names:
        raise UserInputError(f"no shipped chat template {name!r}; choose from {names}")
    return folder.joinpath(f"{name}.jinja").read_text(encoding="utf-8").removesuffix("\n")


def _family(architecture: str) -> Family:
    if architecture not in FAMILIES:
        raise UserInputError(
            f"architecture must be one of {sorted(FAMILIES)}, got {architecture!r}"
        )
    return FAMILIES[architecture]


def tiny_tokenizer(
    architecture: Architecture = "qwen2",
    *,
    chat_template: TemplateChoice = FAMILY_TEMPLATE,
) -> Any:
    """A byte-level tokenizer (256 byte tokens, then the family's special and added tokens) with
    the family's chat template (``chat_template=`` overrides it; ``None``: no template).

    The default, ``"qwen2"``, has 259 tokens, ChatML and, like Qwen's, no BOS.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    family = _family(architecture)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # sorted: stable ids
    tokens = [*alphabet, *family.special_tokens, *family.added_tokens]
    backend = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(family.special_tokens))
    backend.add_tokens(list(family.added_tokens))
    template = family.chat_template if chat_template is FAMILY_TEMPLATE else chat_template
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        add_bos_token=family.add_bos,
        chat_template=template,
        name_or_path="tiny-chat" if architecture == "qwen2" else f"tiny-{architecture}",
        padding_side="left",
    )


class TinyOptions(TypedDict, total=False):
    """The keyword arguments ``tiny_model`` passes on to ``tiny_hf_model`` (defaults there)."""

    n_layers: int
    d_model: int
    n_ctx: int
    dtype: torch.dtype
    seed: int
    chat_template: TemplateChoice


def tiny_model(architecture: Architecture = "qwen2", **options: Unpack[TinyOptions]) -> Any:
    """A random-weight chat model of one family as a ``TransformerBridge`` (eval mode, CPU);
    ``options`` as in ``tiny_hf_model`` (``n_layers``, ``d_model``, ``n_ctx``, ``dtype``, ...).

    Example:
        >>> model = tiny_model("llama3.1", n_layers=2)
        >>> model.tokenizer.decode(model.tokenizer("hi")["input_ids"])
        '<|begin_of_text|>hi'
    """
    from .models import bridge_from_hf

    hf_model, tokenizer = tiny_hf_model(architecture, **options)
    dtype = options.get("dtype", torch.float32)
    return bridge_from_hf(hf_model, tokenizer, f"tiny-{architecture}", dtype=dtype)


def tiny_hf_model(
    architecture: Architecture = "qwen2",
    *,
    n_layers: int = 3,
    d_model: int = 32,
    n_ctx: int = 256,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    chat_template: TemplateChoice = FAMILY_TEMPLATE,
) -> tuple[Any, Any]:
    """``(hf_model, tokenizer)`` before booting: the same seed gives the same weights.

    ``d_model`` must be a multiple of 4 (four attention heads, two key-value heads).
    """
    import transformers

    family = _family(architecture)
    if d_model % _N_HEADS:
        raise UserInputError(f"d_model must be a multiple of {_N_HEADS}, got {d_model}")
    tokenizer = tiny_tokenizer(architecture, chat_template=chat_template)
    config: Any
    # Seeded inside fork_rng: the caller's global random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family.architecture == "GPT2LMHeadModel":
            config = transformers.GPT2Config(
                vocab_size=len(tokenizer),
                n_embd=d_model,
                n_layer=n_layers,
                n_head=_N_HEADS,
                n_positions=n_ctx,
            )
        else:
            config_class, tied, explicit_head_dim = _DECODERS[family.architecture]
            sizes: dict[str, Any] = {
                "vocab_size": len(tokenizer),
                "hidden_size": d_model,
                "intermediate_size": 2 * d_model,
                "num_hidden_layers": n_layers,
                "num_attention_heads": _N_HEADS,
                "num_key_value_heads": _N_KV_HEADS,
                "max_position_embeddings": n_ctx,
                "tie_word_embeddings": tied,
            }
            if explicit_head_dim:
                sizes["head_dim"] = d_model // _N_HEADS
            if family.config_token_ids:
                sizes |= {
                    "bos_token_id": tokenizer.bos_token_id,
                    "eos_token_id": tokenizer.eos_token_id,
                    "pad_token_id": tokenizer.pad_token_id,
                }
            config = getattr(transformers, config_class)(**sizes)
        hf_model: Any = getattr(transformers, family.architecture)(config)
    # transformers' own attribute (no public setter on a built model; not ours, so not a
    # private name crossing our modules): eager, what TransformerLens switches to anyway.
    config._attn_implementation = "eager"
    return hf_model.to(dtype).eval(), tokenizer
