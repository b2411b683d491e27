"""Why greedy decoding is slow on CPU, and which weight format or batch size decodes faster.

Run:  .venv/bin/python benchmarks/bench_decode.py            (~10 min on 2 cores)
      .venv/bin/python benchmarks/bench_decode.py --quick    (8 new tokens, 1 round)

Three measurements on the embedded model, one process, interleaved rounds (best round kept):

1. **Where one decode step goes**: ``torch.profiler`` over one cached decode step at the
   largest batch, after a prefill; the ten ops with the most self CPU time, and the step's
   FLOP rate next to the prefill's (the prefill is one large matmul per weight; a decode step
   multiplies the same weights by one row per sequence).
2. **Batch size**: greedy generation (KV cache, exactly ``--new-tokens``) of the same prompts
   in batches of 8, 16 and 32: new tokens per second.
3. **Weight format**: float32 against int8 dynamic quantisation of every ``nn.Linear``
   (``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantised per call)
   on a second copy of the model, at the largest batch; plus whether the greedy completions
   agree token for token. bfloat16 is in ``bench_dtype.py`` (emulated, slower, on a CPU
   without native bfloat16).
"""

import time
from typing import Any

import torch
from _bench import (
    best_of_rounds,
    generation_arguments,
    hf_greedy,
    machine,
    repo_path,
    write_report,
)
from torch.profiler import ProfilerActivity, profile

import tl_ot_ablation as tlo
from tl_ot_ablation.lens.collect import prepare_tokens

BATCHES = (8, 16, 32)
FLOP_PER_PARAM = 2  # one multiply-add per weight and token


def decode_step_profile(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """Seconds of a prefill and of one cached decode step, and the step's top ops."""
    hf_model = model.original_model
    with torch.inference_mode():
        begin = time.perf_counter()
        out = hf_model(input_ids=ids, attention_mask=mask, use_cache=True)
        prefill = time.perf_counter() - begin
        next_ids = out.logits[:, -1].argmax(-1, keepdim=True)
        step_mask = torch.cat([mask, torch.ones_like(next_ids)], dim=1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            begin = time.perf_counter()
            hf_model(
                input_ids=next_ids,
                attention_mask=step_mask,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            step = time.perf_counter() - begin
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    top = [
        {"op": event.key, "self_seconds": event.self_cpu_time_total / 1e6, "calls": event.count}
        for event in sorted(
            prof.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True
        )[:10]
    ]
    print(table)
    n_params = sum(p.numel() for p in hf_model.parameters())
    flops_step = FLOP_PER_PARAM * n_params * ids.shape[0]
    flops_prefill = FLOP_PER_PARAM * n_params * int(mask.sum())
    return {
        "prefill_seconds": prefill,
        "decode_step_seconds": step,
        "prefill_gflops_per_s": flops_prefill / prefill / 1e9,
        "decode_step_gflops_per_s": flops_step / step / 1e9,
        "top_ops": top,
    }


def main() -> None:
    args = generation_arguments(__doc__, "decode.json")
    model = tlo.load_model(args.model, device="cpu", dtype=torch.float32)
    prompts = tlo.default_prompts("harmful", "eval")[: max(BATCHES)]
    ids, mask = prepare_tokens(model, prompts)
    print(f"{args.model}: {len(prompts)} prompts x {ids.shape[1]} tokens, {args.threads} thread(s)")
    profile_record = decode_step_profile(model, ids, mask)

    quantized = tlo.load_model(args.model, device="cpu", dtype=torch.float32)
    quantized.original_model = torch.ao.quantization.quantize_dynamic(
        quantized.original_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
    )
    models = {"float32": model, "int8_dynamic": quantized}
    outputs: dict[str, torch.Tensor] = {}

    def generate(name: str, batch: int) -> Any:
        def run() -> object:
            outputs[f"{name}@{batch}"] = hf_greedy(
                models[name].original_model,
                ids[:batch],
                mask[:batch],
                args.new_tokens,
                models[name].tokenizer,
            )
            return outputs[f"{name}@{batch}"]

        return run

    contenders = {f"float32@{batch}": generate("float32", batch) for batch in BATCHES}
    contenders[f"int8_dynamic@{max(BATCHES)}"] = generate("int8_dynamic", max(BATCHES))
    seconds = best_of_rounds(contenders, args.rounds)
    rates = {
        name: int(name.split("@")[1]) * args.new_tokens / value for name, value in seconds.items()
    }
    for name, value in seconds.items():
        print(f"{value:8.2f} s  {name:<18} {rates[name]:6.1f} new tokens/s")
    largest = max(BATCHES)
    same = (outputs[f"int8_dynamic@{largest}"] == outputs[f"float32@{largest}"]).all(dim=1)
    agree = same.float().mean().item()
    print(f"int8 / float32 greedy completions identical: {agree:.0%} of prompts")
    write_report(
        args.out,
        {
            "machine": machine("cpu"),
            "config": vars(args) | {"out": repo_path(args.out), "prompt_tokens": ids.shape[1]},
            "decode_step": profile_record,
            "seconds": seconds,
            "new_tokens_per_s": rates,
            "int8_identical_share": agree,
            "summary": {
                "decode_vs_prefill_flop_rate": profile_record["decode_step_gflops_per_s"]
                / profile_record["prefill_gflops_per_s"],
                "batch32_vs_batch8_rate": rates[f"float32@{largest}"] / rates["float32@8"],
                "int8_vs_float32_rate": rates[f"int8_dynamic@{largest}"]
                / rates[f"float32@{largest}"],
            },
        },
    )


if __name__ == "__main__":
    main()
