import tl_ot_ablation as tlo

model = tlo.load_model()  # the embedded Qwen2.5-Coder-1.5B-Instruct (dtype: "auto")
train = tlo.default_prompts("harmful")[:64], tlo.default_prompts("harmless")[:64]
acts = tlo.collect_every_layer(model, *train, estimator="ledoit_wolf")  # one pass, every layer

# What wins (docs/results.md): the gated Ledoit-Wolf map (fit_ot_ablation's default) at layer
# 17, the layer tlo.choose_layer(model) picks by judged compliance (about 35 min on a CPU), at
# the strength compare chose (2); direction ablation at the strength matched to it (0.5).
ot = tlo.fit_ot_ablation(model, *train, layers=[17], training=acts).with_strength(2.0)
da = tlo.fit_direction_ablation(model, *train, layer=14, training=acts).with_strength(0.5)
print(ot)

held_out = tlo.default_prompts("harmful", "eval")[:4] + tlo.default_prompts("harmless", "eval")[:2]
for name, hooks in [("none", []), ("direction", da.fwd_hooks()), ("gated OT", ot.fwd_hooks())]:
    completions = tlo.generate(model, held_out, fwd_hooks=hooks, max_new_tokens=24)
    for prompt, completion in zip(held_out, completions, strict=True):
        print(f"[{name:9s}] {prompt[:40]:40s} -> {completion[:70]!r}")
