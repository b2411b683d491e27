"""Inference cost of the hooks: generation throughput, and overhead vs hooked layers.

Run:  .venv/bin/python benchmarks/bench_hooks.py            (embedded model, ~10 min on 2 cores)
      .venv/bin/python benchmarks/bench_hooks.py --quick    (fewer tokens and rounds)

Issue 5, target 3. On the embedded model (bfloat16, CPU unless ``--device``), with maps fitted
on the package's 64 + 64 training prompts:

- generation throughput (new tokens per second, KV cache, greedy, exactly ``--new-tokens``
  per prompt) of the unhooked model, the default gated OT map at 2 layers, the ungated map at
  2 layers, and Arditi-style direction ablation at every layer's three residual hook points;
- prefill overhead: one forward pass over a batch of prompts with the gated map at 0, 1, 2, 4,
  8, 16 and all layers;
- the hook's own cost on one decode step's activation ``[batch, 1, d]`` against its floor, the
  two thin matmuls ``[batch, d] @ [d, k]`` and ``[batch, k] @ [k, d]``.

Contenders run in interleaved rounds with a rotating order (A B C D, B C D A, ...) so that
drifts in machine load hit all of them alike; each figure is the best round.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from _bench import best_of_rounds, greedy_generation, machine, model_arguments, write_report

import tl_ot_ablation as tlo
from tl_ot_ablation.lens.collect import prepare_tokens


def main() -> None:
    parser = model_arguments(
        __doc__, batch=16, rounds=3, quick="8 new tokens, 2 rounds", out="hooks.json"
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.rounds = 8, 2
    torch.set_num_threads(args.threads)

    model = tlo.load_model(args.model, device=args.device)
    n_layers, d = model.cfg.n_layers, model.cfg.d_model
    harmful, harmless = tlo.default_prompts("harmful"), tlo.default_prompts("harmless")
    spec = dataclasses.replace(tlo.RECOMMENDED_MAP, estimator="ledoit_wolf", n_components=64)
    fit = {"spec": spec, "collect": tlo.CollectOptions(progress=False)}
    pair = [n_layers // 2, n_layers // 2 + 1]
    all_layers = list(range(n_layers))
    gated_all = tlo.fit_ot_ablation(
        model,
        harmful,
        harmless,
        layers=all_layers,
        placement=tlo.Placement(sequential=False),
        **fit | {"spec": dataclasses.replace(spec, gate="posterior")},
    )
    ungated_pair = tlo.fit_ot_ablation(model, harmful, harmless, layers=pair, **fit)
    ablation = tlo.fit_direction_ablation(
        model,
        harmful,
        harmless,
        layer=n_layers // 2,
        collect=tlo.CollectOptions(progress=False),
    )

    def at_layers(layers: list[int]) -> list[tuple[str, Any]]:
        keep = {f"blocks.{layer}.hook_resid_pre" for layer in layers}
        return [(name, hook) for name, hook in gated_all.fwd_hooks() if name in keep]

    prompts = tlo.default_prompts("harmless", "eval")[: args.batch]
    ids, mask = prepare_tokens(model, prompts)
    ids, mask = ids.to(args.device), mask.to(args.device)
    print(
        f"{args.model}: {n_layers} layers, d={d}, batch {args.batch} x {ids.shape[1]} prompt "
        f"tokens, {args.new_tokens} new tokens, {args.threads} thread(s), device {args.device}"
    )

    def generate(hooks: list[tuple[str, Any]]) -> Callable[[], object]:
        return greedy_generation(model, ids, mask, args.new_tokens, hooks)

    def forward(hooks: list[tuple[str, Any]]) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
                return model(ids, attention_mask=mask, return_type=None)

        return run

    generation = {
        "none": generate([]),
        "ot_gated_2_layers": generate(at_layers(pair)),
        "ot_ungated_2_layers": generate(ungated_pair.fwd_hooks()),
        "direction_ablation_all": generate(ablation.fwd_hooks()),
    }
    print("generation ...", flush=True)
    gen_seconds = best_of_rounds(generation, args.rounds)
    tokens = args.batch * args.new_tokens
    throughput = {key: tokens / seconds for key, seconds in gen_seconds.items()}
    for key, value in throughput.items():
        print(f"{value:8.2f} tok/s  {gen_seconds[key]:7.2f} s  {key}", flush=True)

    counts = sorted({0, 1, 2, 4, 8, 16, n_layers})
    prefill = {f"{c}_layers": forward(at_layers(all_layers[:c])) for c in counts}
    print("prefill ...", flush=True)
    # A prefill pass is short (~2 s here) and noisy on a shared machine: twice the rounds.
    prefill_seconds = best_of_rounds(prefill, 2 * args.rounds)
    for key, value in prefill_seconds.items():
        print(f"{value:8.3f} s  prefill, gated OT at {key}", flush=True)

    # The hook op itself on one decode step, against its two-matmul floor.
    one_map = gated_all[f"blocks.{pair[0]}.hook_resid_pre"].to(args.device)
    ungated = one_map.with_options(gate="none")
    step = torch.randn(args.batch, 1, d, device=args.device, dtype=torch.bfloat16)
    v = one_map.basis.components.float().to(args.device)
    w_in = v.mT.contiguous()
    step32 = step.float()

    def repeat(fn: Callable[[], object], times: int = 200) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                for _ in range(times):
                    fn()
            return None

        return run

    micro = best_of_rounds(
        {
            "floor_two_matmuls": repeat(lambda: (step32 @ w_in) @ v),
            "hook_ungated": repeat(lambda: ungated(step)),
            "hook_gated": repeat(lambda: one_map(step)),
        },
        args.rounds + 2,
    )
    micro_us = {key: seconds / 200 * 1e6 for key, seconds in micro.items()}
    for key, value in micro_us.items():
        print(f"{value:8.1f} µs  {key}", flush=True)

    none = throughput["none"]
    summary = {
        "gated OT at 2 layers / unhooked (throughput)": throughput["ot_gated_2_layers"] / none,
        "ungated OT at 2 layers / unhooked (throughput)": throughput["ot_ungated_2_layers"] / none,
        "direction ablation everywhere / unhooked (throughput)": throughput[
            "direction_ablation_all"
        ]
        / none,
        "gated OT 2 layers / direction ablation (throughput)": throughput["ot_gated_2_layers"]
        / throughput["direction_ablation_all"],
        "prefill, gated OT at every layer / unhooked": prefill_seconds[f"{n_layers}_layers"]
        / prefill_seconds["0_layers"],
        "hook ungated / two-matmul floor": micro_us["hook_ungated"] / micro_us["floor_two_matmuls"],
        "hook gated / two-matmul floor": micro_us["hook_gated"] / micro_us["floor_two_matmuls"],
    }
    print()
    for key, value in summary.items():
        print(f"{value:8.3f}  {key}")
    report = {
        "config": {
            "model": args.model,
            "n_layers": n_layers,
            "d": d,
            "k": 64,
            "batch": args.batch,
            "prompt_tokens": int(ids.shape[1]),
            "new_tokens": args.new_tokens,
            "rounds": args.rounds,
            "ot_layers": pair,
        },
        "machine": machine(args.device),
        "generation_seconds": gen_seconds,
        "tokens_per_second": throughput,
        "prefill_seconds": prefill_seconds,
        "hook_microseconds": micro_us,
        "summary": summary,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
