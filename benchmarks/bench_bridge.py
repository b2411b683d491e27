"""Bridge overhead: greedy generation on the booted TransformerBridge vs plain Hugging Face.

Run:  .venv/bin/python benchmarks/bench_bridge.py            (~4 min on 2 cores)
      .venv/bin/python benchmarks/bench_bridge.py --quick    (8 new tokens, 1 round)

Is slow generation here the hardware or TransformerLens? Booting rewires every layer of the
wrapped model so that its hook points fire; this measures what that costs. Both copies of the
embedded model (same dtype, ``load_model``'s choice) run the same greedy generation (KV cache,
exactly ``--new-tokens`` per prompt) and the same prefill pass in interleaved rounds with a
rotating order; each figure is the best round. Also recorded: whether their greedy tokens agree.
"""

import torch
from _bench import (
    best_of_rounds,
    generation_arguments,
    greedy_generation,
    hf_greedy,
    machine,
    repo_path,
    write_report,
)

import tl_ot_ablation as tlo
from tl_ot_ablation.lens import models
from tl_ot_ablation.lens.collect import prepare_tokens


def main() -> None:
    args = generation_arguments(__doc__, "bridge.json")
    bridge = tlo.load_model(args.model, device="cpu")
    plain, _, _ = models._load_hf(args.model, bridge.cfg.dtype)  # a fresh, never-booted copy
    prompts = tlo.default_prompts("harmful", "eval")[: args.batch]
    ids, mask = prepare_tokens(bridge, prompts)
    print(
        f"{args.model} ({bridge.cfg.dtype}): batch {args.batch} x {ids.shape[1]} prompt tokens, "
        f"{args.new_tokens} new tokens, {args.threads} thread(s)"
    )
    outputs: dict[str, torch.Tensor] = {}

    def plain_generation() -> object:
        outputs["plain"] = hf_greedy(plain, ids, mask, args.new_tokens, bridge.tokenizer)
        return outputs["plain"]

    bridged = greedy_generation(bridge, ids, mask, args.new_tokens)

    def bridge_generation() -> object:
        outputs["bridge"] = bridged()
        return outputs["bridge"]

    def prefill(model: object) -> object:
        def run() -> object:
            with torch.inference_mode():
                return model(ids, attention_mask=mask)  # type: ignore[operator]

        return run

    seconds = best_of_rounds(
        {
            "generate_bridge": bridge_generation,
            "generate_plain_hf": plain_generation,
            "prefill_bridge": prefill(bridge),
            "prefill_plain_hf": prefill(plain),
        },
        args.rounds,
    )
    agree = (outputs["bridge"] == outputs["plain"]).all(dim=1).float().mean().item()
    new = ids.shape[0] * args.new_tokens
    for name, value in seconds.items():
        rate = f"  {new / value:6.1f} new tokens/s" if name.startswith("generate") else ""
        print(f"{value:8.2f} s  {name}{rate}")
    ratios = {
        step: seconds[f"{step}_bridge"] / seconds[f"{step}_plain_hf"]
        for step in ("generate", "prefill")
    }
    print(
        f"bridge / plain time: generation {ratios['generate']:.2f}x, prefill {ratios['prefill']:.2f}x"
    )
    print(f"greedy tokens identical: {agree:.0%} of prompts")
    write_report(
        args.out,
        {
            "machine": machine("cpu"),
            "config": vars(args) | {"out": repo_path(args.out), "prompt_tokens": ids.shape[1]},
            "seconds": seconds,
            "bridge_over_plain": ratios,
            "identical_greedy_tokens": agree,
        },
    )


if __name__ == "__main__":
    main()
