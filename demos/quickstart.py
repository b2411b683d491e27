import tl_ot_ablation as tlo

model = tlo.load_model()  # the embedded Qwen2.5-Coder-1.5B-Instruct (dtype: "auto")
harmful, harmless = tlo.default_prompts("harmful"), tlo.default_prompts("harmless")
train = harmful[:48], harmless[:48]
# One pass over the 48 + 48 training prompts at every layer; every fit below reuses it.
acts = tlo.collect_every_layer(model, *train, estimator="ledoit_wolf")

# OT at one mid-depth layer, and Arditi-style direction ablation.
ot = tlo.fit_ot_ablation(model, *train, layers=[14], n_components=32, training=acts)
da = tlo.fit_direction_ablation(model, *train, layer=14, training=acts)
diag = ot["blocks.14.hook_resid_pre"].diagnostics()
print(
    ot, f"\nW2² = {diag.w2:.1f}: mean part {diag.w2_mean:.1f} + covariance part {diag.w2_bures:.1f}"
)

# The variant that matches direction ablation (README results): the layer where the classes
# are furthest apart, Ledoit-Wolf covariances, each edit gated by P(harmful | activation).
layers = tlo.select_layers(model, *train, training=acts)
gated = tlo.fit_ot_ablation(
    model, *train, layers=layers, estimator="ledoit_wolf", gate="posterior", training=acts
)
print("selected layers:", layers)

held_out = harmful[48:52] + harmless[48:50]
methods = [("none", []), ("direction", da.fwd_hooks()), ("OT", ot.fwd_hooks())]
methods.append(("OT gated", gated.fwd_hooks()))
for name, hooks in methods:
    completions = tlo.generate(model, held_out, fwd_hooks=hooks, max_new_tokens=24)
    for prompt, completion in zip(held_out, completions, strict=True):
        print(f"[{name:9s}] {prompt[:40]:40s} -> {completion[:70]!r}")
