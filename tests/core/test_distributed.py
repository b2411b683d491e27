"""Statistics merged across two CPU processes (gloo) equal those of one process over all rows
(``core.distributed``), and statistics of other shapes are refused on every process."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tl_ot_ablation import GaussianStats
from tl_ot_ablation.core.distributed import all_reduce_stats, all_reduce_stats_dict

WORLD = 2


def _rows() -> dict[str, torch.Tensor]:
    """Two hook points' rows with a large common offset (what cancels in uncentred sums), in
    float64 so that any chunking gives the same statistics to rounding."""
    generator = torch.Generator().manual_seed(0)
    shape = (4, 37, 6)
    return {
        "blocks.0.hook_resid_pre": 300.0 + torch.randn(shape, generator=generator).double(),
        "blocks.1.hook_resid_pre": torch.randn(shape, generator=generator).double() * 5,
    }


def _shard(rank: int) -> dict[str, GaussianStats]:
    # Uneven shards (rows 0..9 and 10..36), updated in two chunks to exercise the streaming.
    cut = 10
    stats = {}
    for name, rows in _rows().items():
        part = rows[:, :cut] if rank == 0 else rows[:, cut:]
        stats[name] = GaussianStats(6, batch_shape=(4,))
        half = part.shape[1] // 2
        stats[name].update(part[:, :half])
        stats[name].update(part[:, half:])
    return stats


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        merged = all_reduce_stats_dict(_shard(rank))
        empty = all_reduce_stats(
            GaussianStats(3) if rank else GaussianStats.from_rows(torch.ones(2, 3))
        )
        wrong = None
        try:
            all_reduce_stats(GaussianStats(3 + rank))
        except ValueError as error:
            wrong = str(error)
        torch.save(
            {
                "merged": {n: (s.count, s.mean, s.scatter) for n, s in merged.items()},
                "empty": (empty.count, empty.mean),
                "wrong": wrong,
            },
            Path(out) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> list[dict]:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.fail("torch.distributed with the gloo backend is needed for this test")
    out = tmp_path_factory.mktemp("dist")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_two_process_merge_equals_single_process_statistics(two_process_results) -> None:
    for name, rows in _rows().items():
        single = GaussianStats.from_rows(rows)
        local = _shard(0)[name].merge(_shard(1)[name])
        for result in two_process_results:
            count, mean, scatter = result["merged"][name]
            assert count == single.count == 37
            torch.testing.assert_close(mean, single.mean, rtol=1e-12, atol=1e-10)
            torch.testing.assert_close(scatter, single.scatter, rtol=1e-10, atol=1e-8)
            torch.testing.assert_close(scatter, local.scatter, rtol=1e-10, atol=1e-8)


def test_a_process_with_no_rows_contributes_nothing(two_process_results) -> None:
    for result in two_process_results:
        count, mean = result["empty"]
        assert count == 2
        torch.testing.assert_close(mean, torch.ones(3, dtype=torch.float64))


def test_mismatched_shapes_fail_on_every_process_with_a_clear_error(two_process_results) -> None:
    for result in two_process_results:
        assert result["wrong"] is not None and "different shapes" in result["wrong"]


def test_without_a_process_group_the_error_says_what_to_call() -> None:
    with pytest.raises(RuntimeError, match="init_process_group"):
        all_reduce_stats(GaussianStats(3))


# --- statistics merged across processes ---------------------------------------------------------


def _mismatch_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from tl_ot_ablation.core.distributed import all_reduce_stats

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    errors = []
    try:
        # Same number of elements, other shapes; then a different number of batch dimensions.
        for shape in ([(2, 3), (3, 2)][rank], [(6,), (2, 3)][rank]):
            stats = GaussianStats(4, batch_shape=shape)
            stats.update(torch.randn(*shape, 5, 4))
            try:
                all_reduce_stats(stats)
                errors.append(None)
            except ValueError as error:
                errors.append(str(error))
        torch.save(errors, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_refuses_statistics_of_other_shapes(tmp_path) -> None:
    import os
    import socket

    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.fail("torch.distributed with the gloo backend is needed for this test")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_mismatch_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        same_size, other_ndim = torch.load(tmp_path / f"rank{rank}.pt")
        assert same_size is not None and "different shapes" in same_size
        assert "rank 0: shape (2, 3, 4) (torch.float64)" in same_size
        assert "rank 1: shape (3, 2, 4) (torch.float64)" in same_size
        assert other_ndim is not None and "(6, 4)" in other_ndim and "(2, 3, 4)" in other_ndim
