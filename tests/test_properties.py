"""Hypothesis property tests: any shape, dtype and conditioning gives a finite, well-formed map."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tl_ot_ablation import DirectionAblation, GaussianOTMap, PerNeuronOT


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int]:
    d = draw(st.integers(1, 10))
    k = draw(st.integers(1, d))
    n = draw(st.integers(2, 25))
    batch = draw(st.sampled_from([(), (1,), (3,)]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    scale = 10.0 ** draw(st.integers(-3, 3))
    anisotropy = 10.0 ** draw(st.integers(0, 4))  # condition number of the data, up to 1e8
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    axis_scale = torch.logspace(
        0, -torch.log10(torch.tensor(anisotropy)).item(), d, dtype=torch.float64
    )
    source = (
        torch.randn(*batch, n, d, generator=g, dtype=torch.float64) * axis_scale * scale + scale
    )
    target = (
        torch.randn(*batch, n + 3, d, generator=g, dtype=torch.float64) * axis_scale * scale * 2
    )
    return source.to(dtype), target.to(dtype), k


@settings(max_examples=60, deadline=None)
@given(problems())
def test_map_is_finite_and_well_formed(problem: tuple[torch.Tensor, torch.Tensor, int]) -> None:
    source, target, k = problem
    ot_map = GaussianOTMap.fit(source, target, n_components=k)
    assert ot_map.matrix.dtype == source.dtype
    out = ot_map(source)
    assert out.shape == source.shape and out.dtype == source.dtype
    assert torch.isfinite(out).all()
    torch.testing.assert_close(ot_map.matrix, ot_map.matrix.mT)
    # A is p.s.d. in float64; storing it in its dtype moves its eigenvalues by at most
    # eps·‖A‖_F (Weyl), whatever the BLAS.
    matrix = ot_map.matrix.double()
    eps = torch.finfo(source.dtype).eps
    assert (torch.linalg.eigvalsh(matrix).min(-1).values >= -eps * matrix.norm(dim=(-2, -1))).all()
    assert torch.equal(ot_map.with_strength(0.0)(source), source)
    # The edit lies in the subspace: projecting it onto the complement leaves (almost) nothing.
    v = ot_map.basis.components.double()
    edit = (out - source).double()
    leak = edit - (edit @ v.mT) @ v
    # The leak is rounding: of x + edit, and of the stored basis's orthonormality, a few d·eps
    # of the magnitudes (d <= 10; at most ~10 eps seen in 1500 examples). 1000 eps leaves room.
    tolerance = 1000 * torch.finfo(source.dtype).eps
    assert leak.abs().max() <= tolerance * (1 + source.double().abs().max())


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
