"""Load a chat model as a TransformerLens 4.x ``TransformerBridge``.

``load_model`` accepts a Hugging Face hub name, a local model folder, a local ``.gguf`` file, or
one of the embedded models, whose files come from the checked cache (``model_cache``): the
de-quantised copy is loaded when it matches its checksum record, else the GGUF is de-quantised
again (about a minute) and the copy written atomically with a new record. ``auto_dtype`` picks
the weight dtype the hardware computes fastest, and ``bridge_from_hf`` wraps a loaded Hugging
Face model (left padding, no extra BOS).
"""

from pathlib import Path
from typing import Any, Literal

import torch

from ..core.devices import resolve_device
from ..core.errors import UserInputError
from ..io import atomic
from .model_cache import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    cache_dir,
    embedded_gguf_path,
    remove_orphan_partials,
    trusted_cache,
    write_checksums,
)


def _load_hf(name_or_path: str, dtype: torch.dtype, **placement: Any) -> tuple[Any, Any, str]:
    """``(hf_model, tokenizer, model_name)`` for an embedded name, GGUF file, folder or hub name.

    ``placement`` (``device_map``, ``max_memory``) goes to ``from_pretrained``: TransformerLens
    dispatches only models it loads itself, so a pre-loaded model must arrive dispatched.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[name_or_path]
        remove_orphan_partials()
        # De-quantising the GGUF takes about a minute on a small CPU: keep a safetensors copy.
        dtype_name = str(dtype).removeprefix("torch.")
        converted = cache_dir() / f"{embedded.name}-{embedded.sha256[:12]}-{dtype_name}"
        if trusted_cache(converted):
            tokenizer = AutoTokenizer.from_pretrained(converted)
            hf_model = AutoModelForCausalLM.from_pretrained(
                converted, dtype=dtype, attn_implementation="eager", **placement
            )
            return hf_model.eval(), tokenizer, embedded.hub_name
        gguf = embedded_gguf_path(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=dtype, attn_implementation="eager"
        )
        # The de-quantised weights are plain tensors; drop the GGUF marker so they can be saved.
        hf_model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        with atomic.entry(converted) as partial:
            hf_model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            write_checksums(partial)
        if placement:  # dispatch from the saved copy
            return _load_hf(name_or_path, dtype, **placement)
        return hf_model.eval(), tokenizer, embedded.hub_name
    elif name_or_path.endswith(".gguf"):
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        folder, file_name, model_name = str(path.parent), path.name, path.stem
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        hf_model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=dtype, attn_implementation="eager", **placement
        )
        return hf_model.eval(), tokenizer, name_or_path
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    hf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file_name, dtype=dtype, attn_implementation="eager", **placement
    )
    return hf_model.eval(), tokenizer, model_name


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX, through oneDNN)."""
    try:  # torch's own query (no public equivalent); not a private name of this package
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def auto_dtype(device: torch.device | str | None) -> torch.dtype:
    """The weight dtype ``load_model(dtype="auto")`` picks for ``device``.

    bfloat16 where the hardware computes it natively (CUDA with bf16 support, CPUs with
    AVX512-BF16 or AMX), float16 on older GPUs, float32 on other CPUs: there bfloat16 matmuls
    are emulated, and the embedded 1.5B model generated about 3.5x slower in bfloat16 than in
    float32 on a 2-core AVX2 CPU (``benchmarks/bench_dtype.py``), for twice the memory.
    """
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu":
        return torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32
    return torch.bfloat16


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | Literal["auto"] = "auto",
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    **bridge_kwargs: Any,
) -> Any:
    """Load a causal LM as a ``TransformerBridge`` in eval mode, ready for hooks.

    Args:
        name_or_path: An embedded model name (see ``EMBEDDED_MODELS``), a local ``.gguf`` file,
            a local model folder, or a Hugging Face hub name.
        device: Where to put the model (default: CUDA if available, else CPU).
        dtype: Weight dtype; ``"auto"`` (the default, ``auto_dtype``) is bfloat16 where the
            hardware computes it natively, else float32 (faster on CPUs without bf16
            instructions, for twice the memory: pass ``torch.bfloat16`` to halve it).
        device_map: Spread the model over devices with accelerate (``"auto"``,
            ``"balanced"``, or a module-to-device dict), e.g. a 70B model over several GPUs;
            each layer's hooks, statistics and maps then live on that layer's device.
        max_memory: Per-device memory caps for ``device_map`` (accelerate's format).
        **bridge_kwargs: Passed to ``TransformerBridge.boot_transformers``.

    Returns:
        The ``TransformerBridge``; its tokenizer pads on the left.
    """
    if device is not None:  # an unusable device fails here, not after the weights load
        resolve_device(device)
    placement = {
        key: value
        for key, value in (("device_map", device_map), ("max_memory", max_memory))
        if value is not None
    }
    if placement and device is not None:
        raise UserInputError("pass either device or device_map (with max_memory), not both")
    if {"n_devices", "device_map", "max_memory"} & set(bridge_kwargs):
        raise UserInputError(
            "TransformerLens dispatches only models it loads itself; pass device_map= (and "
            "max_memory=) to load_model instead, e.g. device_map='balanced' for several GPUs"
        )
    if device is None and not placement:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        # With a device_map, the model goes where accelerate puts it: the GPUs when present.
        dtype = auto_dtype(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    hf_model, tokenizer, model_name = _load_hf(name_or_path, dtype, **placement)
    return bridge_from_hf(
        hf_model, tokenizer, model_name, device=device, dtype=dtype, **bridge_kwargs
    )


def bridge_from_hf(
    hf_model: Any,
    tokenizer: Any,
    model_name: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **bridge_kwargs: Any,
) -> Any:
    """Wrap an already-loaded HF causal LM (and tokenizer) as a ``TransformerBridge``.

    Note that booting rewires ``hf_model`` in place (TransformerLens 4.3): afterwards its own
    ``generate`` runs the hooked code too.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(hf_model.config, "architectures", None):
        # A model built from a config (not loaded from a checkpoint) has no `architectures`,
        # and TransformerLens 4.3's fallback from `model_type` lacks some types (gemma3_text):
        # record the class, as save_pretrained would.
        hf_model.config.architectures = [type(hf_model).__name__]
    if device is not None:
        hf_model = hf_model.to(device)
    bridge = TransformerBridge.boot_transformers(
        model_name,
        hf_model=hf_model,
        tokenizer=tokenizer,
        dtype=dtype or next(hf_model.parameters()).dtype,
        **bridge_kwargs,
    )
    # Chat templates carry their own start tokens: never prepend another BOS.
    bridge.cfg.default_prepend_bos = False
    return bridge.eval()
