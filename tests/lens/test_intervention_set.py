"""Model-level intervention sets (``lens.intervention_set``): save/load round trip with model
checks, a shared direction saved once, strength for every intervention."""

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.helpers import HARMFUL, HARMLESS
from tl_ot_ablation import (
    RECOMMENDED_MAP,
    CollectOptions,
    InterventionSet,
    fit_direction_ablation,
    fit_ot_ablation,
)

QUIET = CollectOptions(progress=False)


def test_save_load_round_trip_and_model_checks(tiny_bridge, tmp_path: Path) -> None:
    from tl_ot_ablation.lens.tiny import tiny_model

    fitted = fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[2],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=4),
        collect=QUIET,
    )
    folder = fitted.save(tmp_path / "set")
    loaded = InterventionSet.load(folder, model=tiny_bridge)
    assert loaded.metadata == fitted.metadata and loaded.positions == fitted.positions
    ids = tiny_bridge.tokenizer(["hello there friend"], return_tensors="pt")["input_ids"]
    a = tiny_bridge.run_with_hooks(ids, fwd_hooks=fitted.fwd_hooks(positions="all"))
    b = tiny_bridge.run_with_hooks(ids, fwd_hooks=loaded.fwd_hooks(positions="all"))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="d_model=32; this model has d_model=48"):
        InterventionSet.load(folder, model=tiny_model(d_model=48))
    with pytest.raises(ValueError, match="hook layer 2; this model has only 2 layers"):
        InterventionSet.load(folder, model=tiny_model(n_layers=2))


def test_direction_ablation_set_saves_its_shared_direction_once(
    tiny_bridge, tmp_path: Path
) -> None:
    fitted = fit_direction_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layer=1,
        collect=QUIET,
    )
    folder = fitted.save(tmp_path / "da")
    assert len(list(folder.glob("intervention_*"))) == 1
    loaded = InterventionSet.load(folder)
    assert len({id(v) for v in loaded.values()}) == 1 and len(loaded) == len(fitted)


def test_with_strength_applies_to_every_intervention(tiny_bridge) -> None:
    fitted = fit_ot_ablation(
        tiny_bridge,
        HARMFUL,
        HARMLESS,
        layers=[1, 2],
        spec=dataclasses.replace(RECOMMENDED_MAP, n_components=8),
        collect=QUIET,
    )
    half = fitted.with_strength(0.5)
    assert half.strength == 0.5 and fitted.strength == 1.0
