"""save/load (``io.serialize``): exact round trips through safetensors + JSON, clear errors for
foreign files, and a corrupted folder either loads exactly what was saved or raises
``ValueError`` (fuzzed with hypothesis)."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import tl_ot_ablation as tlo
from tests.helpers import SMALL_D, gaussian_rows, random_spd, same_saved, small_map, small_set
from tl_ot_ablation import (
    ActAdd,
    DirectionAblation,
    GaussianOTMap,
    MeanShift,
    PerNeuronOT,
    load,
    save,
)
from tl_ot_ablation.io import serialize
from tl_ot_ablation.io.manifest import write_manifest
from tl_ot_ablation.io.serialize import read_config
from tl_ot_ablation.lens.intervention_set import SET_KEYS


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


# --- each kind of corruption is named -------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return tlo.save(small_map(), tmp_path / "map")


def _edit_config(folder: Path, edit: Any, *, rechecksum: bool = False) -> None:
    """Edit ``config.json`` in place; ``rechecksum`` records the edited config's checksum, as a
    corruption before saving would have."""
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    if rechecksum:
        config.pop(serialize.CHECKSUM_KEY, None)
        serialize.write_config(folder, config)
    else:
        (folder / "config.json").write_text(json.dumps(config))


def test_flipped_bytes_fail_the_checksum(saved: Path) -> None:
    path = saved / "tensors.safetensors"
    data = bytearray(path.read_bytes())
    for i in torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:100]:
        data[int(i)] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        tlo.load(saved)


def test_nan_in_a_saved_matrix_is_named(saved: Path) -> None:
    path = saved / "tensors.safetensors"
    tensors = load_file(str(path))
    tensors["matrix"][0, 0] = float("nan")
    save_file(tensors, str(path))  # a consistent file, checksum updated: only the NaN is wrong
    _edit_config(saved, lambda c: c["sha256"].update({path.name: serialize.sha256_file(path)}))
    with pytest.raises(ValueError, match=r"tensor 'matrix' holds NaN"):
        tlo.load(saved)


def test_swapped_kind_is_refused(saved: Path) -> None:
    _edit_config(saved, lambda c: c.update(kind="MeanShift"))
    with pytest.raises(ValueError, match=r"not make a valid MeanShift.*identity"):
        tlo.load(saved)


def test_swapped_kind_with_other_tensors_is_refused(saved: Path) -> None:
    _edit_config(saved, lambda c: c.update(kind="DirectionAblation"))
    with pytest.raises(ValueError, match=r"does not hold the tensors of a DirectionAblation"):
        tlo.load(saved)


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        (lambda c: c["fields"].pop("basis"), "'basis'"),
        (lambda c: c.pop("kind"), "'kind'"),
        (lambda c: c.pop("format_version"), "'format_version'"),
    ],
)
def test_removed_field_is_named(saved: Path, remove: Any, named: str) -> None:
    _edit_config(saved, remove)
    with pytest.raises(ValueError, match=named):
        tlo.load(saved)


def test_recorded_shape_must_match_the_tensor(saved: Path) -> None:
    _edit_config(saved, lambda c: c["tensors"]["matrix"].update(shape=[4, 4]))
    with pytest.raises(ValueError, match=r"tensor 'matrix' has shape \[3, 3\].*records \[4, 4\]"):
        tlo.load(saved)


def test_missing_tensor_file_and_subfolder(tmp_path: Path) -> None:
    folder = tlo.save(small_set(2), tmp_path / "set")
    shutil.rmtree(folder / "intervention_1")
    with pytest.raises(ValueError, match="intervention_1 is not a saved tl_ot_ablation object"):
        tlo.load(folder)


def test_edited_strength_is_detected(saved: Path) -> None:
    """config.json is checksummed: a changed value cannot load as a different object."""
    _edit_config(saved, lambda c: c["fields"].update(strength=0.75))
    with pytest.raises(ValueError, match="checksum"):
        tlo.load(saved)


def test_unknown_keys_stay_ignored_under_the_checksum(saved: Path) -> None:
    """Keys a newer version adds are outside the checksum, as they are outside loading (that
    version writes its own manifest over them)."""
    _edit_config(saved, lambda c: c["fields"].update(from_the_future=1) or c.update(new=True))
    write_manifest(saved)
    assert same_saved(tlo.load(saved), small_map())


# --- fuzzing: a corrupted folder loads exactly, or raises ValueError ------------------------

X = torch.randn(7, SMALL_D)


@st.composite
def corruptions(draw: st.DrawFn, size: int) -> tuple[str, list[tuple[int, int]], int | None]:
    """Byte flips (position, non-zero XOR mask) or a truncation, of a file of ``size`` bytes."""
    if draw(st.booleans()):
        return "truncate", [], draw(st.integers(0, size - 1))
    flips = draw(
        st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=8)
    )
    return "flip", flips, None


def _corrupt(path: Path, corruption: tuple[str, list[tuple[int, int]], int | None]) -> None:
    kind, flips, length = corruption
    data = bytearray(path.read_bytes())
    if kind == "truncate":
        del data[length:]
    for position, mask in flips:
        data[position] ^= mask
    path.write_bytes(bytes(data))


def _load_or_value_error(folder: Path) -> Any:
    """``tlo.load(folder)``, or ``None`` for a ``ValueError``; any other exception propagates."""
    try:
        return tlo.load(folder)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tlo.save(small_map(), tmp_path_factory.mktemp("pristine") / "map")


def _fuzz_copy(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(pristine, tmp_path_factory.mktemp("fuzz") / "map"))


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(data=st.data())
def test_fuzz_tensor_file_loads_exactly_or_raises_value_error(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    folder = _fuzz_copy(pristine, tmp_path_factory)
    path = folder / "tensors.safetensors"
    _corrupt(path, data.draw(corruptions(path.stat().st_size)))
    loaded = _load_or_value_error(folder)
    assert loaded is None or same_saved(loaded, small_map())


@FUZZ
@given(data=st.data())
def test_fuzz_tensor_file_with_matching_checksum_never_crashes(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Corruption that happened before the checksum was taken: the checks behind it (the
    safetensors parser, names, shapes, finiteness) must still answer with ValueError or an
    object that works."""
    folder = _fuzz_copy(pristine, tmp_path_factory)
    path = folder / "tensors.safetensors"
    _corrupt(path, data.draw(corruptions(path.stat().st_size)))
    _edit_config(
        folder,
        lambda c: c["sha256"].update({path.name: serialize.sha256_file(path)}),
        rechecksum=True,
    )
    loaded = _load_or_value_error(folder)
    if loaded is not None:
        assert isinstance(loaded, GaussianOTMap)
        assert all(torch.isfinite(t).all() for t in serialize._flatten(loaded)[0].values())


@FUZZ
@given(data=st.data())
def test_fuzz_config_loads_exactly_or_raises_value_error(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    folder = _fuzz_copy(pristine, tmp_path_factory)
    path = folder / "config.json"
    _corrupt(path, data.draw(corruptions(path.stat().st_size)))
    loaded = _load_or_value_error(folder)
    assert loaded is None or same_saved(loaded, small_map())


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_saved_set_loads_exactly_or_raises_value_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    folder = tlo.save(small_set(2), tmp_path_factory.mktemp("fuzzset") / "set")
    path = (
        folder
        / data.draw(st.sampled_from(["intervention_0", "intervention_1"]))
        / ("tensors.safetensors")
    )
    _corrupt(path, data.draw(corruptions(path.stat().st_size)))
    loaded = _load_or_value_error(folder)
    assert loaded is None or same_saved(loaded, small_set(2))


# --- everything in a saved set is verified ---------------------------------------------


def test_a_swapped_part_of_a_set_is_refused(tmp_path: Path) -> None:
    """Each part checked itself only: another valid map in ``intervention_0`` loaded."""
    folder = tlo.save(small_set(2), tmp_path / "set")
    donor = tlo.save(small_set(2, seed=3), tmp_path / "donor")
    shutil.rmtree(folder / "intervention_0")
    shutil.copytree(donor / "intervention_0", folder / "intervention_0")
    with pytest.raises(ValueError, match=r"intervention_0.*differs from what .*manifest"):
        tlo.load(folder)


@pytest.mark.parametrize("make", [small_map, lambda: small_set(2)], ids=["map", "set"])
def test_a_deleted_checksum_is_an_error_unless_asked_for(tmp_path: Path, make: Any) -> None:
    folder = tlo.save(make(), tmp_path / "out")
    _edit_config(folder, lambda c: c.pop(serialize.CHECKSUM_KEY))
    write_manifest(folder)  # even a consistent manifest does not stand in for the checksum
    with pytest.raises(ValueError, match=r"cannot be verified.*verify=False"):
        tlo.load(folder)
    assert same_saved(tlo.load(folder, verify=False), make())
    unlisted = tlo.save(make(), tmp_path / "unlisted")
    (unlisted / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"no valid manifest\.json.*verify=False"):
        tlo.load(unlisted)
    assert same_saved(tlo.load(unlisted, verify=False), make())


def test_an_absurd_post_instruction_length_is_refused(tmp_path: Path) -> None:
    folder = tlo.save(small_set(2), tmp_path / "set")
    config = json.loads((folder / "config.json").read_text())
    config.pop(serialize.CHECKSUM_KEY)
    config["n_post_instruction"] = 10**6
    serialize.write_config(folder, config, SET_KEYS)
    write_manifest(folder)
    with pytest.raises(ValueError, match=r"n_post_instruction must be an integer in 1\.\.1024"):
        tlo.load(folder)


def test_an_old_format_version_is_not_blamed_on_an_old_package(tmp_path: Path) -> None:
    folder = tlo.save(small_map(), tmp_path / "map")
    _edit_config(folder, lambda c: c.update(format_version=0))
    with pytest.raises(ValueError, match="no longer reads it; fit and save it again"):
        tlo.load(folder)
    _edit_config(folder, lambda c: c.update(format_version=2))
    with pytest.raises(ValueError, match="upgrade tl_ot_ablation"):
        tlo.load(folder)


def test_an_unavailable_device_is_blamed_not_the_file(tmp_path: Path) -> None:
    folder = tlo.save(small_map(), tmp_path / "map")
    device = "nonsense" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match=rf"cannot load onto device '{device}'") as caught:
        tlo.load(folder, device=device)
    assert "safetensors" not in str(caught.value)
