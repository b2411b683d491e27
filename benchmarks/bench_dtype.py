"""Weight dtype: generation and prefill speed of the embedded model in bfloat16 vs float32.

Run:  .venv/bin/python benchmarks/bench_dtype.py            (~6 min on 2 cores)
      .venv/bin/python benchmarks/bench_dtype.py --quick    (fewer tokens, 1 round)

Why ``load_model(dtype="auto")`` exists: on a CPU without bfloat16 instructions (AVX2 only, no
AVX512-BF16 / AMX) bfloat16 matmuls are emulated. Both copies of the embedded model are loaded
in this process (bfloat16 ~3 GB, float32 ~6 GB) and run the same greedy generation (KV cache,
exactly ``--new-tokens`` per prompt) and the same prefill pass, in interleaved rounds with a
rotating order; each figure is the best round. Also recorded: whether the two dtypes' greedy
completions agree token for token, and the dtype ``auto`` picks on this machine.
"""

from typing import Any

import torch
from _bench import (
    best_of_rounds,
    generation_arguments,
    greedy_generation,
    machine,
    repo_path,
    write_report,
)

import tl_ot_ablation as tlo
from tl_ot_ablation.lens.collect import prepare_tokens
from tl_ot_ablation.lens.models import auto_dtype, cpu_has_native_bfloat16

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def main() -> None:
    args = generation_arguments(__doc__, "dtype.json")

    models = {
        name: tlo.load_model(args.model, device="cpu", dtype=dt) for name, dt in DTYPES.items()
    }
    prompts = tlo.default_prompts("harmful", "eval")[: args.batch]
    ids, mask = prepare_tokens(models["float32"], prompts)
    print(
        f"{args.model}: batch {args.batch} x {ids.shape[1]} prompt tokens, {args.new_tokens} new "
        f"tokens, {args.threads} thread(s); native bf16: {cpu_has_native_bfloat16()}"
    )
    outputs: dict[str, Any] = {}

    def generate(name: str) -> Any:
        run = greedy_generation(models[name], ids, mask, args.new_tokens)

        def keep() -> object:
            outputs[name] = run()
            return outputs[name]

        return keep

    def prefill(name: str) -> Any:
        def run() -> object:
            with torch.inference_mode():
                return models[name](ids, attention_mask=mask, return_type=None)

        return run

    contenders = {f"generate_{name}": generate(name) for name in DTYPES}
    contenders |= {f"prefill_{name}": prefill(name) for name in DTYPES}
    seconds = best_of_rounds(contenders, args.rounds)
    new = ids.shape[0] * args.new_tokens
    agree = (outputs["bfloat16"] == outputs["float32"]).all(dim=1).float().mean().item()
    for name, value in seconds.items():
        rate = f"  {new / value:6.1f} new tokens/s" if name.startswith("generate") else ""
        print(f"{value:8.2f} s  {name}{rate}")
    ratio = seconds["generate_bfloat16"] / seconds["generate_float32"]
    prefill_ratio = seconds["prefill_bfloat16"] / seconds["prefill_float32"]
    print(f"bfloat16 / float32 time: generation {ratio:.2f}x, prefill {prefill_ratio:.2f}x")
    print(f"greedy completions identical in both dtypes: {agree:.0%} of prompts")
    print(f"load_model(dtype='auto') picks {auto_dtype('cpu')} here")
    write_report(
        args.out,
        {
            "machine": machine("cpu", native_bfloat16=str(cpu_has_native_bfloat16())),
            "config": vars(args) | {"out": repo_path(args.out), "prompt_tokens": ids.shape[1]},
            "seconds": seconds,
            "bfloat16_over_float32": {"generate": ratio, "prefill": prefill_ratio},
            "identical_greedy_completions": agree,
            "auto_dtype_cpu": str(auto_dtype("cpu")),
        },
    )


if __name__ == "__main__":
    main()
