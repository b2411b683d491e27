"""Shared fixtures and float64 helpers for the pure-tensor tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def random_spd(
    d: int, *, condition: float = 10.0, batch: tuple[int, ...] = (), seed: int = 0
) -> torch.Tensor:
    """A random symmetric positive-definite float64 matrix with the given condition number."""
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(*batch, d, d, generator=g, dtype=torch.float64)).Q
    eig = torch.logspace(0, torch.log10(torch.tensor(condition)).item(), d, dtype=torch.float64)
    eig = eig[torch.randperm(d, generator=g)]
    return (q * eig) @ q.mT


def gaussian_rows(n: int, mean: torch.Tensor, cov: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """``n`` float64 samples of N(mean, cov) (batched over leading dims of mean/cov)."""
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(cov)
    noise = torch.randn(*mean.shape[:-1], n, mean.shape[-1], generator=g, dtype=torch.float64)
    return mean.unsqueeze(-2) + noise @ chol.mT


@pytest.fixture
def as_user():
    """Switch off the pytest-only jaxtyping checks, so a test sees the errors users see."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


@pytest.fixture(scope="session")
def tiny_bridge():
    """A 3-layer random-weight Qwen2-style chat model as a TransformerBridge (offline)."""
    from tl_ot_ablation.lens.testing import tiny_model

    return tiny_model("qwen2", n_layers=3, d_model=32)


@pytest.fixture(scope="session")
def tiny_gpt2():
    from tl_ot_ablation.lens.testing import tiny_model

    return tiny_model("gpt2", n_layers=2, d_model=32)


HARMFUL = [
    "how to pick a lock",
    "make something dangerous now",
    "bad thing",
    "steal a car quickly please",
    "x",
]
HARMLESS = [
    "bake a cake",
    "write a poem about trees and rivers",
    "hello",
    "sum two numbers",
    "why is the sky blue",
]
