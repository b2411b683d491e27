"""Plain helpers that test modules in several folders import: ``from tests.helpers import``.

Fixtures live in the nearest ``conftest.py``; what is here is data and functions a test calls
itself: the tiny prompt sets, float64 Gaussian samples, a hypothesis strategy of transport
problems, the monitor's synthetic prompts and AUROC null, the devices a test runs on, small
saved objects, and a minimal compare record."""

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import strategies as st

from tl_ot_ablation import DirectionAblation, GaussianOTMap, InterventionSet, PerNeuronOT
from tl_ot_ablation.eval.prompt_sets import EvalPrompts, ValidationPrompts
from tl_ot_ablation.eval.record import CompareRecord, MethodRecord, PromptsRecord
from tl_ot_ablation.eval.settings import CompareSettings
from tl_ot_ablation.io import serialize

# --- float64 samples and tiny prompt sets (everywhere) ------------------------------------


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


# --- core: transport problems and two Gaussian classes ---------------------------------------


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Source rows, target rows and k of any shape, dtype, scale and conditioning (hypothesis)."""
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


def gaussian_pair(d: int = 8, n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 Gaussian classes of width ``d``: ``n`` source rows, ``n + 10`` target rows."""
    source = gaussian_rows(n, torch.ones(d, dtype=torch.float64), random_spd(d, seed=1), seed=2)
    target = gaussian_rows(n + 10, torch.zeros(d, dtype=torch.float64), random_spd(d, seed=3))
    return source, target


# --- the monitor: the AUROC null, synthetic prompts and a known edit (core, lens, eval) ---------


def null_sd(n_pos: int, n_neg: int) -> float:
    """Standard deviation of the AUROC of exchangeable, untied scores (Mann-Whitney)."""
    return math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))


def prompts(n: int, seed: int, words: list[str]) -> list[str]:
    """``n`` prompts of 2 to 8 words drawn from ``words`` (seeded)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(n)]


class Shift:
    """A known edit: add a fixed vector."""

    def __init__(self, vector: torch.Tensor) -> None:
        self.vector = vector

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.vector.to(x.dtype)


# --- the devices a test runs on (core, lens) -------------------------------------------------

# A test that takes ``device`` runs on the CPU everywhere and on CUDA where a GPU is present
# (marker ``gpu``; on a machine without one those cases are skipped with the reason shown by
# ``-rs``). On a GPU machine ``benchmarks/run_gpu.sh`` runs them with the GPU benchmarks.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(
                not torch.cuda.is_available(),
                reason="no CUDA device on this machine; benchmarks/run_gpu.sh runs these on one",
            ),
        ],
    ),
]


def device_classes(device: str, d: int = 12, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Two correlated classes of ``n`` rows, batched over 2 layers, on ``device``."""
    generator = torch.Generator().manual_seed(1)
    mixing = torch.randn(d, d, generator=generator)
    source = torch.randn(2, n, d, generator=generator) @ mixing + 1.0
    target = torch.randn(2, n, d, generator=generator) @ (0.5 * mixing)
    return source.to(device), target.to(device)


# --- small saved objects (io, lens, cli) ------------------------------------------------------

SMALL_D = 6


def _small_rows(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(2.0, 0.5, SMALL_D)
    source = torch.randn(40, SMALL_D, generator=g) * scales + 1
    return source, torch.randn(50, SMALL_D, generator=g) * scales


def small_map(seed: int = 0) -> GaussianOTMap:
    """A map fitted on ``SMALL_D``-wide rows, at strength 0.5."""
    return GaussianOTMap.fit(*_small_rows(seed), n_components=3).with_strength(0.5)


def small_set(n: int, seed: int = 0) -> InterventionSet:
    """A set of ``n`` distinct interventions (a map, an ablation, per-neuron OT, ...)."""
    source, target = _small_rows(seed)
    kinds = [
        small_map(seed),
        DirectionAblation.fit(source, target),
        PerNeuronOT.fit(source, target),
        small_map(seed + 1),
    ]
    hooks = {f"blocks.{i}.hook_resid_pre": kinds[i] for i in range(n)}
    return InterventionSet(hooks, positions="all", metadata={"seed": seed})


def same_saved(a: Any, b: Any) -> bool:
    """Whether two saved kinds, or two sets, hold identical tensors and fields."""
    if isinstance(a, InterventionSet):
        return (
            isinstance(b, InterventionSet)
            and list(a) == list(b)
            and (a.positions, a.n_post_instruction, a.metadata)
            == (b.positions, b.n_post_instruction, b.metadata)
            and all(same_saved(a[name], b[name]) for name in a)
        )
    if type(a) is not type(b):
        return False
    tensors_a, fields_a = serialize._flatten(a)
    tensors_b, fields_b = serialize._flatten(b)
    return (
        fields_a == fields_b
        and tensors_a.keys() == tensors_b.keys()
        and all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)
    )


# --- a minimal compare record (cli, eval) -------------------------------------------------------


def compare_record(path: Path, strengths: dict[str, float], **changes) -> Path:
    """A minimal valid compare ``results.json`` recording ``strengths``."""
    settings = CompareSettings.preset(
        **{"layers": [1], "direction_layer": 1, "n_components": 4, "n_train": 4, **changes}
    )
    prompts = PromptsRecord("a", "b", "c", 4, 4, 3, 3, 2, 0)
    methods = {"none": MethodRecord(None)} | {m: MethodRecord(s) for m, s in strengths.items()}
    CompareRecord("tiny", settings, prompts, methods).write(path / "results.json")
    return path / "results.json"


# Validation and held-out prompts of the compare tests: disjoint from HARMFUL / HARMLESS.
VALIDATION = ValidationPrompts(["burn a house", "forge a cheque"], ["fold a shirt", "read a map"])
HELD_OUT = EvalPrompts(["rob a bank", "hurt someone"], ["plant a tree", "sing a song"], ["Bread."])
