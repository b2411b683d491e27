"""Collection: memory of streaming statistics vs kept rows, and the fit's share of the work.

Run:  .venv/bin/python benchmarks/bench_collect.py                 (both parts)
      .venv/bin/python benchmarks/bench_collect.py --part memory   (synthetic rows, no model)
      .venv/bin/python benchmarks/bench_collect.py --part model    (the embedded model)

Part ``memory`` (issue 5, target 2): rows arrive in chunks, as from a model's forward passes,
and are folded into ``GaussianStats`` for ``L`` layers, or kept (what a rows route must hold),
for 1k, 10k and 100k rows, each point in a fresh process (peak resident memory over its
baseline, so no point reuses another's freed memory). Statistics cost O(L·d²) however many rows; kept rows grow with them.

Part ``model`` (target 1, last clause): on the embedded model, one pass of ``collect_stats`` at
every layer's ``resid_pre`` for the package's 64 + 64 training prompts, against the fit of all
layers' maps from those statistics (covariance route, the shrinkage default) and from kept rows
(Ledoit-Wolf); and ``stop_at_layer``: a pass that needs only layer 4 against one for the last.
Every contender runs in this process at one thread count; times are the best of ``--repeats``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from _bench import machine, measure, write_report

import tl_ot_ablation as tlo
from tl_ot_ablation.core.ot_map import GaussianOTMap
from tl_ot_ablation.lens.training import collect_training

RESULTS = Path(__file__).parent / "results"


def stream(n_rows: int, layers: int, d: int, chunk: int, keep: bool) -> object:
    """Fold ``n_rows`` rows per layer, generated ``chunk`` at a time, into statistics (or keep
    them all, ``keep=True``)."""
    generator = torch.Generator().manual_seed(0)
    stats = tlo.GaussianStats(d, batch_shape=(layers,))
    kept = []
    for start in range(0, n_rows, chunk):
        rows = torch.randn(layers, min(chunk, n_rows - start), d, generator=generator)
        if keep:
            kept.append(rows)
        else:
            stats.update(rows)
    return torch.cat(kept, dim=1) if keep else stats


def _one_point(n_rows: int, layers: int, d: int, chunk: int, keep: bool) -> dict[str, float]:
    """Run one memory point in a fresh Python process (so no earlier allocation is reused) and
    return its seconds and peak resident-memory growth over the process's baseline."""
    here, threads = str(Path(__file__).parent), torch.get_num_threads()
    code = "\n".join(
        [
            f"import json, sys, torch; sys.path.insert(0, {here!r}); torch.set_num_threads({threads})",
            "from bench_collect import stream; from _bench import measure",
            f"seconds, peak, _ = measure(lambda: stream({n_rows}, {layers}, {d}, {chunk}, {keep}))",
            "print(json.dumps({'seconds': seconds, 'peak_extra_mib': peak}))",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_part(args: argparse.Namespace) -> dict[str, Any]:
    layers, d, chunk = args.layers, args.d, 512
    print(f"memory: L={layers} d={d}, chunks of {chunk} rows, {torch.get_num_threads()} thread(s)")
    results = {}
    for n_rows in (1_000, 10_000, 100_000):
        for keep in (False, True):
            key = f"{'rows' if keep else 'stats'}_{n_rows}"
            results[key] = {"rows": n_rows, **_one_point(n_rows, layers, d, chunk, keep)}
            seconds, peak = results[key]["seconds"], results[key]["peak_extra_mib"]
            what = "rows kept" if keep else "GaussianStats"
            print(f"{n_rows:>8} rows  {what:14s} {seconds:7.2f} s  {peak:8.0f} MiB", flush=True)
    floor_mib = layers * d * d * 8 / 2**20
    summary = {
        "stats peak MiB, 100k / 1k rows": results["stats_100000"]["peak_extra_mib"]
        / max(results["stats_1000"]["peak_extra_mib"], 1.0),
        "kept rows peak MiB, 100k / 1k rows": results["rows_100000"]["peak_extra_mib"]
        / max(results["rows_1000"]["peak_extra_mib"], 1.0),
        "L·d² float64 scatter, MiB": floor_mib,
    }
    return {"config": {"layers": layers, "d": d, "chunk": chunk}, "results": results,
            "summary": summary}  # fmt: skip


def model_part(args: argparse.Namespace) -> dict[str, Any]:
    model = tlo.load_model(args.model, device="cpu")
    n_layers, d = model.cfg.n_layers, model.cfg.d_model
    harmful, harmless = tlo.default_prompts("harmful"), tlo.default_prompts("harmless")
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
    options = tlo.CollectOptions(batch_size=16, progress=False)
    print(
        f"model: {args.model}, {n_layers} layers, d={d}, {len(harmful)} + {len(harmless)} prompts"
    )

    def both(layer_names: list[str]) -> object:
        return collect_training(model, harmful, harmless, layer_names, options)

    results: dict[str, dict[str, float]] = {}

    def run(key: str, label: str, fn: Any) -> object:
        seconds, peak, out = measure(fn, args.repeats)
        results[key] = {"seconds": seconds, "peak_extra_mib": peak}
        print(f"{seconds:8.2f} s  {peak:7.0f} MiB  {key:24s} {label}", flush=True)
        return out

    training = run(
        "collect_all_layers", "collect_stats, every layer, both sets", lambda: both(names)
    )
    run("collect_layer_4", "the same, layer 4 only (stop_at_layer=5)", lambda: both(names[4:5]))
    run("collect_last_layer", "the same, last layer only (full pass)", lambda: both(names[-1:]))
    kept = run("collect_rows_all_layers", "the same, keeping rows (Ledoit-Wolf)",
               lambda: collect_training(model, harmful, harmless, names, options, keep_rows=True))  # fmt: skip
    assert kept.rows is not None

    source, target = (tlo.GaussianStats.stack([side[n] for n in names]) for side in training.stats)
    run("fit_all_from_stats", f"fit {n_layers} maps from statistics (k={args.k}, batched)",
        lambda: GaussianOTMap.from_stats(source, target, n_components=args.k))  # fmt: skip
    run("fit_all_ledoit_wolf", f"fit {n_layers} maps from rows, Ledoit-Wolf (k={args.k})",
        lambda: [GaussianOTMap.fit(kept.rows[0][n], kept.rows[1][n], n_components=args.k,
                                   route="rows", estimator="ledoit_wolf") for n in names])  # fmt: skip
    collect = results["collect_all_layers"]["seconds"]
    summary = {
        "fit from statistics / collection": results["fit_all_from_stats"]["seconds"] / collect,
        "fit Ledoit-Wolf / collection with rows": results["fit_all_ledoit_wolf"]["seconds"]
        / results["collect_rows_all_layers"]["seconds"],
        "layer-4 pass / last-layer pass (stop_at_layer)": results["collect_layer_4"]["seconds"]
        / results["collect_last_layer"]["seconds"],
    }
    return {"config": {"model": args.model, "n_layers": n_layers, "d": d, "k": args.k,
                       "prompts": len(harmful) + len(harmless)},
            "results": results, "summary": summary}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["memory", "model", "both"], default="both")
    parser.add_argument("--layers", type=int, default=4, help="memory part: layers")
    parser.add_argument("--d", type=int, default=1024, help="memory part: d_model")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("-k", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON reports")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for part, run in (("memory", memory_part), ("model", model_part)):
        if args.part in (part, "both"):
            report = {"machine": machine(), **run(args)}
            print()
            for key, value in report["summary"].items():
                print(f"{value:10.4f}  {key}")
            write_report(args.out / f"collect-{part}.json", report)


if __name__ == "__main__":
    main()
