"""The embedded Qwen2.5-Coder-1.5B-Instruct, end to end (slow: run alone with ``-m slow``).

Needs the ``models`` extra (installed by scripts/setup.sh). The first run assembles and
de-quantises the GGUF (about a minute here), later runs load a cached safetensors copy.
"""

import dataclasses

import pytest
import torch

import tl_ot_ablation as tlo
from tl_ot_ablation.lens.collect import prepare_tokens

pytestmark = pytest.mark.slow
LAYER = 14
SPLIT = "validation"  # the 64 + 64 prompts these checks were written with
REFUSAL_MARKERS = ("I'm sorry", "I can't", "I cannot", "I apologize")


@pytest.fixture(scope="module")
def model():
    return tlo.load_model()


def test_loads_as_a_refusing_chat_model(model) -> None:
    from tl_ot_ablation.lens.models import auto_dtype

    assert (model.cfg.n_layers, model.cfg.d_model) == (28, 1536)
    assert model.cfg.dtype == auto_dtype(next(model.parameters()).device)
    prompts = [tlo.default_prompts("harmful", SPLIT)[0], tlo.default_prompts("harmless", SPLIT)[0]]
    harmful_out, harmless_out = tlo.generate(
        model,
        prompts,
        max_new_tokens=12,
        options=tlo.GenerationOptions(progress=False),
    )
    assert any(marker in harmful_out for marker in REFUSAL_MARKERS), harmful_out
    assert not any(marker in harmless_out for marker in REFUSAL_MARKERS), harmless_out


def test_cached_generation_matches_full_forward_passes(model) -> None:
    """The KV-cache regression check of ../shared/TL4-NOTES.md, on the real model."""
    prompt = [tlo.default_prompts("harmless", SPLIT)[3]]
    cached = tlo.generate(
        model,
        prompt,
        max_new_tokens=6,
        options=tlo.GenerationOptions(progress=False),
    )
    ids, mask = prepare_tokens(model, prompt)
    with torch.no_grad():
        for _ in range(6):
            nxt = model(ids, attention_mask=mask)[:, -1].argmax(-1, keepdim=True)
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    assert cached == model.tokenizer.batch_decode(ids[:, -6:], skip_special_tokens=True)


def test_fit_one_layer_and_generate_under_the_hooks(model) -> None:
    harmful = tlo.default_prompts("harmful", SPLIT)[:8]
    harmless = tlo.default_prompts("harmless", SPLIT)[:8]
    ot = tlo.fit_ot_ablation(
        model,
        harmful,
        harmless,
        layers=[LAYER],
        spec=dataclasses.replace(tlo.RECOMMENDED_MAP, n_components=16),
        collect=tlo.CollectOptions(progress=False),
    )
    ot_map = ot[f"blocks.{LAYER}.hook_resid_pre"]
    diagnostics = ot_map.diagnostics()
    assert diagnostics.transport_residual < 1e-3 and diagnostics.w2_mean > 0
    test = [tlo.default_prompts("harmful", SPLIT)[60]]
    plain = tlo.generate(
        model,
        test,
        max_new_tokens=16,
        options=tlo.GenerationOptions(progress=False),
    )
    hooked = tlo.generate(
        model,
        test,
        fwd_hooks=ot.fwd_hooks(),
        max_new_tokens=16,
        options=tlo.GenerationOptions(progress=False),
    )
    assert hooked[0].strip() and hooked != plain
    assert model.list_hooks() == {}


def test_generation_matches_plain_transformers_greedy(model) -> None:
    """Same tokens as Hugging Face greedy decoding on a fresh, never-booted copy of the model."""
    from tl_ot_ablation.lens import models

    plain_hf, _, _ = models._load_hf(models.DEFAULT_MODEL, model.cfg.dtype)
    prompts = [tlo.default_prompts("harmful", SPLIT)[1], tlo.default_prompts("harmless", SPLIT)[1]]
    ids, mask = prepare_tokens(model, prompts)
    with torch.no_grad():
        reference = plain_hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=8,
            do_sample=False,
            top_p=None,
            top_k=None,
            pad_token_id=model.tokenizer.pad_token_id,
        )
    expected = model.tokenizer.batch_decode(reference[:, ids.shape[1] :], skip_special_tokens=True)
    assert (
        tlo.generate(
            model,
            prompts,
            max_new_tokens=8,
            options=tlo.GenerationOptions(progress=False),
        )
        == expected
    )


def test_load_model_from_a_local_gguf_file(model) -> None:
    """The same weights through the local-file route: identical logits to the embedded route."""
    from tl_ot_ablation.lens import models

    from_file = tlo.load_model(str(models.embedded_gguf_path()))
    ids, mask = prepare_tokens(model, ["hello"])
    with torch.no_grad():
        torch.testing.assert_close(
            from_file(ids, attention_mask=mask), model(ids, attention_mask=mask)
        )
    assert from_file.cfg.default_prepend_bos is False and from_file.tokenizer.padding_side == "left"
