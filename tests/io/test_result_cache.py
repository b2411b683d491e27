"""The on-disk result cache: exact round trips, keys that see every input, verified reads,
a size bound, and failures that never break the job."""

import os
import time
from pathlib import Path

import pytest
import torch

from tl_ot_ablation.io.result_cache import ResultCache, cache_key

INPUTS = {"model": "abc", "prompts": ["a", "b"], "max_new_tokens": 8, "version": "1"}


def test_round_trip_is_exact_and_computed_once(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    logprobs = torch.randn(2, 11).log_softmax(-1)
    calls = []

    def compute() -> tuple[dict, dict]:
        calls.append(1)
        return {"completions": ["x", "y"]}, {"logprobs": logprobs}

    first = cache.get_or_compute(INPUTS, compute)
    second = cache.get_or_compute(dict(INPUTS), compute)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert second.meta == first.meta == {"completions": ["x", "y"]}
    assert torch.equal(second.tensors["logprobs"], logprobs)


@pytest.mark.parametrize(
    "change", [{"model": "abd"}, {"prompts": ["a", "c"]}, {"max_new_tokens": 9}, {"extra": 0}]
)
def test_any_changed_input_is_another_entry(tmp_path: Path, change: dict) -> None:
    cache = ResultCache(tmp_path)
    cache.put(INPUTS, {"v": 1}, {})
    assert cache.get({**INPUTS, **change}) is None
    assert cache_key(INPUTS) == cache_key(dict(reversed(list(INPUTS.items()))))


def test_an_entry_is_kept_unless_replaced(tmp_path: Path) -> None:
    """A second write of equal inputs keeps the first entry; ``replace`` swaps it (a result that
    grew, e.g. labels judged past an early stop)."""
    cache = ResultCache(tmp_path)
    cache.put(INPUTS, {"labels": ["a", None]}, {})
    cache.put(INPUTS, {"labels": ["a", "b"]}, {})
    assert cache.get(INPUTS).meta == {"labels": ["a", None]}
    cache.put(INPUTS, {"labels": ["a", "b"]}, {}, replace=True)
    assert cache.get(INPUTS).meta == {"labels": ["a", "b"]} and len(cache.entries()) == 1


def test_a_key_must_be_plain_json() -> None:
    with pytest.raises(ValueError, match="plain JSON"):
        cache_key({"x": float("nan")})
    with pytest.raises(ValueError, match="plain JSON"):
        cache_key({"x": object()})


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_a_corrupted_entry_is_discarded_and_recomputed(tmp_path: Path, damage: str) -> None:
    cache = ResultCache(tmp_path)
    cache.put(INPUTS, {"v": 1}, {"t": torch.arange(100.0)})
    (entry,) = cache.entries()
    if damage == "flip a byte":
        data = bytearray((entry / "tensors.safetensors").read_bytes())
        data[-5] ^= 0xFF
        (entry / "tensors.safetensors").write_bytes(bytes(data))
    else:
        (entry / "tensors.safetensors").write_bytes(b"")
    with pytest.warns(UserWarning, match="corrupted entry"):
        assert cache.get(INPUTS) is None
    assert not entry.exists()
    result = cache.get_or_compute(INPUTS, lambda: ({"v": 2}, {}))
    assert result.meta == {"v": 2}


def test_foreign_entry_under_a_key_is_refused(tmp_path: Path) -> None:
    """An entry whose recorded key is not its name (copied or renamed) is never served."""
    cache = ResultCache(tmp_path)
    cache.put(INPUTS, {"v": 1}, {})
    (entry,) = cache.entries()
    target = cache._path(cache_key({"model": "other"}))
    target.parent.mkdir(parents=True, exist_ok=True)
    entry.rename(target)
    with pytest.warns(UserWarning, match="another key"):
        assert cache.get({"model": "other"}) is None
    assert not target.exists()


def test_disabled_cache_neither_reads_nor_writes(tmp_path: Path) -> None:
    ResultCache(tmp_path).put(INPUTS, {"v": 1}, {})
    off = ResultCache(tmp_path, enabled=False)
    assert off.get(INPUTS) is None
    off.put({"other": 1}, {"v": 2}, {})
    assert len(ResultCache(tmp_path).entries()) == 1


def test_least_recently_used_entries_go_first(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path, max_bytes=10**9)
    payload = {"t": torch.zeros(1000)}  # 4 kB each
    for index in range(3):
        cache.put({"i": index}, {}, payload)
        old = time.time() - 100 + index
        os.utime(cache._path(cache_key({"i": index})), (old, old))
    assert cache.get({"i": 0}) is not None  # a read makes entry 0 the most recent
    one_entry = cache.size_bytes() // 3
    cache.max_bytes = 2 * one_entry + one_entry // 2
    removed = cache.evict()
    assert [p.name for p in removed] == [cache_key({"i": 1})]
    assert cache.get({"i": 0}) is not None and cache.get({"i": 2}) is not None
    assert cache.size_bytes() <= cache.max_bytes


def test_clear_removes_every_entry(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    for index in range(3):
        cache.put({"i": index}, {}, {})
    assert cache.clear() == 3 and cache.entries() == [] and cache.size_bytes() == 0


def test_an_unwritable_cache_warns_and_the_job_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache = ResultCache(blocker / "results")  # cannot be created, even by root
    with pytest.warns(UserWarning, match="could not store"):
        result = cache.get_or_compute(INPUTS, lambda: ({"v": 1}, {}))
    assert result.meta == {"v": 1} and cache.entries() == []


def test_bad_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ResultCache(max_bytes=0)
