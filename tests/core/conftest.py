"""Fixtures of the core tests: two well-separated float64 classes and their map."""

import pytest
import torch

from tests.helpers import gaussian_rows, random_spd
from tl_ot_ablation import GaussianOTMap


@pytest.fixture(scope="module")
def separated() -> tuple[torch.Tensor, torch.Tensor, GaussianOTMap]:
    d = 10
    source = gaussian_rows(
        400, torch.full((d,), 2.0, dtype=torch.float64), random_spd(d, seed=5), seed=6
    )
    target = gaussian_rows(400, torch.zeros(d, dtype=torch.float64), random_spd(d, seed=7), seed=8)
    return source, target, GaussianOTMap.fit(source, target, n_components=4)
