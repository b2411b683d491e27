import torch

import tl_ot_ablation as tlo

# Residual activations at 3 layers: [layers, n_prompts, d_model] (random stand-ins here).
harmful = torch.randn(3, 256, 64) + 0.5
harmless = torch.randn(3, 300, 64) * 1.5

ot = tlo.GaussianOTMap.fit(harmful, harmless, n_components=16)  # all 3 layers in one batched fit
ablate = tlo.DirectionAblation.fit(harmful, harmless)

moved = ot(harmful)  # same shape and dtype, a new tensor
layer_1 = ot[1].with_strength(0.5)  # one layer's map, half-way along the transport
diagnostics = ot.diagnostics()  # per layer: W2 = mean part + covariance (Bures) part
print("W2 mean part:", diagnostics.w2_mean.tolist(), "Bures part:", diagnostics.w2_bures.tolist())
tlo.save(ot, "maps/demo")
assert torch.equal(tlo.load("maps/demo")(harmful), moved)
