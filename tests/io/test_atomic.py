"""Atomic writes (``io.atomic``): an interrupted save loses nothing, a re-save leaves nothing
stale, a user's file is never deleted, an unwritable place fails before any work, one run at a
time per output folder."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tl_ot_ablation as tlo
from tests.helpers import same_saved, small_map, small_set
from tl_ot_ablation.io import atomic, serialize


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


# --- an interrupted save leaves the old folder as it was ------------------------------------


class Interrupted(BaseException):
    """Stands in for Ctrl-C or a killed job: not an ``Exception``, so nothing swallows it."""


@pytest.mark.parametrize("error", [OSError("disk full"), Interrupted()])
def test_interrupted_save_keeps_the_old_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    folder = tlo.save(small_map(0), tmp_path / "map")

    def fail(*args: Any, **kwargs: Any) -> bytes:
        raise error

    monkeypatch.setattr(serialize, "safetensors_bytes", fail)
    with pytest.raises(type(error)):
        tlo.save(small_map(1), folder)
    assert same_saved(tlo.load(folder), small_map(0))
    assert _siblings(folder) == ["map"]  # no temporary or set-aside folder left


@pytest.mark.parametrize("error", [OSError("disk full"), Interrupted()])
def test_interrupted_set_save_keeps_the_old_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    folder = tlo.save(small_set(3, seed=0), tmp_path / "set")
    real_write = serialize.write_object
    calls = []

    def fail_after_the_first(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) > 1:
            raise error
        real_write(*args, **kwargs)

    monkeypatch.setattr(serialize, "write_object", fail_after_the_first)
    with pytest.raises(type(error)):
        small_set(3, seed=1).save(folder)
    assert len(calls) == 2
    assert same_saved(tlo.load(folder), small_set(3, seed=0))
    assert _siblings(folder) == ["set"]


def test_failed_swap_restores_the_old_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rename of the new folder into place fails (after the old one was set aside), the
    old folder must come back under its name: nothing may be lost."""
    folder = tlo.save(small_map(0), tmp_path / "map")
    real_replace = atomic.os.replace
    calls = []

    def second_rename_fails(src: Any, dst: Any) -> None:
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="rename failed"):
        tlo.save(small_map(1), folder)
    monkeypatch.undo()
    assert same_saved(tlo.load(folder), small_map(0))
    assert _siblings(folder) == ["map"]


# --- a re-save leaves nothing stale ---------------------------------------------------------


def test_resaving_a_smaller_set_leaves_no_stale_interventions(tmp_path: Path) -> None:
    folder = tlo.save(small_set(4), tmp_path / "set")
    assert sorted(p.name for p in folder.glob("intervention_*")) == [
        f"intervention_{i}" for i in range(4)
    ]
    tlo.save(small_set(1, seed=5), folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "intervention_0",
        "manifest.json",
    ]
    assert same_saved(tlo.load(folder), small_set(1, seed=5))
    assert _siblings(folder) == ["set"]


def test_resaving_an_object_over_a_set_replaces_it_whole(tmp_path: Path) -> None:
    folder = tlo.save(small_set(2), tmp_path / "obj")
    tlo.save(small_map(3), folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "manifest.json",
        "tensors.safetensors",
    ]
    assert same_saved(tlo.load(folder), small_map(3))


# --- a folder that is not ours is never replaced by accident --------------------------------


@pytest.mark.parametrize("obj", [small_map, lambda: small_set(2)], ids=["map", "set"])
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
    assert same_saved(tlo.load(folder), obj())


def test_empty_folder_and_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    tlo.save(small_map(), tmp_path / "empty")  # an empty folder is free to use
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        tlo.save(small_map(), tmp_path / "file", overwrite=True)


# --- a user's file is never deleted; an unwritable place fails before any work -------------


@pytest.mark.parametrize("obj", [small_map, lambda: small_set(2)], ids=["map", "set"])
def test_a_users_file_beside_our_files_blocks_the_replacement(tmp_path: Path, obj: Any) -> None:
    """One file of ours used to make the whole folder ours: ``NOTES.md`` was deleted."""
    folder = tlo.save(obj(), tmp_path / "out")
    (folder / "NOTES.md").write_text("my notes")
    with pytest.raises(atomic.OutputInUse, match=r"NOTES\.md.*would be deleted"):
        tlo.save(obj(), folder)
    assert (folder / "NOTES.md").read_text() == "my notes"
    assert same_saved(tlo.load(folder), obj())  # a user's file at the top does not stop loading


def test_a_file_of_ours_edited_by_the_user_is_theirs(tmp_path: Path) -> None:
    folder = tlo.save(small_map(), tmp_path / "out")
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    with pytest.raises(atomic.OutputInUse, match=r"config\.json"):
        tlo.save(small_map(), folder)


def test_a_folder_without_a_manifest_needs_overwrite(tmp_path: Path) -> None:
    """A folder of ours from before manifests cannot prove it holds nothing else."""
    folder = tlo.save(small_map(), tmp_path / "out")
    (folder / "manifest.json").unlink()
    with pytest.raises(atomic.OutputInUse, match="without a tl_ot_ablation manifest"):
        tlo.save(small_map(), folder)
    tlo.save(small_map(1), folder, overwrite=True)
    assert same_saved(tlo.load(folder), small_map(1))


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
        folder = tlo.save(small_set(2), tmp_path / "set")
        single = atomic.write_text(tmp_path / "file.txt", "x")
    finally:
        os.umask(previous)
    for path in [folder, *folder.rglob("*"), single]:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


# --- one run at a time per output folder -------------------------------------------------


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    """Two ``fit --out X`` both said "Saved to X"; the first map was silently replaced."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".out.lock").write_text(f"{other.pid}\n")  # the other run's claim
        with pytest.raises(atomic.OutputInUse, match=rf"another run \(pid {other.pid}\)"):
            tlo.save(small_map(), tmp_path / "out")
    finally:
        other.kill()
        other.wait()
    tlo.save(small_map(), tmp_path / "out")  # its process is gone: the stale lock is taken over
    assert _siblings(tmp_path / "out") == ["out"]


def test_claims_nest_within_one_run(tmp_path: Path) -> None:
    with atomic.claim(tmp_path / "out"):
        tlo.save(small_map(), tmp_path / "out")
        assert (tmp_path / ".out.lock").exists()
    assert _siblings(tmp_path / "out") == ["out"]


def test_a_lock_still_being_written_is_not_taken_over(tmp_path: Path) -> None:
    """Between creating its lock and writing its pid, a run's lock is empty: not stale."""
    (tmp_path / ".out.lock").write_text("")
    with pytest.raises(atomic.OutputInUse, match="another run is writing"):
        tlo.save(small_map(), tmp_path / "out")
    old = time.time() - 2 * atomic.LOCK_GRACE_SECONDS
    os.utime(tmp_path / ".out.lock", (old, old))  # an empty lock left long ago: stale
    tlo.save(small_map(), tmp_path / "out")


def test_a_folder_entry_that_another_process_finished_is_kept(tmp_path: Path) -> None:
    entry = tmp_path / "converted"
    entry.mkdir()
    (entry / "config.json").write_text("theirs")
    with atomic.entry(entry) as partial:
        partial.mkdir()
        (partial / "config.json").write_text("ours")
    assert (entry / "config.json").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]
