"""Whether a saved set fits a model (``lens.compatibility``): its width, template, depth and
model, and hook names with a suggestion for a typo."""

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import tl_ot_ablation as tlo
from tests.helpers import HARMFUL, HARMLESS, SMALL_D, small_set
from tl_ot_ablation import InterventionSet


def test_a_set_is_checked_against_the_model_by_its_maps_width(tmp_path: Path, tiny_bridge) -> None:
    """Loading with ``model=`` reads the width from the maps themselves, not the metadata."""
    lying = small_set(2)
    lying.metadata["d_model"] = tiny_bridge.cfg.d_model  # says it fits; its maps are SMALL_D wide
    folder = tlo.save(lying, tmp_path / "set")
    with pytest.raises(ValueError, match=rf"takes d_model={SMALL_D}; this model has d_model=32"):
        tlo.InterventionSet.load(folder, model=tiny_bridge)


# --- a set is applied only where it fits ------------------------------------------------


@pytest.fixture(scope="module")
def qwen_fitted() -> tuple[Any, InterventionSet]:
    """A map fitted on a tiny Qwen2 chat model (13 post-instruction tokens)."""

    from tl_ot_ablation.lens.tiny import tiny_model

    model = tiny_model("qwen2", n_layers=3, d_model=32)
    fitted = tlo.fit_ot_ablation(
        model,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(tlo.RECOMMENDED_MAP, n_components=2),
        collect=tlo.CollectOptions(batch_size=4, progress=False),
    )
    return model, fitted


def test_the_fit_records_the_models_template(qwen_fitted) -> None:
    _, fitted = qwen_fitted
    assert fitted.metadata["model"] == "tiny-qwen2" and fitted.metadata["n_layers"] == 3
    assert fitted.n_post_instruction == 13
    assert fitted.metadata["post_instruction_text"] == "<|im_end|>\n<|im_start|>assistant\n"


def test_a_set_fitted_on_another_template_is_refused(tmp_path: Path, qwen_fitted) -> None:
    """Qwen's 13 post-instruction tokens on Gemma-2 (9) edited 4 tokens of the user's message."""
    from tl_ot_ablation.lens.tiny import tiny_model

    folder = tlo.save(qwen_fitted[1], tmp_path / "set")
    gemma = tiny_model("gemma2", n_layers=3, d_model=32)
    with pytest.raises(ValueError, match=r"template has 9, so the edit would reach into the us"):
        tlo.InterventionSet.load(folder, model=gemma)
    with pytest.raises(ValueError, match="allow_mismatch=True"):
        qwen_fitted[1].attach(gemma)
    with pytest.warns(UserWarning, match="does not fit this model"):
        loaded = tlo.InterventionSet.load(folder, model=gemma, allow_mismatch=True)
    assert loaded.n_post_instruction == 13


def test_a_set_fitted_on_another_depth_or_model_is_refused(tmp_path: Path, qwen_fitted) -> None:
    """Only the deepest hooked layer was compared: a 3-layer fit loaded into a 4-layer model."""
    from tl_ot_ablation.lens.tiny import tiny_model

    folder = tlo.save(qwen_fitted[1], tmp_path / "set")
    deeper = tiny_model("qwen2", n_layers=4, d_model=32)
    with pytest.raises(ValueError, match="3 layers there, 4 here"):
        tlo.InterventionSet.load(folder, model=deeper)
    same_shape = tiny_model("gpt2", n_layers=3, d_model=32)  # same template, other model
    with pytest.raises(ValueError, match="fitted on model 'tiny-qwen2', this is 'tiny-gpt2'"):
        tlo.InterventionSet.load(folder, model=same_shape)
    tlo.InterventionSet.load(folder, model=qwen_fitted[0])  # its own model: fine


def test_a_hook_name_typo_is_caught_with_a_suggestion(tmp_path: Path, qwen_fitted) -> None:
    """It saved and loaded, then failed in ``generate`` with a 28-line KeyError."""
    model, fitted = qwen_fitted
    typo = InterventionSet(
        {"blocks.1.hook_resid_pr": fitted["blocks.1.hook_resid_pre"]},
        n_post_instruction=fitted.n_post_instruction,
        metadata=fitted.metadata,
    )
    folder = tlo.save(typo, tmp_path / "typo")
    suggestion = (
        r"no hook named 'blocks\.1\.hook_resid_pr'; did you mean 'blocks\.1\.hook_resid_pre'"
    )
    with pytest.raises(ValueError, match=suggestion):
        tlo.InterventionSet.load(folder, model=model)
    with pytest.raises(ValueError, match=suggestion):
        tlo.generate(
            model,
            ["hi"],
            fwd_hooks=typo.fwd_hooks(),
            max_new_tokens=1,
            options=tlo.GenerationOptions(progress=False),
        )
