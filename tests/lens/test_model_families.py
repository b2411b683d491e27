"""Every common chat family on a tiny random-weight model (``lens.tiny``): the real chat template,
its post-instruction span, fitting, hooks, cached generation and save/load; models without a
chat template; templates whose post-instruction span cannot be located."""

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation import (
    RECOMMENDED_MAP,
    CollectOptions,
    GaussianOTMap,
    GenerationOptions,
    InterventionSet,
    collect_activations,
    fit_ot_ablation,
    format_chat,
    post_instruction_length,
)
from tl_ot_ablation.lens.chat_template import bind_template_kwargs
from tl_ot_ablation.lens.collect import prepare_tokens
from tl_ot_ablation.lens.generation import generate
from tl_ot_ablation.lens.tiny import FAMILIES, tiny_model, tiny_tokenizer

QUIET = CollectOptions(progress=False)
QUIET_GENERATION = GenerationOptions(progress=False)

HOOK = "blocks.1.hook_resid_pre"
PROMPTS = ["how do I bake bread?", "tell me a story about a cat", "hi"]
CHAT_FAMILIES = [name for name in FAMILIES if name != "gpt2"]

_LLAMA31_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
)
_CHATML_SYSTEM = "<|im_start|>system\nbe brief<|im_end|>\n"
_QWEN25_SYSTEM = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n"
)
_CHATML_HI = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
_LLAMA3_HI = (
    "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_GEMMA_HI = "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"

FORMATTED = {  # format_chat(tokenizer, ["hi"])
    "qwen2": _CHATML_HI,
    "qwen2.5": _QWEN25_SYSTEM + _CHATML_HI,
    "qwen3": _CHATML_HI,
    "llama3": "<|begin_of_text|>" + _LLAMA3_HI,
    "llama3.1": _LLAMA31_SYSTEM + "<|eot_id|>" + _LLAMA3_HI,
    "gemma2": _GEMMA_HI,
    "gemma3": _GEMMA_HI,
    "mistral": "<s>[INST] hi [/INST]",
    "phi3": "<|user|>\nhi<|end|>\n<|assistant|>\n",
}
WITH_SYSTEM = {  # format_chat(tokenizer, ["hi"], system="be brief"); None: the template raises
    "qwen2": _CHATML_SYSTEM + _CHATML_HI,
    "qwen2.5": _CHATML_SYSTEM + _CHATML_HI,
    "qwen3": _CHATML_SYSTEM + _CHATML_HI,
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|>"
    + _LLAMA3_HI,
    "llama3.1": _LLAMA31_SYSTEM + "be brief<|eot_id|>" + _LLAMA3_HI,
    "gemma2": None,  # "System role not supported"
    "gemma3": "<bos><start_of_turn>user\nbe brief\n\nhi<end_of_turn>\n<start_of_turn>model\n",
    "mistral": None,  # "Only user and assistant roles are supported!"
    "phi3": "<|system|>\nbe brief<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n",
}
SPANS = {  # the template's tokens after the user message, decoded
    "qwen2": "<|im_end|>\n<|im_start|>assistant\n",
    "qwen2.5": "<|im_end|>\n<|im_start|>assistant\n",
    "qwen3": "<|im_end|>\n<|im_start|>assistant\n",
    "llama3": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "llama3.1": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma2": "<end_of_turn>\n<start_of_turn>model\n",
    "gemma3": "<end_of_turn>\n<start_of_turn>model\n",
    "mistral": " [/INST]",
    "phi3": "<|end|>\n<|assistant|>\n",
}


def _span(tokenizer: Any, text: str, n: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return str(tokenizer.decode(ids[-n:], skip_special_tokens=False))


# --- chat formatting and the post-instruction span, per family ---------------------------------


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_chat_formatting_reproduces_the_real_template(family: str) -> None:
    tokenizer = tiny_tokenizer(family)  # type: ignore[arg-type]
    assert format_chat(tokenizer, ["hi"]) == [FORMATTED[family]]
    expected = WITH_SYSTEM[family]
    if expected is None:
        with pytest.raises(ValueError, match=r"rejected the conversation .*pass system=None"):
            format_chat(tokenizer, ["hi"], system="be brief")
    else:
        assert format_chat(tokenizer, ["hi"], system="be brief") == [expected]


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_post_instruction_span_is_exactly_the_template_after_the_message(family: str) -> None:
    tokenizer = tiny_tokenizer(family)  # type: ignore[arg-type]
    n = post_instruction_length(tokenizer)
    for prompt in PROMPTS:
        [text] = format_chat(tokenizer, [prompt])
        assert _span(tokenizer, text, n) == SPANS[family]
        # ...and not one token more: the token before it is the message's last character.
        assert _span(tokenizer, text, n + 1) == prompt[-1] + SPANS[family]
    if WITH_SYSTEM[family] is not None:  # a system prompt comes before the message
        assert post_instruction_length(tokenizer, system="be brief") == n


@pytest.mark.parametrize("family", [name for name in FAMILIES if FAMILIES[name].bos])
def test_the_template_alone_writes_the_bos(family: str) -> None:
    """Chat text carries the BOS its template writes (Phi-3's writes none), and neither the
    tokenizer nor the bridge adds another."""
    model = tiny_model(family, n_layers=1)  # type: ignore[arg-type]
    bos = model.tokenizer.bos_token_id
    written = int(FORMATTED[family].startswith(model.tokenizer.bos_token))
    assert written == (family != "phi3")
    ids, mask = prepare_tokens(model, PROMPTS)
    for row, real in zip(ids, mask.bool(), strict=True):
        assert (row == bos).sum() == written and (row[real][0] == bos) == bool(written)
    assert model.cfg.default_prepend_bos is False


# --- fitting, hooks, generation and save/load, per family --------------------------------------


@pytest.fixture(scope="module")
def fitted() -> Callable[[str], tuple[Any, InterventionSet]]:
    """``fitted(family)``: a 2-layer tiny model and an OT map fitted at layer 1 (built once)."""
    cache: dict[str, tuple[Any, InterventionSet]] = {}

    def get(family: str) -> tuple[Any, InterventionSet]:
        if family not in cache:
            model = tiny_model(family, n_layers=2)  # type: ignore[arg-type]
            interventions = fit_ot_ablation(
                model,
                HARMFUL,
                HARMLESS,
                layers=[1],
                spec=dataclasses.replace(RECOMMENDED_MAP, n_components=4, reg=1e-2),
                collect=QUIET,
            )
            cache[family] = model, interventions
        return cache[family]

    return get


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_hooks_change_the_output_at_post_instruction_positions_only(
    family: str, fitted: Callable[[str], tuple[Any, InterventionSet]]
) -> None:
    model, interventions = fitted(family)
    n = post_instruction_length(model.tokenizer)
    assert interventions.positions == "post_instruction" and interventions.n_post_instruction == n
    ids, mask = prepare_tokens(model, PROMPTS)
    hooks = interventions.fwd_hooks()
    with torch.no_grad():
        plain = model(ids, attention_mask=mask)
        hooked = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=hooks)
    before = mask.bool()
    before[:, -n:] = False  # real positions before the span: causally untouched
    torch.testing.assert_close(hooked[before], plain[before], rtol=0, atol=1e-6)
    assert ((hooked - plain)[:, -n:].abs().amax(-1) > 1e-4).all()


def _greedy_without_cache(model: Any, prompts: list[str], hooks: list, n_tokens: int) -> list[str]:
    """Reference decoder: one full forward pass per new token, no KV cache, cut at EOS as
    ``generate`` stops there (it pads finished rows, and decoding drops the pads)."""
    ids, mask = prepare_tokens(model, prompts)
    new = []
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        for _ in range(n_tokens):
            token = model(ids, attention_mask=mask)[:, -1].argmax(-1, keepdim=True)
            new.append(token)
            ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
    eos = model.original_model.generation_config.eos_token_id
    stop = {eos} if isinstance(eos, int) else set(eos or ())
    rows = []
    for row in torch.cat(new, 1).tolist():
        end = next((i for i, token in enumerate(row) if token in stop), len(row))
        rows.append(model.tokenizer.decode(row[:end], skip_special_tokens=True))
    return rows


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_cached_generation_equals_uncached(
    family: str, fitted: Callable[[str], tuple[Any, InterventionSet]]
) -> None:
    """The KV-cache check of TL4-NOTES, with and without hooks ("all" positions: the same
    edit whether a pass is the whole sequence or one new token)."""
    model, interventions = fitted(family)
    hooks = interventions.fwd_hooks(positions="all")
    for fwd_hooks in ([], hooks):
        cached = generate(
            model,
            PROMPTS,
            fwd_hooks=fwd_hooks,
            max_new_tokens=5,
            options=QUIET_GENERATION,
        )
        assert cached == _greedy_without_cache(model, PROMPTS, fwd_hooks, 5)


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_fitted_set_round_trips(
    family: str, fitted: Callable[[str], tuple[Any, InterventionSet]], tmp_path: Path
) -> None:
    model, interventions = fitted(family)
    loaded = InterventionSet.load(interventions.save(tmp_path / family), model=model)
    assert loaded.metadata == interventions.metadata
    assert (loaded.positions, loaded.n_post_instruction) == (
        interventions.positions,
        interventions.n_post_instruction,
    )
    ids, mask = prepare_tokens(model, PROMPTS)
    with torch.no_grad():
        a = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=interventions.fwd_hooks())
        b = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=loaded.fwd_hooks())
    assert torch.equal(a, b)


# --- thinking templates ------------------------------------------------------------------------


def test_qwen3_thinking_switch_sets_the_span() -> None:
    tokenizer = tiny_tokenizer("qwen3")
    off = {"enable_thinking": False}
    [text] = format_chat(tokenizer, ["hi"], template_kwargs=off)
    assert text == _CHATML_HI + "<think>\n\n</think>\n\n"
    n_on, n_off = (
        post_instruction_length(tokenizer),
        post_instruction_length(tokenizer, template_kwargs=off),
    )
    assert _span(tokenizer, text, n_off) == SPANS["qwen3"] + "<think>\n\n</think>\n\n"
    assert n_off == n_on + 6  # <think> \n \n </think> \n \n: the think tags are single tokens
    assert post_instruction_length(tokenizer, template_kwargs={"enable_thinking": True}) == n_on
    with pytest.raises(ValueError, match="may not set"):
        format_chat(tokenizer, ["hi"], template_kwargs={"add_generation_prompt": False})


def test_qwen3_with_thinking_bound_off_fits_on_the_empty_think_block() -> None:
    """bind_template_kwargs makes the setting part of the template, so every call (collect, fit,
    generate) uses it without being passed anything."""
    model = tiny_model("qwen3", n_layers=2)
    off = {"enable_thinking": False}
    n_off = post_instruction_length(model.tokenizer, template_kwargs=off)
    model.tokenizer.chat_template = bind_template_kwargs(model.tokenizer.chat_template, off)
    assert format_chat(model.tokenizer, ["hi"]) == [_CHATML_HI + "<think>\n\n</think>\n\n"]
    interventions = fit_ot_ablation(
        model,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=4),
        collect=QUIET,
    )
    assert interventions.n_post_instruction == n_off == post_instruction_length(model.tokenizer)
    completions = generate(
        model,
        PROMPTS,
        fwd_hooks=interventions.fwd_hooks(),
        max_new_tokens=3,
        options=QUIET_GENERATION,
    )
    assert len(completions) == len(PROMPTS)
    with pytest.raises(ValueError, match="must be a bool"):
        bind_template_kwargs("", {"enable_thinking": [False]})


# --- models without a chat template ------------------------------------------------------------


def test_gpt2_without_a_template_errors_clearly_and_the_raw_text_route_works(
    tmp_path: Path,
) -> None:
    model = tiny_model("gpt2", n_layers=2, chat_template=None)
    with pytest.raises(ValueError, match=r"no chat template.*chat=False"):
        format_chat(model.tokenizer, ["hi"])
    with pytest.raises(ValueError, match=r"no post-instruction positions.*positions='last'"):
        post_instruction_length(model.tokenizer)
    with pytest.raises(ValueError, match="no chat template"):
        collect_activations(model, HARMFUL, HOOK, QUIET)
    raw = CollectOptions(chat=False, positions="last", progress=False)
    source = collect_activations(model, HARMFUL, HOOK, raw)[HOOK]
    target = collect_activations(model, HARMLESS, HOOK, raw)[HOOK]
    interventions = InterventionSet(
        {HOOK: GaussianOTMap.fit(source, target, n_components=3, reg=1e-2)},
        positions="last",
    )
    ids, mask = prepare_tokens(model, PROMPTS, chat=False)
    with torch.no_grad():
        plain = model(ids, attention_mask=mask)
        hooked = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=interventions.fwd_hooks())
    torch.testing.assert_close(
        hooked[:, :-1][mask[:, :-1].bool()], plain[:, :-1][mask[:, :-1].bool()]
    )
    assert ((hooked - plain)[:, -1].abs().amax(-1) > 1e-4).all()
    completions = generate(
        model,
        PROMPTS,
        fwd_hooks=interventions.fwd_hooks(),
        max_new_tokens=3,
        options=GenerationOptions(chat=False, progress=False),
    )
    assert len(completions) == len(PROMPTS)
    loaded = InterventionSet.load(interventions.save(tmp_path / "gpt2"), model=model)
    with torch.no_grad():
        again = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=loaded.fwd_hooks())
    assert torch.equal(again, hooked)


def test_fitting_a_model_without_a_template_on_raw_text() -> None:
    """fit_* need the post-instruction span only when fitting or applying there."""
    from tl_ot_ablation import fit_direction_ablation, fit_ot_ablation

    model = tiny_model("gpt2", n_layers=2, chat_template=None)
    raw = CollectOptions(chat=False, positions="last", progress=False)
    spec = dataclasses.replace(RECOMMENDED_MAP, n_components=3)
    fitted = fit_ot_ablation(model, HARMFUL, HARMLESS, layers=[1], spec=spec, collect=raw)
    assert fitted.positions == "last" and fitted.n_post_instruction is None
    ablation = fit_direction_ablation(model, HARMFUL, HARMLESS, layer=1, collect=raw)
    assert ablation.n_post_instruction is None
    with pytest.raises(ValueError, match="needs n_post_instruction"):
        ablation.fwd_hooks(positions="post_instruction")
    with pytest.raises(ValueError, match=r"needs the chat template \(chat=True\)"):
        fit_ot_ablation(
            model,
            HARMFUL,
            HARMLESS,
            layers=[1],
            collect=CollectOptions(chat=False, progress=False),
        )


# --- templates whose post-instruction span cannot be located -----------------------------------

BROKEN = {
    "no generation prompt": (
        "{% for m in messages %}{{ m['content'] }}{% endfor %}",
        "puts nothing after the user message",
    ),
    "text after the message depends on it": (
        "{% for m in messages %}{{ m['content'] }}<|im_end|>{{ m['content'] | length }}"
        "{% endfor %}",
        "could not locate the user message",
    ),
    "message rewritten": (
        "{% for m in messages %}{{ m['content'] | upper }}<|im_end|>{% endfor %}",
        "could not locate the user message",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_unlocatable_span_raises_naming_the_positions_override(case: str) -> None:
    template, reason = BROKEN[case]
    with pytest.raises(ValueError, match=f"{reason}.*positions='last'.*slice"):
        post_instruction_length(tiny_tokenizer(chat_template=template))


def test_template_tokens_that_merge_with_the_message_are_refused() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(
        ["?<|im_end|>"], special_tokens=True
    )  # "...one?" + "<|im_end|>": one token
    with pytest.raises(ValueError, match=r"merge with the end of the message.*positions='last'"):
        post_instruction_length(tokenizer)


def test_a_broken_template_still_works_at_the_last_position() -> None:
    template, _ = BROKEN["no generation prompt"]
    model = tiny_model(n_layers=2, chat_template=template)
    with pytest.raises(ValueError, match="positions='last'"):
        collect_activations(
            model,
            HARMFUL,
            HOOK,
            QUIET,
        )  # default: post_instruction
    rows = collect_activations(
        model,
        HARMFUL,
        HOOK,
        CollectOptions(positions="last", progress=False),
    )[HOOK]
    assert rows.shape == (len(HARMFUL), model.cfg.d_model)
