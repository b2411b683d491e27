"""Fit time against d_model and against k, for the batched routes and the POT pipeline.

Run:  .venv/bin/python benchmarks/bench_scaling.py            (then plot_scaling.py for PNGs)
      .venv/bin/python benchmarks/bench_scaling.py --quick

Issue 5, target 4. Synthetic activations as in ``bench_fit.py`` (L layers, n rows per side),
one thread for every contender, each point the best of ``--repeats``:

- ``d`` sweep at fixed ``k``: the statistics alone, the covariance route (statistics + fit),
  the rows route, and the per-layer POT pipeline;
- ``k`` sweep at fixed ``d``: the fit from statistics (statistics excluded: the part that
  depends on ``k``) and the rows route.
"""

import argparse
from pathlib import Path

import numpy as np
import ot
import torch
from _bench import machine, measure, write_report
from bench_fit import make_activations, pot_pipeline
from threadpoolctl import threadpool_limits

from tl_ot_ablation import GaussianOTMap, GaussianStats

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--n", type=int, default=1000, help="rows per side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    d_grid, k_fixed = ([256, 512, 1024], 64) if args.quick else ([256, 512, 1024, 2048, 4096], 64)
    k_grid, d_fixed = ([16, 64], 512) if args.quick else ([16, 32, 64, 128, 256, 512], 2048)
    layers, n = args.layers, args.n
    print(f"L={layers} n={n} per side, {args.threads} thread(s)")
    by_d: list[dict[str, float]] = []
    by_k: list[dict[str, float]] = []
    with threadpool_limits(limits=args.threads):
        for d in d_grid:
            source, target = make_activations(layers, n, d, seed=0)
            stats = (GaussianStats.from_rows(source), GaussianStats.from_rows(target))
            row: dict[str, float] = {"d": d, "k": k_fixed}
            contenders = {
                "stats": lambda s=source, t=target: (
                    GaussianStats.from_rows(s),
                    GaussianStats.from_rows(t),
                ),
                "fit_from_stats": lambda st=stats: GaussianOTMap.from_stats(
                    *st, n_components=k_fixed
                ),
                "rows_route": lambda s=source, t=target: GaussianOTMap.fit(
                    s, t, n_components=k_fixed, route="rows"
                ),
                "pot": lambda s=source, t=target: pot_pipeline(s.numpy(), t.numpy(), k_fixed),
            }
            for key, fn in contenders.items():
                row[key] = measure(fn, args.repeats)[0]
            print("  ".join(f"{key}={value:.3g}" for key, value in row.items()), flush=True)
            by_d.append(row)
        source, target = make_activations(layers, n, d_fixed, seed=0)
        stats = (GaussianStats.from_rows(source), GaussianStats.from_rows(target))
        for k in k_grid:
            row = {"d": d_fixed, "k": k}
            row["fit_from_stats"] = measure(
                lambda k=k: GaussianOTMap.from_stats(*stats, n_components=k), args.repeats
            )[0]
            row["rows_route"] = measure(
                lambda k=k: GaussianOTMap.fit(source, target, n_components=k, route="rows"),
                args.repeats,
            )[0]
            print("  ".join(f"{key}={value:.3g}" for key, value in row.items()), flush=True)
            by_k.append(row)
    report = {
        "config": {"layers": layers, "n_per_side": n, "threads": args.threads},
        "machine": machine(numpy=np.__version__, pot=ot.__version__),
        "by_d": by_d,
        "by_k": by_k,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
