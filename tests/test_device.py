"""The same code on every device: statistics, fits, hooks and model-level fitting stay where
their inputs live and agree with the CPU results.

Each test runs on the CPU everywhere and on CUDA where a GPU is present (marker ``gpu``; on a
machine without one those cases are skipped with the reason shown by ``-rs``). On a GPU
machine ``benchmarks/run_gpu.sh`` runs them with the GPU benchmarks.
"""

import dataclasses

import pytest
import torch
from conftest import HARMFUL, HARMLESS

import tl_ot_ablation as tlo
from tl_ot_ablation.lens.testing import tiny_model

QUIET = tlo.CollectOptions(progress=False)

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


def _classes(device: str, d: int = 12, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    mixing = torch.randn(d, d, generator=generator)
    source = torch.randn(2, n, d, generator=generator) @ mixing + 1.0
    target = torch.randn(2, n, d, generator=generator) @ (0.5 * mixing)
    return source.to(device), target.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_statistics_accumulate_on_the_rows_device_and_match_the_cpu(device: str) -> None:
    source, _ = _classes(device)
    stats = tlo.GaussianStats(source.shape[-1], batch_shape=(2,), device=device)
    for chunk in source.split(37, dim=1):
        stats.update(chunk)
    assert stats.cov.device.type == torch.device(device).type
    assert stats.cov.dtype == torch.float64
    reference = tlo.GaussianStats.from_rows(source.cpu().double())
    torch.testing.assert_close(stats.cov.cpu(), reference.cov, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("route", ["covariance", "rows"])
@pytest.mark.parametrize("gate", ["none", "posterior"])
def test_fitted_maps_live_and_run_on_the_device(device: str, route: str, gate: str) -> None:
    source, target = _classes(device)
    fitted = tlo.GaussianOTMap.fit(source, target, n_components=6, route=route).with_options(
        gate=gate
    )
    assert fitted.matrix.device.type == torch.device(device).type
    on_cpu = tlo.GaussianOTMap.fit(
        source.cpu(), target.cpu(), n_components=6, route=route
    ).with_options(gate=gate)
    moved = fitted(source)
    assert moved.device == source.device and moved.dtype == source.dtype
    torch.testing.assert_close(moved.cpu(), on_cpu(source.cpu()), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_a_hook_moves_a_cpu_map_once_and_keeps_the_activation_dtype(device: str) -> None:
    source, target = _classes("cpu")
    fitted = tlo.GaussianOTMap.fit(source[0], target[0], n_components=4)
    hook = tlo.as_hook(fitted)
    resid = source[0, :6].reshape(2, 3, -1).to(device=device, dtype=torch.bfloat16)
    out = hook(resid, hook=None)
    assert out.device == resid.device and out.dtype == torch.bfloat16
    assert list(hook._placed) == [resid.device]
    torch.testing.assert_close(
        out.float().cpu(), fitted(resid.float().cpu()).bfloat16().float(), rtol=0.02, atol=0.05
    )


@pytest.mark.parametrize("device", DEVICES)
def test_model_level_fit_and_hooks_on_the_device(device: str) -> None:
    model = tiny_model("qwen2", n_layers=3, d_model=32).to(device)
    stats = tlo.collect_stats(
        model,
        HARMFUL,
        "blocks.1.hook_resid_pre",
        QUIET,
    )
    assert stats["blocks.1.hook_resid_pre"].device.type == torch.device(device).type
    fitted = tlo.fit_ot_ablation(
        model,
        HARMFUL,
        HARMLESS,
        layers=[1],
        spec=dataclasses.replace(tlo.RECOMMENDED_MAP, n_components=4, gate="posterior"),
        collect=QUIET,
    )
    tokens = model.to_tokens("hello there", prepend_bos=False).to(device)
    logits = model.run_with_hooks(tokens, fwd_hooks=fitted.fwd_hooks())
    assert logits.device.type == torch.device(device).type
    assert bool(torch.isfinite(logits).all())
