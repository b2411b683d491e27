"""The linear probe (``core.probe``): separates separable data, matches scikit-learn, checks
its input."""

import math

import numpy as np
import pytest
import torch

from tl_ot_ablation.core.probe import LinearProbe
from tl_ot_ablation.eval.detect import auroc

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def test_probe_separates_linearly_separable_data() -> None:
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(6, generator=g, dtype=F64)
    direction /= direction.norm()

    def side(n: int, sign: float) -> torch.Tensor:
        rows = torch.randn(n, 6, generator=g, dtype=F64)
        rows -= (rows @ direction).unsqueeze(-1) * direction  # off the separating direction
        margin = 0.5 + torch.rand(n, generator=g, dtype=F64)
        return rows + sign * margin.unsqueeze(-1) * direction

    probe = LinearProbe.fit(side(100, -1), side(100, 1), l2=1e-3)
    held_clean, held_edited = side(200, -1), side(200, 1)
    assert bool((probe(held_edited) > 0).all() and (probe(held_clean) < 0).all())
    assert auroc(probe(held_edited), probe(held_clean)) == 1.0


def test_probe_matches_scikit_learn() -> None:
    """Same objective as scikit-learn's L2 logistic regression on the standardised features
    with sample weights ``α_i / l2`` (α: ½ per class, spread over its rows) and ``C = 1``."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(80, 10, generator=g, dtype=F64)
    edited = 1.5 * torch.randn(60, 10, generator=g, dtype=F64) + 0.4
    l2 = 0.05
    probe = LinearProbe.fit(clean, edited, l2=l2)
    features = ((torch.cat([clean, edited]) - probe.mean) / probe.scale).numpy()
    labels = np.r_[np.zeros(80), np.ones(60)]
    weights = np.r_[np.full(80, 0.5 / 80), np.full(60, 0.5 / 60)] / l2
    reference = sklearn.LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000)
    reference.fit(features, labels, sample_weight=weights)
    # Both stop at gradients <= ~1e-10; the objective is l2-strongly convex, so the weights
    # agree to about gradient / l2 ~ 1e-9 (1e-6 leaves margin for sklearn's own stopping rule).
    np.testing.assert_allclose(probe.weight.numpy(), reference.coef_[0], atol=1e-6)
    assert probe.bias.item() == pytest.approx(reference.intercept_[0], abs=1e-6)


def test_probe_rejects_bad_input(as_user: None) -> None:
    rows = torch.randn(10, 4)
    with pytest.raises(ValueError, match="share d_model"):
        LinearProbe.fit(rows, torch.randn(10, 5))
    with pytest.raises(ValueError, match="l2 must be"):
        LinearProbe.fit(rows, rows + 1, l2=0.0)
    with pytest.raises(ValueError, match=r"\[n, d_model\]"):
        LinearProbe.fit(torch.randn(4), rows)
    with pytest.raises(ValueError, match="non-finite"):
        LinearProbe.fit(rows, torch.full((3, 4), math.nan))
    with pytest.raises(ValueError, match="constant"):
        LinearProbe.fit(torch.ones(3, 4), torch.ones(3, 4))
    probe = LinearProbe.fit(rows, rows + 1)
    with pytest.raises(ValueError, match="d_model=4"):
        probe(torch.randn(2, 5))
