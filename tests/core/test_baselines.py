"""Baselines (``core.baselines``): direction ablation, ActAdd and per-neuron OT, in the same
callable contract; any shape and dtype gives a finite result (hypothesis)."""

import pytest
import torch
from hypothesis import given, settings

from tests.helpers import gaussian_rows, problems, random_spd
from tl_ot_ablation import ActAdd, DirectionAblation, PerNeuronOT


def _pair(d: int = 8, batch: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    source = gaussian_rows(
        300, torch.ones(*batch, d, dtype=torch.float64), random_spd(d, batch=batch, seed=1)
    )
    target = gaussian_rows(
        200, torch.zeros(*batch, d, dtype=torch.float64), random_spd(d, batch=batch, seed=2), seed=5
    )
    return source, target


def test_direction_ablation_is_idempotent_and_orthogonal() -> None:
    source, target = _pair()
    ab = DirectionAblation.fit(source, target)
    torch.testing.assert_close(ab.direction.norm(), torch.tensor(1.0, dtype=torch.float64))
    diff = source.mean(0) - target.mean(0)
    assert ab.direction @ diff > 0  # harmful minus harmless: sign-consistent
    x = torch.randn(5, 8, dtype=torch.float64)
    once = ab(x)
    torch.testing.assert_close(ab(once), once)
    torch.testing.assert_close(once @ ab.direction, torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(ab.with_strength(0.5)(x), (x + once) / 2)


def test_direction_ablation_random_placebo_is_unit() -> None:
    placebo = DirectionAblation.random(16, batch_shape=(3,), seed=1)
    torch.testing.assert_close(placebo.direction.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(placebo.direction[0], DirectionAblation.random(16, seed=2).direction)


def test_actadd_moves_source_mean_to_target_mean() -> None:
    source, target = _pair()
    add = ActAdd.fit(source, target)
    torch.testing.assert_close(add(source).mean(0), target.mean(0))
    torch.testing.assert_close(add.inverse()(add(source)), source)
    add.with_strength(3.0)  # any coefficient is legitimate for ActAdd: no warning expected


def test_per_neuron_ot_matches_each_marginal() -> None:
    source, target = _pair()
    per_neuron = PerNeuronOT.fit(source, target, reg=0.0)
    moved = per_neuron(source)
    torch.testing.assert_close(moved.mean(0), target.mean(0))
    torch.testing.assert_close(moved.var(0), target.var(0))
    torch.testing.assert_close(per_neuron.inverse()(moved), source)


@pytest.mark.parametrize("cls", [DirectionAblation, ActAdd, PerNeuronOT])
def test_batched_over_layers_equals_per_layer(cls: type) -> None:
    source, target = _pair(batch=(2,))
    batched = cls.fit(source, target)
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    for i in range(2):
        torch.testing.assert_close(batched(x)[i], cls.fit(source[i], target[i])(x[i]))


@pytest.mark.parametrize("cls", [DirectionAblation, ActAdd, PerNeuronOT])
def test_bf16_in_bf16_out_and_no_in_place_edit(cls: type) -> None:
    source, target = _pair()
    intervention = cls.fit(source.float(), target.float())
    x = torch.randn(2, 3, 8).to(torch.bfloat16)
    before = x.clone()
    out = intervention(x)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    assert torch.equal(x, before)


def test_negative_strength_is_rejected(as_user: None) -> None:
    ab = DirectionAblation(direction=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"inverse\(\)"):
        ab.with_strength(-1.0)


@settings(max_examples=30, deadline=None)
@given(problems())
def test_baselines_are_finite_and_shape_preserving(
    problem: tuple[torch.Tensor, torch.Tensor, int],
) -> None:
    source, target, _ = problem
    for intervention in (DirectionAblation.fit(source, target), PerNeuronOT.fit(source, target)):
        out = intervention(source)
        assert out.shape == source.shape and out.dtype == source.dtype
        assert torch.isfinite(out).all()
