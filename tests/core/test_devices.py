"""Device names (``core.devices``): parsed, resolved and refused with the devices there are."""

import pytest
import torch

from tl_ot_ablation.core.devices import resolve_device


def test_a_missing_cuda_index_names_the_devices_there_are(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"2 CUDA devices.*cpu, cuda:0, cuda:1.*device='cuda:0'"):
        resolve_device("cuda:3")


def test_resolve_device_parses_and_picks_like_load_model(no_accelerator) -> None:
    assert resolve_device(None) == torch.device("cpu")  # auto: CUDA if available, else CPU
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'nonsense' is not a device.*e\.g\. cpu, cuda"):
        resolve_device("nonsense")
    with pytest.raises(ValueError, match=r"no CUDA.*available here: cpu; use device='cpu'"):
        resolve_device(torch.device("cuda"))
