"""What every benchmark script shares: timing with peak memory, machine facts, JSON reports.

Peak memory is the growth of the process's resident-set high-water mark during a contender
(Linux ``/proc/self/status`` VmHWM, reset before each contender through ``clear_refs``); on a
CUDA device it is ``torch.cuda.max_memory_allocated`` growth instead.
"""

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], object], repeats: int = 1, device: torch.device | str | None = None
) -> tuple[float, float, object]:
    """(best seconds, peak extra MiB, last result) of ``repeats`` calls of ``fn``."""
    on_cuda = device is not None and torch.device(device).type == "cuda"
    best = float("inf")
    result: object = None
    peak = 0.0
    for _ in range(repeats):
        result = None
        _sync(device)
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            _reset_peak()
            before = _status_kib("VmRSS") * 1024
        start = time.perf_counter()
        result = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
        after = torch.cuda.max_memory_allocated(device) if on_cuda else _status_kib("VmHWM") * 1024
        peak = max(peak, (after - before) / 2**20)
    return best, peak, result


def machine(device: torch.device | str = "cpu", **versions: str) -> dict[str, Any]:
    """Where a benchmark ran (recorded with its figures)."""
    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        **versions,
    }
    if torch.device(device).type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
