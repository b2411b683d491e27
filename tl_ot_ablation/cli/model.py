"""The model a command runs on, from ``--model``, ``--dtype`` and ``--device``.

One place so the tests can stop a command at the model load (``entry`` looks
``load_model_for`` up here at call time).

``--model tiny`` is a product feature, not a test hook: a random-weight chat model built
offline in well under a second (``lens.tiny.tiny_model``, the same documented builder the
tests and ``docs/models.md`` use), so that every command can be tried end to end with no
download and no GPU (README: ``tl-ot-ablation compare --quick --model tiny``). It is imported
only when asked for.
"""

import argparse
from typing import Any, Literal

import torch

from ..lens.models import load_model

DTYPES: dict[str, torch.dtype | Literal["auto"]] = {
    "auto": "auto",
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
TINY = "tiny"
"""``--model tiny``: the offline random-weight smoke-test model."""


def load_model_for(args: argparse.Namespace) -> Any:
    """The ``TransformerBridge`` named by ``args.model`` (``TINY``: the tiny offline model)."""
    if args.model == TINY:
        from ..lens.tiny import tiny_model

        return tiny_model(n_ctx=512)
    return load_model(args.model, device=args.device, dtype=DTYPES[args.dtype])
