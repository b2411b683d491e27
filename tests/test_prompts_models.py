"""Prompt files, chat formatting, and locating / verifying the embedded model's parts."""

import hashlib
import json
import sys
from pathlib import Path

import pytest

from tl_ot_ablation import (
    default_prompts,
    format_chat,
    load_prompts,
    post_instruction_length,
)
from tl_ot_ablation.lens import model_cache, models
from tl_ot_ablation.lens.testing import tiny_tokenizer


def test_shipped_prompt_sets_are_disjoint_splits() -> None:
    sizes = {"train": 256, "validation": 64, "eval": 32}
    seen: set[str] = set()
    for kind in ("harmful", "harmless"):
        for split, size in sizes.items():
            prompts = default_prompts(kind, split)  # type: ignore[arg-type]
            normalised = {p.strip().lower() for p in prompts}
            assert len(prompts) == len(normalised) == size, (kind, split)
            assert not normalised & seen, (kind, split)
            seen |= normalised
    assert default_prompts("harmful") == default_prompts("harmful", "train")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("p.json", json.dumps(["a b", "c"])),
        ("p.json", json.dumps([{"instruction": "a b", "category": None}, {"instruction": "c"}])),
        ("p.csv", "instruction,other\na b,1\nc,2\n"),
        ("p.txt", "a b\n\nc\n"),
    ],
)
def test_load_prompts_formats(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert load_prompts(path) == ["a b", "c"]


def test_load_prompts_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "missing.json")
    (tmp_path / "bad.csv").write_text("prompt\nx\n")
    with pytest.raises(ValueError, match="no column 'instruction'"):
        load_prompts(tmp_path / "bad.csv")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="holds no prompts"):
        load_prompts(tmp_path / "empty.json")
    (tmp_path / "blank.json").write_text('["ok", ""]')
    with pytest.raises(ValueError, match="not non-empty strings"):
        load_prompts(tmp_path / "blank.json")


def test_chat_formatting_and_post_instruction_span() -> None:
    tokenizer = tiny_tokenizer()
    [text] = format_chat(tokenizer, ["hi"], system="be brief")
    assert (
        text == "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    suffix = "<|im_end|>\n<|im_start|>assistant\n"
    assert post_instruction_length(tokenizer) == len(
        tokenizer(suffix, add_special_tokens=False)["input_ids"]
    )


def _fake_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunks: list[bytes], sha: str
) -> str:
    """Install importable-looking fake part packages and register a fake embedded model."""
    for i, chunk in enumerate(chunks, start=1):
        data = tmp_path / "site" / f"fakepart_x{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("raise RuntimeError('never import me')\n")
        (data / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fake = model_cache.EmbeddedModel("fake", "fake/hub", "fakepart-x", len(chunks), sha, "models")
    monkeypatch.setitem(model_cache.EMBEDDED_MODELS, "fake", fake)
    monkeypatch.setenv("TL_OT_ABLATION_CACHE", str(tmp_path / "cache"))
    return "fake"


def test_parts_are_joined_in_order_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [b"first-", b"second-", b"third"]
    name = _fake_parts(tmp_path, monkeypatch, chunks, hashlib.sha256(b"".join(chunks)).hexdigest())
    path = model_cache.embedded_gguf_path(name)
    assert path.read_bytes() == b"first-second-third"
    assert "fakepart_x1" not in sys.modules  # located, never imported
    assert model_cache.embedded_gguf_path(name) == path  # cached


def test_corrupt_part_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _fake_parts(tmp_path, monkeypatch, [b"a", b"b"], "0" * 64)
    with pytest.raises(ValueError, match=r"a part is corrupt.*pip install --force-reinstall"):
        model_cache.embedded_gguf_path(name)
    assert not list((tmp_path / "cache").glob("*.gguf"))


def test_missing_part_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = model_cache.EmbeddedModel("gone", "x/y", "no-such-pkg-part", 2, "0" * 64, "models")
    monkeypatch.setitem(model_cache.EMBEDDED_MODELS, "gone", fake)
    with pytest.raises(
        FileNotFoundError, match=r"no-such-pkg-part1 is not installed.*tl-ot-ablation\[models\]"
    ):
        model_cache.embedded_gguf_path("gone")


def test_unknown_embedded_model() -> None:
    with pytest.raises(ValueError, match="unknown embedded model"):
        model_cache.embedded_gguf_path("llama-9000")


def test_load_model_from_a_local_folder(tmp_path: Path) -> None:
    import torch

    from tl_ot_ablation.lens.testing import tiny_hf_model, tiny_model

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
    import torch
    from transformers import AutoModelForCausalLM

    from tl_ot_ablation.lens.testing import tiny_hf_model

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
    import torch

    from tl_ot_ablation.lens.testing import tiny_hf_model

    monkeypatch.setattr(models, "cpu_has_native_bfloat16", lambda: native)
    assert models.auto_dtype("cpu") == getattr(torch, expected)
    hf_model, tokenizer = tiny_hf_model(seed=5)
    hf_model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    loaded = models.load_model(str(tmp_path / "tiny"), device="cpu")  # dtype="auto"
    assert loaded.cfg.dtype == getattr(torch, expected)
    assert next(loaded.original_model.parameters()).dtype == getattr(torch, expected)


def test_auto_dtype_on_cuda_follows_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    for supported, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert models.auto_dtype("cuda:0") == expected
