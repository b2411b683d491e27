"""Merge ``GaussianStats`` across processes with ``torch.distributed`` (data-parallel collection).

Each process collects statistics on its own shard of the prompts; ``all_reduce_stats`` turns
them, on every process, into the statistics of all rows, exactly as ``GaussianStats.merge``
would (Chan et al.'s pairwise rule, not uncentred sums, which cancel catastrophically for
residual streams whose mean is large next to their spread). Two collectives per call:

1. all-reduce ``(count, count · mean)`` → the global count and mean ``m``;
2. each process re-centres its scatter on ``m``, ``S_i + n_i (m_i − m)(m_i − m)ᵀ``, and the sum
   of those is all-reduced: the scatter of the union about its own mean.

Memory: one extra ``[*batch, d, d]`` float64 buffer per process (the re-centred scatter), and
nothing gathered. Works with any backend that can reduce float64 tensors on the statistics'
device (gloo on CPU, NCCL on CUDA).
"""

from collections.abc import Mapping

import torch
import torch.distributed as dist

from .errors import UserInputError
from .stats import GaussianStats


def _require_initialised() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "torch.distributed is not initialised; call "
            "torch.distributed.init_process_group(backend='gloo' or 'nccl', ...) in every "
            "process first (or use GaussianStats.merge within one process)"
        )


def _check_same_everywhere(
    values: list[float], device: torch.device, group: dist.ProcessGroup | None, message: str
) -> None:
    """Raise ``ValueError(message)`` on every process unless all hold the same ``values``."""
    high = torch.tensor(values, dtype=torch.float64, device=device)
    low = high.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    if not torch.equal(high, low):
        raise UserInputError(message)


_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _layout(stats: GaussianStats) -> list[float]:
    """``[ndim, dtype code, *batch_shape, d]`` of the statistics, as floats for a collective."""
    dtype = stats.running_mean.dtype
    code = _DTYPES.index(dtype) if dtype in _DTYPES else len(_DTYPES)
    shape = (*stats.batch_shape, stats.d)
    return [float(len(shape)), float(code), *map(float, shape)]


def _describe(layout: list[float]) -> str:
    ndim, code = int(layout[0]), int(layout[1])
    dtype = str(_DTYPES[code]) if code < len(_DTYPES) else "another dtype"
    return f"shape {tuple(int(v) for v in layout[2 : 2 + ndim])} ({dtype})"


def _check_same_layout(stats: GaussianStats, group: dist.ProcessGroup | None) -> None:
    """Raise ``ValueError`` on every process unless all hold statistics of one full shape
    (``[*batch_shape, d]``, not just as many elements) and dtype; the message names each
    process's. Two collectives: the longest layout, then an all-gather of the padded layouts."""
    mine = _layout(stats)
    length = torch.tensor([float(len(mine))], dtype=torch.float64, device=stats.device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX, group=group)
    padded = torch.full((int(length.item()),), -1.0, dtype=torch.float64, device=stats.device)
    padded[: len(mine)] = torch.tensor(mine, dtype=torch.float64)
    gathered = [torch.empty_like(padded) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, padded, group=group)
    layouts = [t.tolist() for t in gathered]
    if any(layout != layouts[0] for layout in layouts):
        described = "; ".join(f"rank {i}: {_describe(lay)}" for i, lay in enumerate(layouts))
        raise UserInputError(
            f"processes hold statistics of different shapes or dtypes ({described}), shown as "
            "[*batch_shape, d]; every process must collect at the same hook points of the same "
            "model, with its layers stacked in the same order"
        )


def all_reduce_stats(stats: GaussianStats, group: dist.ProcessGroup | None = None) -> GaussianStats:
    """Statistics of every process's rows, returned on every process (inputs are unchanged).

    Every process in ``group`` must call this with statistics of the same shape, in the same
    order as its other collectives. A process whose shard was empty passes empty statistics.
    """
    _require_initialised()
    _check_same_layout(stats, group)
    running_mean = stats.running_mean
    head = torch.tensor([float(stats.count)], dtype=torch.float64, device=stats.device)
    weighted = torch.cat([head[:1], (running_mean * stats.count).reshape(-1)])
    dist.all_reduce(weighted, group=group)
    total = round(float(weighted[0]))
    if total == 0:
        return GaussianStats(stats.d, batch_shape=stats.batch_shape, device=stats.device)
    mean = (weighted[1:] / total).reshape(running_mean.shape)
    shift = running_mean - mean
    scatter = stats.scatter
    if stats.count:
        scatter += stats.count * shift.unsqueeze(-1) * shift.unsqueeze(-2)
    dist.all_reduce(scatter, group=group)
    return GaussianStats.from_moments(total, mean, (scatter + scatter.mT) / 2)


def all_reduce_stats_dict(
    stats: Mapping[str, GaussianStats], group: dist.ProcessGroup | None = None
) -> dict[str, GaussianStats]:
    """``all_reduce_stats`` for each hook point of a ``collect_stats`` result (same keys, in
    sorted order, on every process)."""
    _require_initialised()
    device = next(iter(stats.values())).device if stats else torch.device("cpu")
    _check_same_everywhere(
        [float(len(stats))],
        device,
        group,
        "processes hold statistics at different numbers of hook points",
    )
    return {name: all_reduce_stats(stats[name], group) for name in sorted(stats)}
