"""The weights hash that keys the result cache: equal weights only, and kept per model object
until a weight changes."""

import torch

from tl_ot_ablation.lens.weights import weights_sha256


def test_only_the_same_weights_share_a_hash(tiny_bridge) -> None:
    assert weights_sha256(tiny_bridge) == weights_sha256(tiny_bridge)  # kept per model object
    original = torch.nn.Linear(2, 2)
    copy = torch.nn.Linear(2, 2)
    copy.load_state_dict(original.state_dict())
    assert weights_sha256(copy) == weights_sha256(original)
    nudged = torch.nn.Linear(2, 2)
    nudged.load_state_dict(original.state_dict())
    with torch.no_grad():
        nudged.weight[0, 0] += 1e-6
    assert weights_sha256(nudged) != weights_sha256(original)
    assert weights_sha256(original.double()) != weights_sha256(copy)
