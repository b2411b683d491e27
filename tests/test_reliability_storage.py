"""Reliability of saved objects: an interrupted save loses nothing, a re-save leaves nothing
stale, and a corrupted folder either loads exactly what was saved or raises ``ValueError``."""

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import tl_ot_ablation as tlo
from tl_ot_ablation import DirectionAblation, GaussianOTMap, InterventionSet, PerNeuronOT
from tl_ot_ablation.io import atomic, serialize
from tl_ot_ablation.io.manifest import write_manifest
from tl_ot_ablation.lens.intervention_set import SET_KEYS

D = 6


def _rows(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(2.0, 0.5, D)
    return torch.randn(40, D, generator=g) * scales + 1, torch.randn(50, D, generator=g) * scales


def _ot_map(seed: int = 0) -> GaussianOTMap:
    return GaussianOTMap.fit(*_rows(seed), n_components=3).with_strength(0.5)


def _set(n: int, seed: int = 0) -> InterventionSet:
    """A set of ``n`` distinct interventions (a map, an ablation, per-neuron OT, ...)."""
    source, target = _rows(seed)
    kinds = [
        _ot_map(seed),
        DirectionAblation.fit(source, target),
        PerNeuronOT.fit(source, target),
        _ot_map(seed + 1),
    ]
    hooks = {f"blocks.{i}.hook_resid_pre": kinds[i] for i in range(n)}
    return InterventionSet(hooks, positions="all", metadata={"seed": seed})


def _same(a: Any, b: Any) -> bool:
    """Whether two saved kinds, or two sets, hold identical tensors and fields."""
    if isinstance(a, InterventionSet):
        return (
            isinstance(b, InterventionSet)
            and list(a) == list(b)
            and (a.positions, a.n_post_instruction, a.metadata)
            == (b.positions, b.n_post_instruction, b.metadata)
            and all(_same(a[name], b[name]) for name in a)
        )
    if type(a) is not type(b):
        return False
    tensors_a, fields_a = serialize._flatten(a)
    tensors_b, fields_b = serialize._flatten(b)
    return (
        fields_a == fields_b
        and tensors_a.keys() == tensors_b.keys()
        and all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)
    )


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


# --- (a) an interrupted save leaves the old folder as it was ------------------------------------


class Interrupted(BaseException):
    """Stands in for Ctrl-C or a killed job: not an ``Exception``, so nothing swallows it."""


@pytest.mark.parametrize("error", [OSError("disk full"), Interrupted()])
def test_interrupted_save_keeps_the_old_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    folder = tlo.save(_ot_map(0), tmp_path / "map")

    def fail(*args: Any, **kwargs: Any) -> bytes:
        raise error

    monkeypatch.setattr(serialize, "safetensors_bytes", fail)
    with pytest.raises(type(error)):
        tlo.save(_ot_map(1), folder)
    assert _same(tlo.load(folder), _ot_map(0))
    assert _siblings(folder) == ["map"]  # no temporary or set-aside folder left


@pytest.mark.parametrize("error", [OSError("disk full"), Interrupted()])
def test_interrupted_set_save_keeps_the_old_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    folder = tlo.save(_set(3, seed=0), tmp_path / "set")
    real_write = serialize.write_object
    calls = []

    def fail_after_the_first(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise error
        real_write(*args, **kwargs)

    monkeypatch.setattr(serialize, "write_object", fail_after_the_first)
    with pytest.raises(type(error)):
        _set(3, seed=1).save(folder)
    assert len(calls) == 2
    assert _same(tlo.load(folder), _set(3, seed=0))
    assert _siblings(folder) == ["set"]


def test_failed_swap_restores_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rename of the new folder into place fails (after the old one was set aside), the
    old folder must come back under its name: nothing may be lost."""
    folder = tlo.save(_ot_map(0), tmp_path / "map")
    real_replace = atomic.os.replace
    calls = []

    def second_rename_fails(src: Any, dst: Any) -> None:
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="rename failed"):
        tlo.save(_ot_map(1), folder)
    monkeypatch.undo()
    assert _same(tlo.load(folder), _ot_map(0))
    assert _siblings(folder) == ["map"]


# --- (b) a re-save leaves nothing stale ---------------------------------------------------------


def test_resaving_a_smaller_set_leaves_no_stale_interventions(tmp_path: Path) -> None:
    folder = tlo.save(_set(4), tmp_path / "set")
    assert sorted(p.name for p in folder.glob("intervention_*")) == [
        f"intervention_{i}" for i in range(4)
    ]
    tlo.save(_set(1, seed=5), folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "intervention_0",
        "manifest.json",
    ]
    assert _same(tlo.load(folder), _set(1, seed=5))
    assert _siblings(folder) == ["set"]


def test_resaving_an_object_over_a_set_replaces_it_whole(tmp_path: Path) -> None:
    folder = tlo.save(_set(2), tmp_path / "obj")
    tlo.save(_ot_map(3), folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "manifest.json",
        "tensors.safetensors",
    ]
    assert _same(tlo.load(folder), _ot_map(3))


# --- (c) a folder that is not ours is never replaced by accident --------------------------------


@pytest.mark.parametrize("obj", [_ot_map, lambda: _set(2)], ids=["map", "set"])
def test_foreign_folder_needs_overwrite(tmp_path: Path, obj: Any) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tlo.save(obj(), folder)
    assert (folder / "notes.txt").read_text() == "mine"
    assert _siblings(folder) == ["results"]
    tlo.save(obj(), folder, overwrite=True)
    assert not (folder / "notes.txt").exists()
    assert _same(tlo.load(folder), obj())


def test_empty_folder_and_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    tlo.save(_ot_map(), tmp_path / "empty")  # an empty folder is free to use
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        tlo.save(_ot_map(), tmp_path / "file", overwrite=True)


# --- (d) each kind of corruption is named -------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return tlo.save(_ot_map(), tmp_path / "map")


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
    folder = tlo.save(_set(2), tmp_path / "set")
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
    assert _same(tlo.load(saved), _ot_map())


# --- (e) fuzzing: a corrupted folder loads exactly, or raises ValueError ------------------------

X = torch.randn(7, D)


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
    return tlo.save(_ot_map(), tmp_path_factory.mktemp("pristine") / "map")


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
    assert loaded is None or _same(loaded, _ot_map())


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
    assert loaded is None or _same(loaded, _ot_map())


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_saved_set_loads_exactly_or_raises_value_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    folder = tlo.save(_set(2), tmp_path_factory.mktemp("fuzzset") / "set")
    path = (
        folder
        / data.draw(st.sampled_from(["intervention_0", "intervention_1"]))
        / ("tensors.safetensors")
    )
    _corrupt(path, data.draw(corruptions(path.stat().st_size)))
    loaded = _load_or_value_error(folder)
    assert loaded is None or _same(loaded, _set(2))


def test_a_set_is_checked_against_the_model_by_its_maps_width(tmp_path: Path, tiny_bridge) -> None:
    """Loading with ``model=`` reads the width from the maps themselves, not the metadata."""
    lying = _set(2)
    lying.metadata["d_model"] = tiny_bridge.cfg.d_model  # says it fits; its maps are D wide
    folder = tlo.save(lying, tmp_path / "set")
    with pytest.raises(ValueError, match=rf"takes d_model={D}; this model has d_model=32"):
        tlo.InterventionSet.load(folder, model=tiny_bridge)


# --- (f) a user's file is never deleted; an unwritable place fails before any work -------------


@pytest.mark.parametrize("obj", [_ot_map, lambda: _set(2)], ids=["map", "set"])
def test_a_users_file_beside_our_files_blocks_the_replacement(tmp_path: Path, obj: Any) -> None:
    """One file of ours used to make the whole folder ours: ``NOTES.md`` was deleted."""
    folder = tlo.save(obj(), tmp_path / "out")
    (folder / "NOTES.md").write_text("my notes")
    with pytest.raises(atomic.OutputInUse, match=r"NOTES\.md.*would be deleted"):
        tlo.save(obj(), folder)
    assert (folder / "NOTES.md").read_text() == "my notes"
    assert _same(tlo.load(folder), obj())  # a user's file at the top does not stop loading


def test_a_file_of_ours_edited_by_the_user_is_theirs(tmp_path: Path) -> None:
    folder = tlo.save(_ot_map(), tmp_path / "out")
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    with pytest.raises(atomic.OutputInUse, match=r"config\.json"):
        tlo.save(_ot_map(), folder)


def test_a_folder_without_a_manifest_needs_overwrite(tmp_path: Path) -> None:
    """A folder of ours from before manifests cannot prove it holds nothing else."""
    folder = tlo.save(_ot_map(), tmp_path / "out")
    (folder / "manifest.json").unlink()
    with pytest.raises(atomic.OutputInUse, match="without a tl_ot_ablation manifest"):
        tlo.save(_ot_map(), folder)
    tlo.save(_ot_map(1), folder, overwrite=True)
    assert _same(tlo.load(folder), _ot_map(1))


def test_files_added_during_the_build_send_the_result_aside(tmp_path: Path) -> None:
    """A file that appears while a folder is built is not deleted, and the built folder is not
    lost either: it goes to a free sibling, and the error says where."""
    target = tmp_path / "report"
    with atomic.folder(target) as temp:
        (temp / "results.json").write_text("{}")
    with pytest.raises(atomic.OutputInUse, match=r"saved to .*report-1 instead"):
        with atomic.folder(target) as temp:
            (temp / "results.json").write_text('{"new": 1}')
            (target / "analysis.ipynb").write_text("{}")
    assert (target / "analysis.ipynb").exists()
    assert (tmp_path / "report-1" / "results.json").read_text() == '{"new": 1}'


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("under_a_file/out", "which is a file"),
        ("dangling", "link to nothing"),
        ("/proc/tl_ot_ablation/out", "cannot write under /proc"),
    ],
)
def test_an_unwritable_place_is_refused_before_any_work(
    tmp_path: Path, where: str, message: str
) -> None:
    (tmp_path / "under_a_file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(atomic.OutputError, match=message):
        atomic.check_target(tmp_path / where, overwrite=True)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        folder = tlo.save(_set(2), tmp_path / "set")
        single = atomic.write_text(tmp_path / "file.txt", "x")
    finally:
        os.umask(previous)
    for path in [folder, *folder.rglob("*"), single]:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# --- (g) one run at a time per output folder -------------------------------------------------


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    """Two ``fit --out X`` both said "Saved to X"; the first map was silently replaced."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".out.lock").write_text(f"{other.pid}\n")  # the other run's claim
        with pytest.raises(atomic.OutputInUse, match=rf"another run \(pid {other.pid}\)"):
            tlo.save(_ot_map(), tmp_path / "out")
    finally:
        other.kill()
        other.wait()
    tlo.save(_ot_map(), tmp_path / "out")  # its process is gone: the stale lock is taken over
    assert _siblings(tmp_path / "out") == ["out"]


def test_claims_nest_within_one_run(tmp_path: Path) -> None:
    with atomic.claim(tmp_path / "out"):
        tlo.save(_ot_map(), tmp_path / "out")
        assert (tmp_path / ".out.lock").exists()
    assert _siblings(tmp_path / "out") == ["out"]


# --- (h) everything in a saved set is verified ---------------------------------------------


def test_a_swapped_part_of_a_set_is_refused(tmp_path: Path) -> None:
    """Each part checked itself only: another valid map in ``intervention_0`` loaded."""
    folder = tlo.save(_set(2), tmp_path / "set")
    donor = tlo.save(_set(2, seed=3), tmp_path / "donor")
    shutil.rmtree(folder / "intervention_0")
    shutil.copytree(donor / "intervention_0", folder / "intervention_0")
    with pytest.raises(ValueError, match=r"intervention_0.*differs from what .*manifest"):
        tlo.load(folder)


@pytest.mark.parametrize("make", [_ot_map, lambda: _set(2)], ids=["map", "set"])
def test_a_deleted_checksum_is_an_error_unless_asked_for(tmp_path: Path, make: Any) -> None:
    folder = tlo.save(make(), tmp_path / "out")
    _edit_config(folder, lambda c: c.pop(serialize.CHECKSUM_KEY))
    write_manifest(folder)  # even a consistent manifest does not stand in for the checksum
    with pytest.raises(ValueError, match=r"cannot be verified.*verify=False"):
        tlo.load(folder)
    assert _same(tlo.load(folder, verify=False), make())
    unlisted = tlo.save(make(), tmp_path / "unlisted")
    (unlisted / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"no valid manifest\.json.*verify=False"):
        tlo.load(unlisted)
    assert _same(tlo.load(unlisted, verify=False), make())


def test_an_absurd_post_instruction_length_is_refused(tmp_path: Path) -> None:
    folder = tlo.save(_set(2), tmp_path / "set")
    config = json.loads((folder / "config.json").read_text())
    config.pop(serialize.CHECKSUM_KEY)
    config["n_post_instruction"] = 10**6
    serialize.write_config(folder, config, SET_KEYS)
    write_manifest(folder)
    with pytest.raises(ValueError, match=r"n_post_instruction must be an integer in 1\.\.1024"):
        tlo.load(folder)


def test_an_old_format_version_is_not_blamed_on_an_old_package(tmp_path: Path) -> None:
    folder = tlo.save(_ot_map(), tmp_path / "map")
    _edit_config(folder, lambda c: c.update(format_version=0))
    with pytest.raises(ValueError, match="no longer reads it; fit and save it again"):
        tlo.load(folder)
    _edit_config(folder, lambda c: c.update(format_version=2))
    with pytest.raises(ValueError, match="upgrade tl_ot_ablation"):
        tlo.load(folder)


def test_an_unavailable_device_is_blamed_not_the_file(tmp_path: Path) -> None:
    folder = tlo.save(_ot_map(), tmp_path / "map")
    device = "nonsense" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ValueError, match=rf"cannot load onto device '{device}'") as caught:
        tlo.load(folder, device=device)
    assert "safetensors" not in str(caught.value)


# --- (i) a set is applied only where it fits ------------------------------------------------


@pytest.fixture(scope="module")
def qwen_fitted() -> tuple[Any, InterventionSet]:
    """A map fitted on a tiny Qwen2 chat model (13 post-instruction tokens)."""
    from conftest import HARMFUL, HARMLESS

    from tl_ot_ablation.lens.testing import tiny_model

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
    from tl_ot_ablation.lens.testing import tiny_model

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
    from tl_ot_ablation.lens.testing import tiny_model

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


def test_cli_refuses_an_out_folder_with_a_users_file_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tl_ot_ablation import cli
    from tl_ot_ablation.cli import entry

    def refuse(args: Any) -> None:
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(entry, "load_model_for", refuse)
    out = tlo.save(_set(2), tmp_path / "maps")
    (out / "analysis.ipynb").write_text("{}")
    assert cli.main(["fit", "--model", "tiny", "--out", str(out)]) == cli.BAD_INPUT
    assert "analysis.ipynb" in capsys.readouterr().err
    assert (out / "analysis.ipynb").read_text() == "{}"
    for unwritable in ("/proc/tl_ot_ablation/report", str(out / "analysis.ipynb" / "x")):
        assert cli.main(["compare", "--model", "tiny", "--out", unwritable]) == cli.BAD_INPUT


def test_a_lock_still_being_written_is_not_taken_over(tmp_path: Path) -> None:
    """Between creating its lock and writing its pid, a run's lock is empty: not stale."""
    (tmp_path / ".out.lock").write_text("")
    with pytest.raises(atomic.OutputInUse, match="another run is writing"):
        tlo.save(_ot_map(), tmp_path / "out")
    old = time.time() - 2 * atomic.LOCK_GRACE_SECONDS
    os.utime(tmp_path / ".out.lock", (old, old))  # an empty lock left long ago: stale
    tlo.save(_ot_map(), tmp_path / "out")
