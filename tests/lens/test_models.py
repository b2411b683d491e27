"""Loading a model (``lens.models``): from a local folder, with a device map, the automatic
dtype, and an unavailable device refused before loading."""

from pathlib import Path

import pytest
import torch

from tl_ot_ablation.lens import models


def test_load_model_from_a_local_folder(tmp_path: Path) -> None:

    from tl_ot_ablation.lens.tiny import tiny_hf_model, tiny_model

    hf_model, tokenizer = tiny_hf_model(seed=5)
    hf_model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    source = tiny_model(seed=5)
    loaded = models.load_model(str(tmp_path / "tiny"), device="cpu", dtype=torch.float32)
    ids = source.tokenizer(["hello"], return_tensors="pt")["input_ids"]
    torch.testing.assert_close(loaded(ids), source(ids))
    assert loaded.tokenizer.padding_side == "left" and loaded.cfg.default_prepend_bos is False


def test_load_model_dispatches_with_a_device_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    from tl_ot_ablation.lens.tiny import tiny_hf_model

    hf_model, tokenizer = tiny_hf_model(seed=5)
    hf_model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    folder = str(tmp_path / "tiny")
    calls = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    # accelerate places every module by the map (here all on the CPU) before the bridge boots.
    placement = {"device_map": {"": "cpu"}, "max_memory": {"cpu": "2GiB"}}
    loaded = models.load_model(folder, dtype=torch.float32, **placement)
    assert calls and all(calls[-1][key] == value for key, value in placement.items())
    ids = loaded.tokenizer(["hello"], return_tensors="pt")["input_ids"]
    assert torch.isfinite(loaded(ids)).all()
    with pytest.raises(ValueError, match="either device or device_map"):
        models.load_model(folder, device="cpu", device_map="auto")
    with pytest.raises(ValueError, match=r"pass device_map= .* to load_model"):
        models.load_model(folder, n_devices=2)


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_dtype_on_a_cpu_follows_its_bfloat16_support(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:

    from tl_ot_ablation.lens.tiny import tiny_hf_model

    monkeypatch.setattr(models, "cpu_has_native_bfloat16", lambda: native)
    assert models.auto_dtype("cpu") == getattr(torch, expected)
    hf_model, tokenizer = tiny_hf_model(seed=5)
    hf_model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    loaded = models.load_model(str(tmp_path / "tiny"), device="cpu")  # dtype="auto"
    assert loaded.cfg.dtype == getattr(torch, expected)
    assert next(loaded.original_model.parameters()).dtype == getattr(torch, expected)


def test_auto_dtype_on_cuda_follows_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:

    for supported, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert models.auto_dtype("cuda:0") == expected


def test_load_model_refuses_an_unavailable_device_before_loading(
    no_accelerator, monkeypatch
) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded before the device was checked")

    monkeypatch.setattr(models, "_load_hf", refuse)
    with pytest.raises(ValueError, match=r"device 'cuda'.*use device='cpu'"):
        models.load_model("any/model", device="cuda")
