import tl_ot_ablation as tlo

model = tlo.load_model()  # the embedded Qwen2.5-Coder-1.5B-Instruct (dtype: "auto")
harmful, harmless = tlo.default_prompts("harmful"), tlo.default_prompts("harmless")

# Fit on 48 + 48 prompts; OT at one mid-depth layer, and Arditi-style direction ablation.
ot = tlo.fit_ot_ablation(model, harmful[:48], harmless[:48], layers=[14], n_components=32)
da = tlo.fit_direction_ablation(model, harmful[:48], harmless[:48], layer=14)
diag = ot["blocks.14.hook_resid_pre"].diagnostics()
print(
    ot, f"\nW2² = {diag.w2:.1f}: mean part {diag.w2_mean:.1f} + covariance part {diag.w2_bures:.1f}"
)

# The variant that matches direction ablation (README results): the layer where the classes
# are furthest apart, Ledoit-Wolf covariances, each edit gated by P(harmful | activation).
layers = tlo.select_layers(model, harmful[:48], harmless[:48])
gated = tlo.fit_ot_ablation(
    model, harmful[:48], harmless[:48], layers=layers, estimator="ledoit_wolf", gate="posterior"
)
print("selected layers:", layers)

held_out = harmful[48:52] + harmless[48:50]
methods = [("none", []), ("direction", da.fwd_hooks()), ("OT", ot.fwd_hooks())]
methods.append(("OT gated", gated.fwd_hooks()))
for name, hooks in methods:
    completions = tlo.generate(model, held_out, fwd_hooks=hooks, max_new_tokens=24)
    for prompt, completion in zip(held_out, completions, strict=True):
        print(f"[{name:9s}] {prompt[:40]:40s} -> {completion[:70]!r}")
