"""What every benchmark script shares: timing with peak memory, machine facts, JSON reports.

Peak memory is the growth of the process's resident-set high-water mark during a contender
(Linux ``/proc/self/status`` VmHWM, reset before each contender through ``clear_refs``); on a
CUDA device it is ``torch.cuda.max_memory_allocated`` growth instead.
"""

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tl_ot_ablation.io import atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


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


def repo_path(path: Path) -> str:
    """``path`` as a report records it: relative to the repository (``benchmarks/results/x.json``)
    when inside it, else its name alone, so no report holds a machine's absolute path."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(ROOT).as_posix()
    except ValueError:
        return resolved.name


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON atomically: an interrupted benchmark leaves the old file."""
    atomic.write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


def model_arguments(
    description: str | None, *, batch: int, rounds: int, quick: str, out: str
) -> argparse.ArgumentParser:
    """The options every real-model benchmark takes (model, batch, tokens, rounds, threads,
    ``--quick``, ``--out``); a script adds its own before parsing."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", type=Path, default=RESULTS / out)
    return parser


def generation_arguments(description: str | None, out: str) -> argparse.Namespace:
    """Parsed options of a generation benchmark (batch 8, 2 rounds; ``--quick``: 8 new tokens,
    1 round), with torch's thread count set from them."""
    args = model_arguments(
        description, batch=8, rounds=2, quick="8 new tokens, 1 round", out=out
    ).parse_args()
    if args.quick:
        args.new_tokens, args.rounds = 8, 1
    torch.set_num_threads(args.threads)
    return args


def best_of_rounds(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best seconds of each contender over interleaved rounds; the order rotates each round,
    so no contender always runs first (the first call of a round ran slower here)."""
    best = dict.fromkeys(contenders, float("inf"))
    keys = list(contenders)
    for round_index in range(rounds):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            fn = contenders[key]
            start = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - start)
    return best


def greedy_generation(
    model: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    new_tokens: int,
    hooks: Sequence[tuple[str, Any]] = (),
) -> Callable[[], torch.Tensor]:
    """A contender: greedy Hugging Face generation (KV cache) of exactly ``new_tokens`` per
    prompt on the model a bridge wraps, with ``hooks`` on the bridge."""

    def run() -> torch.Tensor:
        with model.hooks(fwd_hooks=list(hooks)):
            return hf_greedy(model.original_model, ids, mask, new_tokens, model.tokenizer)

    return run


def hf_greedy(
    hf_model: Any, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, tokenizer: Any
) -> torch.Tensor:
    """Greedy Hugging Face ``generate`` (KV cache, inference mode) of exactly ``new_tokens`` per
    prompt: the one call every generation contender makes, so they differ only in the model."""
    with torch.inference_mode():
        return hf_model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )
