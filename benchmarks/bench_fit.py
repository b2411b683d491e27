"""Fit time of L per-layer OT maps: batched routes vs a Python loop vs a per-layer POT pipeline.

Run:  .venv/bin/python benchmarks/bench_fit.py                       (L=24, d=1024, k=256, n=2000)
      .venv/bin/python benchmarks/bench_fit.py --preset few-prompts  (L=4, d=4096, k=256, n=256)
      .venv/bin/python benchmarks/bench_fit.py --preset quick        (a smoke configuration)

Every contender runs in this one process, one after another, with the same thread count for
torch and numpy/BLAS (``--threads``, default 1), on the same synthetic activations (a decaying
spectrum, like residual streams). Times are the best of ``--repeats``; ratios are against the
floor (the O(n·d²) covariance products that any covariance route must pay) and against POT.
Peak memory: see ``_bench.py``. With ``--device cuda`` the torch contenders run on the GPU
(statistics, fits and floors), POT stays on the CPU: the GPU-vs-POT ratio of issue 5.
"""

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ot
import torch
from _bench import machine, measure, write_report
from threadpoolctl import threadpool_limits

from tl_ot_ablation import GaussianOTMap, GaussianStats


def make_activations(layers: int, n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic activations of both classes, ``[layers, n, d]`` float32 on the CPU."""
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.arange(1, d + 1, dtype=torch.float32).rsqrt()
    rotation = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    source = (torch.randn(layers, n, d, generator=g) * spectrum) @ rotation + 0.05
    target = (torch.randn(layers, n, d, generator=g) * spectrum * 1.3) @ rotation
    return source, target


def floor(source: torch.Tensor, target: torch.Tensor, dtype: torch.dtype) -> None:
    """The covariance products alone: Xᵀ X for each side and layer."""
    for rows in (source, target):
        x = rows.to(dtype)
        torch.bmm(x.mT, x)


def pot_pipeline(
    source: np.ndarray, target: np.ndarray, k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer: numpy PCA by a full eigh of the pooled covariance, then POT's Bures map."""
    maps = []
    for src, tgt in zip(source, target, strict=True):
        pooled = np.concatenate([src, tgt])
        centred = pooled - pooled.mean(0)
        cov = centred.T @ centred / (len(pooled) - 1)
        _, vectors = np.linalg.eigh(cov)
        basis = vectors[:, ::-1][:, :k]
        maps.append(
            ot.gaussian.empirical_bures_wasserstein_mapping(src @ basis, tgt @ basis, reg=1e-6)
        )
    return maps


PRESETS = {
    # name: (layers, d, k, n per side)
    "main": (24, 1024, 256, 2000),  # the configuration: n > d
    "few-prompts": (4, 4096, 256, 256),  # a few hundred prompts at d = 4096: n < d
    "quick": (4, 256, 64, 500),  # smoke test
}


def ratio(results: dict[str, dict[str, float]], a: str, b: str) -> float:
    return results[a]["seconds"] / results[b]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="main")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the torch contenders run")
    parser.add_argument("--out", type=Path, help="JSON report (default: results/fit-PRESET.json)")
    args = parser.parse_args()
    layers, d, k, n = PRESETS[args.preset]
    suffix = "" if args.device == "cpu" else f"-{torch.device(args.device).type}"
    out_path = args.out or Path(__file__).parent / "results" / f"fit-{args.preset}{suffix}.json"

    torch.set_num_threads(args.threads)
    source_cpu, target_cpu = make_activations(layers, n, d, seed=0)
    source_np, target_np = source_cpu.numpy(), target_cpu.numpy()
    source, target = source_cpu.to(args.device), target_cpu.to(args.device)

    def fit(route: str, method: str = "auto") -> GaussianOTMap:
        return GaussianOTMap.fit(source, target, n_components=k, route=route, eigen_method=method)

    def loop_over_layers() -> list[GaussianOTMap]:
        return [
            GaussianOTMap.fit(source[i], target[i], n_components=k, route="rows")
            for i in range(layers)
        ]

    contenders: dict[str, tuple[str, Callable[[], object]]] = {
        "floor64": ("floor: covariance products Xᵀ X, float64", lambda: floor(source, target, torch.float64)),
        "floor32": ("floor: covariance products Xᵀ X, float32", lambda: floor(source, target, torch.float32)),
        "stats": ("streaming statistics alone (GaussianStats, both sides)", lambda: (
            GaussianStats.from_rows(source), GaussianStats.from_rows(target))),
        "covariance": ("batched fit, covariance (streaming) route", lambda: fit("covariance")),
        "covariance_full_eigh": ("batched fit, covariance route, full eigh", lambda: fit("covariance", "exact")),
        "rows": ("batched fit, rows route", lambda: fit("rows")),
        "loop": ("python loop over layers, rows route", loop_over_layers),
        "pot": ("per-layer POT pipeline (numpy eigh + POT)", lambda: pot_pipeline(source_np, target_np, k)),
    }  # fmt: skip
    print(f"preset {args.preset}: L={layers} d={d} k={k} n={n} per side, {args.threads} thread(s)")
    results: dict[str, dict[str, float]] = {}
    outputs: dict[str, object] = {}
    with threadpool_limits(limits=args.threads):
        for key, (label, fn) in contenders.items():
            seconds, peak_mib, out = measure(fn, args.repeats, args.device)
            results[key] = {"seconds": seconds, "peak_extra_mib": peak_mib}
            outputs[key] = out
            print(f"{seconds:8.2f} s  {peak_mib:8.0f} MiB  {key:21s} {label}", flush=True)

    exact = outputs["covariance_full_eigh"]
    assert isinstance(exact, GaussianOTMap)
    exact_kept = exact.basis.explained_variance.sum(-1)

    def kept(key: str) -> float:
        fitted = outputs[key]
        assert isinstance(fitted, GaussianOTMap)
        return float((fitted.basis.explained_variance.sum(-1) / exact_kept).min())

    summary = {
        "covariance route / float32 floor": ratio(results, "covariance", "floor32"),
        "covariance route / float64 floor": ratio(results, "covariance", "floor64"),
        "streaming stats / float32 floor": ratio(results, "stats", "floor32"),
        "POT / rows route (speed-up)": ratio(results, "pot", "rows"),
        "POT / covariance route (speed-up)": ratio(results, "pot", "covariance"),
        "loop / batched rows route": ratio(results, "loop", "rows"),
        "full eigh / randomized (covariance route)": ratio(results, "covariance_full_eigh", "covariance"),
        "rows route: variance kept / exact top-k (worst layer)": kept("rows"),
        "covariance route: variance kept / exact top-k (worst layer)": kept("covariance"),
    }  # fmt: skip
    print()
    for key, value in summary.items():
        print(f"{value:8.3f}  {key}")
    report = {
        "preset": args.preset,
        "config": {"layers": layers, "d": d, "k": k, "n_per_side": n, "threads": args.threads},
        "machine": machine(args.device, numpy=np.__version__, pot=ot.__version__),
        "results": results,
        "summary": summary,
    }
    write_report(out_path, report)


if __name__ == "__main__":
    main()
