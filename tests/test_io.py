"""save/load: exact round trips through safetensors + JSON, and clear errors for foreign files."""

import json
from pathlib import Path

import pytest
import torch
from conftest import gaussian_rows, random_spd

from tl_ot_ablation import (
    ActAdd,
    DirectionAblation,
    GaussianOTMap,
    MeanShift,
    PerNeuronOT,
    load,
    save,
)
from tl_ot_ablation.io.manifest import write_manifest
from tl_ot_ablation.io.serialize import read_config


def _rows() -> tuple[torch.Tensor, torch.Tensor]:
    return (
        gaussian_rows(
            100, torch.ones(2, 6, dtype=torch.float64), random_spd(6, batch=(2,), seed=1)
        ).float(),
        gaussian_rows(
            120, torch.zeros(2, 6, dtype=torch.float64), random_spd(6, batch=(2,), seed=2)
        ).float(),
    )


@pytest.mark.parametrize(
    "fit",
    [
        lambda s, t: GaussianOTMap.fit(
            s, t, n_components=3, reg=0.01, basis="pca+mean_diff"
        ).with_strength(0.7),
        lambda s, t: MeanShift.fit(s, t, n_components=2),
        lambda s, t: DirectionAblation.fit(s, t),
        lambda s, t: ActAdd.fit(s, t).with_strength(4.0),
        lambda s, t: PerNeuronOT.fit(s, t, reg=0.1),
    ],
    ids=["ot", "mean_shift", "direction", "actadd", "per_neuron"],
)
def test_round_trip_is_exact(tmp_path: Path, fit) -> None:
    original = fit(*_rows())
    folder = save(original, tmp_path / "obj", metadata={"layers": [3, 4], "model": "tiny"})
    loaded = load(folder)
    assert type(loaded) is type(original)
    assert loaded.strength == original.strength
    x = torch.randn(2, 5, 6)
    assert torch.equal(loaded(x), original(x))
    for name, value in original._tensor_items():
        other = getattr(loaded, name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(other, value)
    config = read_config(folder)
    assert config["metadata"] == {"layers": [3, 4], "model": "tiny"}


def test_hyperparameters_are_recorded(tmp_path: Path) -> None:
    s, t = _rows()
    folder = save(GaussianOTMap.fit(s, t, n_components=3, reg=0.05), tmp_path / "m")
    fields = json.loads((folder / "config.json").read_text())["fields"]
    assert fields["reg"] == 0.05 and fields["basis_method"] == "pca" and fields["strength"] == 1.0


def test_unknown_config_keys_are_ignored(tmp_path: Path) -> None:
    folder = save(DirectionAblation(direction=torch.tensor([0.6, 0.8])), tmp_path / "d")
    config = json.loads((folder / "config.json").read_text())
    config["fields"]["from_the_future"] = 1
    config["also_new"] = True
    (folder / "config.json").write_text(json.dumps(config))
    write_manifest(folder)  # as the newer version that added the keys would have
    assert torch.equal(load(folder).direction, torch.tensor([0.6, 0.8]))


def test_unknown_format_version_and_kind_raise(tmp_path: Path) -> None:
    folder = save(DirectionAblation(direction=torch.tensor([1.0])), tmp_path / "d")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load(folder)
    (folder / "config.json").write_text(json.dumps({**config, "kind": "Pickle"}))
    with pytest.raises(ValueError, match="unknown kind 'Pickle'"):
        load(folder)


def test_a_file_that_is_not_a_saved_map(tmp_path: Path) -> None:
    stray = tmp_path / "weights.pt"
    stray.write_bytes(b"\x80\x04not a map")
    with pytest.raises(ValueError, match="not a saved tl_ot_ablation object"):
        load(stray)
    with pytest.raises(ValueError, match="not a saved tl_ot_ablation object"):
        load(tmp_path / "missing")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    (folder / "tensors.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not valid JSON"):
        load(folder)
