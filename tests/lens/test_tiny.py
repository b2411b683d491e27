"""The tiny random-weight models (``lens.tiny``): seeded, and unknown names refused."""

import pytest
import torch

from tl_ot_ablation.lens.tiny import (
    CHAT_TEMPLATE,
    FAMILIES,
    load_chat_template,
    tiny_hf_model,
    tiny_model,
    tiny_tokenizer,
)

# --- the tiny models themselves ----------------------------------------------------------------


def test_tiny_models_are_seeded_and_leave_the_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    for family in FAMILIES:
        a, _ = tiny_hf_model(family, n_layers=1, seed=1)  # type: ignore[arg-type]
        b, _ = tiny_hf_model(family, n_layers=1, seed=1)  # type: ignore[arg-type]
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), (family, name)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_unknown_names_are_refused(as_user: None) -> None:
    with pytest.raises(ValueError, match="architecture must be one of"):
        tiny_model("llama2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no shipped chat template"):
        load_chat_template("llama-2")
    assert tiny_tokenizer().chat_template == CHAT_TEMPLATE  # the default stays minimal ChatML
